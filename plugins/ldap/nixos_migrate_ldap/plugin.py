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
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import file_digest, tree_size
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.lazy import lazy_module
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Direction, Step
from nixos_migrate_ldap import installation, ldif
from nixos_migrate_ldap.settings import LdapSettings

# what only a step or verify runs with (ldap3, slapd's command lines) is imported when it runs:
# `status` and `plan` read the data directory with installation and ldif alone
if TYPE_CHECKING:
    from nixos_migrate_ldap import checking, cnconfig, reload, slapd
else:
    checking = lazy_module("nixos_migrate_ldap.checking")
    cnconfig = lazy_module("nixos_migrate_ldap.cnconfig")
    reload = lazy_module("nixos_migrate_ldap.reload")
    slapd = lazy_module("nixos_migrate_ldap.slapd")


@hookimpl
def settings_model() -> type[LdapSettings]:
    return LdapSettings


@hookimpl
def detect_version(service: Service) -> str | None:
    s = installation.settings_of(service)
    if not installation.has_config(s) or not installation.has_data(s):
        return None
    old = {db.backend for db in installation.offline_databases(s)} & installation.OLD_BACKENDS
    marker = s.data_dir / installation.MARKER
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
    s = installation.settings_of(service)
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
    s = installation.settings_of(service)
    checks: list[Check] = []
    missing = []
    for version in (step.from_version or "", step.to_version):
        try:
            prefix = installation.prefix(s, version)
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
    directories = [db.directory for db in installation.offline_databases(s) if db.directory]
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
    pid = installation.running_slapd(s)
    checks.append(Check("slapd not running", pid is None, f"pid {pid} (its pid file); stop it or set `unit`"))
    if outside or free < need or pid is not None:
        return checks
    if detect_version(service) != step.from_version:
        # a later step of a plan: its config exists only after the step before it, whose reload
        # builds and tests it in staging before anything is replaced
        checks.append(Check(f"OpenLDAP {step.to_version} accepts the rewritten config", True, "checked in staging"))
        return checks
    checks.append(cnconfig.dry_run(service, step))
    return checks


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    s = installation.settings_of(service)
    paths = [p for p in (s.config_dir, s.config_file, s.data_dir) if p is not None and p.exists()]
    return filebackup.estimate(paths) + tree_size(s.data_dir)  # the LDIF is about the data's size


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    s = installation.settings_of(service)
    old = installation.prefix(s, step.from_version or "")
    # the files first: opening a BDB environment (slapcat of hdb) rewrites its region files
    files = service.private_dir(dest / "files")
    paths = [p for p in (s.config_dir, s.config_file, s.data_dir) if p is not None]
    # the copy goes to disk and is summed while slapcat reads the data
    with filebackup.backing_up(paths, files, service.run, service.progress) as copied:
        dumps = service.private_dir(dest / "ldif")
        config = cnconfig.dump_config(service, old, dumps / "config.ldif", dumps)
        suffixes: dict[str, dict[str, Any]] = {}
        dbs = ldif.databases(config)
        slapcat = [slapd.tool(old, "slapcat"), *installation.config_args_for_dump(s, dumps)]
        with service.progress.task(f"slapcat with OpenLDAP {step.from_version}", total=len(dbs)) as t:
            for db in dbs:
                if db.suffix is None:
                    continue
                out = dumps / f"db-{db.index}.ldif"
                service.run.run([*slapcat, "-b", db.suffix, "-l", out])
                entries = ldif.parse(out.read_text())
                suffixes[db.suffix] = {
                    "file": out.name,
                    "index": db.index,
                    "count": len(entries),
                    "digest": ldif.digest(entries),
                    "sha256": file_digest(out),
                }
                t.advance()
    info = copied.result()
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


@hookimpl
def up(service: Service, step: Step) -> bool:
    dumps = installation.pending_ldif(service)
    reload.reload(service, step, dumps, cnconfig.config_for(service, step, dumps / "config.ldif"))
    return True


@hookimpl
def down(service: Service, step: Step) -> bool:
    dumps = installation.pending_ldif(service)
    reload.reload(service, step, dumps, cnconfig.config_for(service, step, dumps / "config.ldif"))
    return True


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    s = installation.settings_of(service)
    for base in (s.config_dir, s.data_dir):
        if base is not None:
            for what in ("staging", "replaced"):
                shutil.rmtree(installation.staging_path(base, what), ignore_errors=True)
    shutil.rmtree(service.state_dir / "load.d", ignore_errors=True)
    filebackup.restore_paths(backup, service.run, service.progress)
    (service.state_dir / "expected.json").write_text(json.dumps(backup.detail.get("suffixes", {})))
    return True


@hookimpl
def verify(service: Service) -> list[Check]:
    s = installation.settings_of(service)
    if not installation.has_config(s):
        return [Check("configuration present", False, f"no cn=config in {s.config_dir}, no {s.config_file}")]
    version = detect_version(service)
    if version is None:
        return [Check("data present", False, f"no data in {s.data_dir}")]
    prefix = installation.prefix(s, version)
    expected: dict[str, dict[str, Any]] = {}
    if service.step is not None and (service.state_dir / "expected.json").is_file():
        expected = json.loads((service.state_dir / "expected.json").read_text())
    config = installation.config_args(s)
    suffixes = s.suffixes or [db.suffix for db in installation.offline_databases(s) if db.suffix]
    checks = [Check("configuration present", True, f"OpenLDAP {version}, {' '.join(map(str, config))}")]
    try:
        with slapd.running(service, prefix, config, s.port):
            checks.append(Check("slapd starts", True, f"127.0.0.1:{s.port}"))
            for suffix, n in checking.count(s, suffixes).items():
                want = expected.get(suffix, {}).get("count")
                ok = want is None or want == n
                checks.append(Check(f"entries under {suffix}", ok, f"{n}" + ("" if ok else f", expected {want}")))
            if expected:
                checks += checking.compare_dumps(service, prefix, expected)
    except MigrateError as exc:
        checks.append(Check("slapd starts and answers", False, exc.message))
    return checks
