"""The `ldap` plugin: OpenLDAP 2.4 -> 2.5 -> 2.6 and back, by dump and reload.

OpenLDAP's on-disk formats are not upgraded in place across these versions (2.5 removed
back-hdb/bdb; Debian's maintainer scripts dump with the old slapd and reload with the new), so
every step is: `slapcat` the config (`-n 0`) and every database with the binaries of the version
the data is at (the backup, beside exact copies of the config and data directories), rewrite the
config for the target (ldif.py: hdb/bdb -> mdb with a map size, module paths, ppolicy's schema),
`slapadd` it all with the target's binaries into staging directories, `slaptest`, and rename the
staging directories into place last. Downgrades reload the data as it is now into the config the
older version had before the upgrade (kept in the state directory), so writes made since are kept.

slapd.conf: when `config_file` is set and `config_dir` holds no cn=config yet, the step converts
(`slaptest -f ... -F ...` with the old binaries) and the result lives in `config_dir`.

The version that wrote the data is recorded beside it (`data_dir/.nixos-migrate-openldap-version`)
after every step; before the first one, hdb/bdb databases mean 2.4, and mdb data needs the
journal or `initial_version` (the installed slapd says nothing about the data).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import file_digest, tree_size
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Direction, Step
from nixos_migrate_ldap import ldif, slapd
from nixos_migrate_ldap.settings import LdapSettings

MARKER = ".nixos-migrate-openldap-version"
OLD_BACKENDS = {"hdb", "bdb"}


def _settings(service: Service) -> LdapSettings:
    return service.settings  # type: ignore[no-any-return]


def _prefix(s: LdapSettings, version: str) -> Path:
    if version not in s.packages:
        raise MigrateError(
            f"no OpenLDAP {version} in settings.packages (have {', '.join(sorted(s.packages)) or 'none'})",
            hint=f"add {version!r} = <openldap {version} prefix> to settings.packages",
        )
    return s.packages[version]


def _has_cn_config(s: LdapSettings) -> bool:
    return s.config_dir is not None and (s.config_dir / "cn=config.ldif").is_file()


def _config_args(s: LdapSettings) -> list[str | Path]:
    """How slap* tools find the config as it is now."""
    if _has_cn_config(s) and s.config_dir is not None:
        return ["-F", s.config_dir]
    if s.config_file is not None and s.config_file.is_file():
        return ["-f", s.config_file]
    raise MigrateError(f"no OpenLDAP configuration in {s.config_dir or s.config_file}")


def _conf_directives(s: LdapSettings) -> list[tuple[str, str]]:
    """(directive, value) of each line of slapd.conf, value unquoted; none without one."""
    if s.config_file is None or not s.config_file.is_file():
        return []
    pairs = []
    for raw in s.config_file.read_text(errors="replace").splitlines():
        words = raw.split(None, 1)
        if len(words) == 2 and not words[0].startswith("#"):
            pairs.append((words[0], words[1].strip().strip('"')))
    return pairs


def _offline_databases(s: LdapSettings) -> list[ldif.Database]:
    """The databases of the config as it is now, read from its files without any slapd."""
    if _has_cn_config(s) and s.config_dir is not None:
        files = sorted((s.config_dir / "cn=config").glob("olcDatabase=*.ldif"))
        return ldif.databases([e for path in files for e in ldif.parse(path.read_text(errors="replace"))])
    found: list[ldif.Database] = []
    for key, value in _conf_directives(s):
        if key == "database":
            found.append(ldif.Database("", str(len(found) + 1), value, None, None))
        elif key in ("suffix", "directory") and found and found[-1].backend not in ("frontend", "config", "monitor"):
            last = found[-1]
            found[-1] = ldif.Database(
                "", last.index, last.backend, value if key == "suffix" else last.suffix,
                value if key == "directory" else last.directory,
            )  # fmt: skip
    return [db for db in found if db.backend not in ("frontend", "config", "monitor")]


def _running_slapd(s: LdapSettings) -> int | None:
    """The pid in the pid file the config names (olcPidFile / pidfile), if that process lives."""
    pidfile: str | None = None
    if _has_cn_config(s) and s.config_dir is not None:
        pidfile = ldif.parse((s.config_dir / "cn=config.ldif").read_text(errors="replace"))[0].first("olcPidFile")
    else:
        pidfile = next((value for key, value in _conf_directives(s) if key == "pidfile"), None)
    try:
        pid = int(Path(pidfile).read_text().split()[0]) if pidfile else None
    except (OSError, ValueError, IndexError):
        return None
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def _has_data(s: LdapSettings) -> bool:
    return s.data_dir.is_dir() and any(p.name != MARKER for p in s.data_dir.iterdir())


def _has_config(s: LdapSettings) -> bool:
    return _has_cn_config(s) or (s.config_file is not None and s.config_file.is_file())


@hookimpl
def settings_model() -> type[LdapSettings]:
    return LdapSettings


@hookimpl
def detect_version(service: Service) -> str | None:
    s = _settings(service)
    if not _has_config(s) or not _has_data(s):
        return None
    old = {db.backend for db in _offline_databases(s)} & OLD_BACKENDS
    marker = s.data_dir / MARKER
    recorded = marker.read_text().strip() if marker.is_file() else None
    if recorded is not None:
        if old and ldif.version_key(recorded) >= (2, 5):
            raise MigrateError(
                f"{marker} says OpenLDAP {recorded}, but the config has {', '.join(sorted(old))} databases,"
                " which only 2.4 has"
            )
        return recorded
    if old:
        return "2.4"
    version = service.journal_version or s.initial_version
    if version is None:
        raise MigrateError(
            f"cannot tell which OpenLDAP version wrote the mdb data in {s.data_dir}",
            hint="set settings.initial_version (e.g. '2.5'); later steps record it beside the data",
        )
    return version


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    if current is None or current == target:
        return []
    s = _settings(service)
    key = ldif.version_key
    versions = sorted({*s.packages, current, target}, key=key)
    low, high = sorted((current, target), key=key)
    path = [v for v in versions if key(low) <= key(v) <= key(high)]
    direction: Direction = "up" if key(target) > key(current) else "down"
    if direction == "down":
        path.reverse()
    steps = []
    for a, b in itertools.pairwise(path):
        what = f"slapcat with OpenLDAP {a}, slapadd with {b}"
        if direction == "up" and key(b) >= (2, 5) and key(a) < (2, 5):
            what += " (hdb/bdb databases become mdb)"
        steps.append(Step(a, b, direction, what))
    return steps


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    s = _settings(service)
    checks: list[Check] = []
    missing = []
    for version in (step.from_version or "", step.to_version):
        try:
            prefix = _prefix(s, version)
            for name in slapd.TOOLS:
                slapd.tool(prefix, name)
        except MigrateError as exc:
            missing.append(exc.message)
    checks.append(Check("binaries of both versions", not missing, "; ".join(missing)))
    if s.config_dir is None:
        checks.append(
            Check("config_dir set", False, "the new configuration is written as cn=config: set settings.config_dir")
        )
    if missing or s.config_dir is None:
        return checks
    directories = [db.directory for db in _offline_databases(s) if db.directory]
    outside = [d for d in directories if not Path(d).resolve().is_relative_to(s.data_dir.resolve())]
    checks.append(
        Check("database directories inside data_dir", not outside, ", ".join(outside) + f" outside {s.data_dir}")
    )
    size = tree_size(s.data_dir)
    need = 3 * size + (64 << 20)  # the LDIF, the new database, and room to spare
    free = shutil.disk_usage(s.data_dir.parent).free
    checks.append(Check("room for the dump and the new database", free >= need, f"{free >> 20} MiB free"))
    unit = service.control.unit
    if unit and service.control.is_active():
        checks.append(Check("slapd stopped before the step", True, f"{unit} runs now; `up` stops it first"))
        return checks
    pid = _running_slapd(s)
    checks.append(Check("slapd not running", pid is None, f"pid {pid} (its pid file); stop it or set `unit`"))
    if outside or free < need or pid is not None:
        return checks
    if detect_version(service) != step.from_version:
        # a later step of a plan: its config exists only after the step before it, whose reload
        # builds and tests it in staging before anything is replaced
        checks.append(Check(f"OpenLDAP {step.to_version} accepts the rewritten config", True, "checked in staging"))
        return checks
    checks.append(_dry_run(service, step))
    return checks


def _dry_run(service: Service, step: Step) -> Check:
    """The target's slapadd and slaptest accept the rewritten config (in a scratch directory)."""
    s = _settings(service)
    scratch = service.state_dir / "check"
    shutil.rmtree(scratch, ignore_errors=True)
    service.private_dir(scratch)
    try:
        _dump_config(service, _prefix(s, step.from_version or ""), scratch / "config.ldif", scratch)
        config = _config_for(service, step, scratch / "config.ldif")
        new = _prefix(s, step.to_version)
        how = _rewrite_for(s, step, {d.directory: str(scratch / "db") for d in ldif.databases(config) if d.directory})
        service.private_dir(scratch / "db")  # slapadd -n 0 wants the database directories to exist
        _build_config(service, new, ldif.rewrite(config, how), scratch / "slapd.d", scratch / "target.ldif")
        service.run.run([slapd.tool(new, "slaptest"), "-u", "-F", scratch / "slapd.d"])
        return Check(f"OpenLDAP {step.to_version} accepts the rewritten config", True, "; ".join(how.changes))
    except MigrateError as exc:
        return Check(f"OpenLDAP {step.to_version} accepts the rewritten config", False, exc.message[-800:])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _dump_config(service: Service, prefix: Path, out: Path, work: Path) -> list[ldif.Entry]:
    """`slapcat -n 0` of the config as it is now (slapd.conf converted first, in `work`)."""
    s = _settings(service)
    args = _config_args(s)
    if args[0] == "-f":
        converted = service.private_dir(work / "converted.d")
        # slaptest writes slapd.d even when it complains about database files; slapcat judges
        service.run.run([slapd.tool(prefix, "slaptest"), *args, "-F", converted], check=False)
        args = ["-F", converted]
    service.run.run([slapd.tool(prefix, "slapcat"), *args, "-n", "0", "-l", out])
    return ldif.parse(out.read_text())


def _rewrite_for(s: LdapSettings, step: Step, directories: dict[str, str]) -> ldif.Rewrite:
    prefix = _prefix(s, step.to_version)
    modules = slapd.module_dir(prefix)
    schema = slapd.schema_file(prefix, "ppolicy.ldif")
    return ldif.Rewrite(
        step.to_version,
        str(modules) if modules else None,
        directories,
        s.max_size,
        ldif.parse(schema.read_text()) if schema else None,
    )


def _config_for(service: Service, step: Step, current: Path) -> list[ldif.Entry]:
    """The config a step starts from: for a downgrade, the one the older version had before the
    upgrade (kept in the state directory), else the current one (`current`, a slapcat -n 0)."""
    saved = service.state_dir / "configs" / f"{step.to_version}.ldif"
    source = saved if step.direction == "down" and saved.is_file() else current
    return ldif.parse(source.read_text())


def _build_config(service: Service, prefix: Path, config: list[ldif.Entry], dest: Path, text_file: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    service.private_dir(dest)
    text_file.write_text(ldif.write(config))
    if os.geteuid() == 0:
        os.chown(text_file, service.run.identity.uid, service.run.identity.gid)
    service.run.run([slapd.tool(prefix, "slapadd"), "-n", "0", "-F", dest, "-l", text_file])


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    s = _settings(service)
    paths = [p for p in (s.config_dir, s.config_file, s.data_dir) if p is not None and p.exists()]
    return filebackup.estimate(paths) + tree_size(s.data_dir)  # the LDIF is about the data's size


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    s = _settings(service)
    old = _prefix(s, step.from_version or "")
    # the files first: opening a BDB environment (slapcat of hdb) rewrites its region files
    files = service.private_dir(dest / "files")
    paths = [p for p in (s.config_dir, s.config_file, s.data_dir) if p is not None]
    info = filebackup.backup_paths(paths, files, service.run, service.progress)
    dumps = service.private_dir(dest / "ldif")
    config = _dump_config(service, old, dumps / "config.ldif", dumps)
    suffixes: dict[str, dict[str, Any]] = {}
    dbs = ldif.databases(config)
    with service.progress.task(f"slapcat with OpenLDAP {step.from_version}", total=len(dbs)) as t:
        for db in dbs:
            if db.suffix is None:
                continue
            out = dumps / f"db-{db.index}.ldif"
            service.run.run([slapd.tool(old, "slapcat"), *_config_args_for_dump(s, dumps), "-b", db.suffix, "-l", out])
            entries = ldif.parse(out.read_text())
            suffixes[db.suffix] = {
                "file": out.name,
                "index": db.index,
                "count": len(entries),
                "digest": ldif.digest(entries),
                "sha256": file_digest(out),
            }
            t.advance()
    detail = {
        **info.detail,
        "version": step.from_version,
        "ldif": str(dumps),
        "config_sha256": file_digest(dumps / "config.ldif"),
        "suffixes": suffixes,
    }
    (service.state_dir / "expected.json").write_text(json.dumps(suffixes))
    (service.state_dir / "pending.json").write_text(json.dumps({"ldif": str(dumps), "step": step.label}))
    if step.direction == "up":
        # the config this version had: a later downgrade to it reloads into this one
        saved = service.state_dir / "configs"
        saved.mkdir(exist_ok=True)
        shutil.copyfile(dumps / "config.ldif", saved / f"{step.from_version}.ldif")
    return BackupInfo(info.kind, dest, info.size + tree_size(dumps), info.checksum, detail)


def _config_args_for_dump(s: LdapSettings, dumps: Path) -> list[str | Path]:
    """The config as the tools read it; a converted slapd.conf from `_dump_config` if there is one."""
    converted = dumps / "converted.d"
    return ["-F", converted] if converted.is_dir() and not _has_cn_config(s) else _config_args(s)


def _pending_ldif(service: Service) -> Path:
    pending = service.state_dir / "pending.json"
    if not pending.is_file():
        raise MigrateError(f"{service.name}: no LDIF dump of this step was recorded; back up first")
    return Path(json.loads(pending.read_text())["ldif"])


def _staging(path: Path, what: str) -> Path:
    return path.parent / f".{path.name}.nixos-migrate-{what}"


@hookimpl
def up(service: Service, step: Step) -> bool:
    dumps = _pending_ldif(service)
    _reload(service, step, dumps, _config_for(service, step, dumps / "config.ldif"))
    return True


@hookimpl
def down(service: Service, step: Step) -> bool:
    dumps = _pending_ldif(service)
    _reload(service, step, dumps, _config_for(service, step, dumps / "config.ldif"))
    return True


def _reload(service: Service, step: Step, dumps: Path, config: list[ldif.Entry]) -> None:
    s = _settings(service)
    if s.config_dir is None:
        raise MigrateError("settings.config_dir is needed to write the new configuration")
    new = _prefix(s, step.to_version)
    suffixes: dict[str, dict[str, Any]] = json.loads((service.state_dir / "expected.json").read_text())
    stage_data = _staging(s.data_dir, "staging")
    stage_config = _staging(s.config_dir, "staging")
    load_config = service.state_dir / "load.d"
    for path in (stage_data, stage_config, load_config):
        shutil.rmtree(path, ignore_errors=True)
    service.private_dir(stage_data)
    data_root = s.data_dir.resolve()

    def staged(directory: str) -> str:
        return str(stage_data / Path(directory).resolve().relative_to(data_root))

    directories = {d.directory: staged(d.directory) for d in ldif.databases(config) if d.directory}
    how = _rewrite_for(s, step, directories)
    loading = ldif.rewrite(config, how)
    for directory in directories.values():
        service.private_dir(Path(directory))  # slapadd -n 0 wants the database directories to exist
    with service.progress.task(f"slapadd with OpenLDAP {step.to_version}", total=len(suffixes) + 1) as task:
        _build_config(service, new, loading, load_config, service.state_dir / "load-config.ldif")
        task.advance()
        for db in ldif.databases(loading):
            if db.suffix is None or db.directory is None:
                continue
            dump = suffixes.get(db.suffix)
            if dump is None:
                raise MigrateError(f"no dump of {db.suffix} in {dumps}: the configs before and after disagree")
            service.private_dir(Path(db.directory))
            service.run.run([slapd.tool(new, "slapadd"), "-q", "-F", load_config, "-b", db.suffix,
                             "-l", dumps / dump["file"]])  # fmt: skip
            task.advance()
    service.run.run([slapd.tool(new, "slaptest"), "-F", load_config])
    final = ldif.rewrite(config, _rewrite_for(s, step, {}))
    _build_config(service, new, final, stage_config, service.state_dir / "config.ldif")
    service.run.run([slapd.tool(new, "slaptest"), "-u", "-F", stage_config])
    (stage_data / MARKER).write_text(step.to_version + "\n")
    _commit(service, [(s.config_dir, stage_config), (s.data_dir, stage_data)])
    shutil.rmtree(load_config, ignore_errors=True)


def _commit(service: Service, pairs: list[tuple[Path, Path]]) -> None:
    """Rename each staged directory into place; the old ones are in the backup."""
    for live, staged in pairs:
        replaced = _staging(live, "replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        if live.exists():
            live.rename(replaced)
        staged.rename(live)
        shutil.rmtree(replaced, ignore_errors=True)


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    s = _settings(service)
    for base in (s.config_dir, s.data_dir):
        if base is not None:
            for what in ("staging", "replaced"):
                shutil.rmtree(_staging(base, what), ignore_errors=True)
    shutil.rmtree(service.state_dir / "load.d", ignore_errors=True)
    filebackup.restore_paths(backup, service.run, service.progress)
    (service.state_dir / "expected.json").write_text(json.dumps(backup.detail.get("suffixes", {})))
    return True


def _password(s: LdapSettings) -> str | None:
    if s.bind_password_file is None:
        return None
    try:
        return s.bind_password_file.read_text().rstrip("\n")
    except OSError as exc:
        raise MigrateError(f"cannot read bind_password_file {s.bind_password_file}: {exc.strerror}") from None


def _count(s: LdapSettings, suffixes: list[str]) -> dict[str, int]:
    # imported here: every nixos-migrate run loads every plugin, and ldap3 takes a quarter second
    import ldap3

    server = ldap3.Server("127.0.0.1", port=s.port, get_info=ldap3.NONE, connect_timeout=10)
    conn = ldap3.Connection(server, user=s.bind_dn, password=_password(s), auto_bind=False, receive_timeout=60)
    try:
        if not conn.bind():
            raise MigrateError(f"bind as {s.bind_dn or 'anonymous'} failed: {conn.result.get('description')}")
        counts = {}
        for suffix in suffixes:
            entries = conn.extend.standard.paged_search(
                suffix, "(objectClass=*)", ldap3.SUBTREE, attributes=["1.1"], paged_size=1000, generator=True
            )
            counts[suffix] = sum(1 for e in entries if e.get("type") == "searchResEntry")
        return counts
    finally:
        conn.unbind()


@hookimpl
def verify(service: Service) -> list[Check]:
    s = _settings(service)
    if not _has_config(s):
        return [Check("configuration present", False, f"no cn=config in {s.config_dir}, no {s.config_file}")]
    version = detect_version(service)
    if version is None:
        return [Check("data present", False, f"no data in {s.data_dir}")]
    prefix = _prefix(s, version)
    expected: dict[str, dict[str, Any]] = {}
    if service.step is not None and (service.state_dir / "expected.json").is_file():
        expected = json.loads((service.state_dir / "expected.json").read_text())
    config = _config_args(s)
    suffixes = s.suffixes or [db.suffix for db in _offline_databases(s) if db.suffix]
    checks = [Check("configuration present", True, f"OpenLDAP {version}, {' '.join(map(str, config))}")]
    try:
        with slapd.running(service, prefix, config, s.port):
            checks.append(Check("slapd starts", True, f"127.0.0.1:{s.port}"))
            for suffix, n in _count(s, suffixes).items():
                want = expected.get(suffix, {}).get("count")
                ok = want is None or want == n
                checks.append(Check(f"entries under {suffix}", ok, f"{n}" + ("" if ok else f", expected {want}")))
            if expected:
                checks += _compare_dumps(service, prefix, expected)
    except MigrateError as exc:
        checks.append(Check("slapd starts and answers", False, exc.message))
    return checks


def _compare_dumps(service: Service, prefix: Path, expected: dict[str, dict[str, Any]]) -> list[Check]:
    """slapcat of every database equals the dump before the step, entryUUID and CSNs included."""
    s = _settings(service)
    work = service.private_dir(service.state_dir / "verify")
    problems = []
    try:
        for suffix, want in expected.items():
            out = work / f"{want['index']}.ldif"
            service.run.run([slapd.tool(prefix, "slapcat"), *_config_args(s), "-b", suffix, "-l", out])
            entries = ldif.parse(out.read_text())
            if ldif.digest(entries) != want["digest"]:
                problems.append(f"{suffix}: {len(entries)} entries differ from the {want['count']} dumped before")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    detail = "; ".join(problems) or f"{len(expected)} database(s), {sum(w['count'] for w in expected.values())} entries"
    return [Check("slapcat equals the LDIF before the step", not problems, detail)]
