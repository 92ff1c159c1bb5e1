"""The `postgresql` plugin: major upgrades with pg_upgrade, logical downgrades, exact restores.

Layout. The data is in `data_dir` when it holds a cluster, else in `old_data_dir` (NixOS keeps
one directory per major). An upgrade builds the new cluster in a staging directory beside
`data_dir` and renames it into place last; a downgrade builds the older cluster beside
`old_data_dir` the same way. Nothing is ever written into the cluster the step starts from,
except by pg_upgrade's `link` and `swap` methods, which is why those take a file-level backup.

Backups. With `copy`, `clone`, `copy-file-range` and `dump` (and for every downgrade) the
untouched source cluster *is* the backup: at commit it is renamed out of the data path into the
backup directory (or beside it, on another filesystem) and recorded; nothing is copied. With
`link` and `swap` the source is copied first (`cp -a --reflink=auto`: a reflink clone where the
filesystem can). Every backup carries the logical fingerprint of the data (see fingerprint.py),
which verify compares after the step.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.fingerprint import tree_size
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Direction, Step
from nixos_migrate_postgresql import compat, fingerprint, layout, logical, tablespaces
from nixos_migrate_postgresql.cluster import (
    binary,
    control_data,
    current_dir,
    major_of,
    prefix_of,
    running_pid,
    same_filesystem,
    sibling,
    stop_stray_server,
)
from nixos_migrate_postgresql.inspect import Inspection, initdb_argv, inspect
from nixos_migrate_postgresql.server import PrivateServer, loading_settings, private_dir, running
from nixos_migrate_postgresql.settings import PostgresSettings

RETAINED = "retained-cluster"
COPY_LIKE = ("copy", "clone", "copy-file-range", "dump")
UP_TOOLS = {
    "old": ("postgres", "pg_controldata", "psql"),
    "new": ("initdb", "pg_upgrade", "postgres", "vacuumdb", "psql", "pg_dumpall", "pg_dump"),
}
DOWN_TOOLS = {
    "old": ("postgres", "pg_controldata", "pg_dump", "pg_dumpall", "psql"),
    "new": ("initdb", "postgres", "psql"),
}


def _settings(service: Service) -> PostgresSettings:
    return service.settings  # type: ignore[no-any-return]


def _socket(service: Service) -> Path:
    return private_dir(service, _settings(service).socket_dir)


def _expected_file(service: Service) -> Path:
    return service.state_dir / "expected-fingerprint.json"


def _inspection_file(service: Service) -> Path:
    return service.state_dir / "inspection.json"


def _target_dir(service: Service, step: Step) -> Path:
    """Where the step's result goes: `data_dir`, unless the data is there now; then the other one.

    So `down` with the upgrade's manifest goes back to old_data_dir, and a NixOS configuration
    switched back to the older major (data_dir = the older major's directory) goes to data_dir."""
    s = _settings(service)
    return s.source_dir if _source_dir(service, step) == s.data_dir else s.data_dir


def _source_dir(service: Service, step: Step) -> Path:
    found = current_dir(_settings(service))
    if found is None or major_of(found) != step.from_version:
        raise MigrateError(
            f"{service.name}: no PostgreSQL {step.from_version} cluster in "
            f"{_settings(service).data_dir} or {_settings(service).source_dir}"
        )
    return found


def resolve_method(service: Service, step: Step) -> str:
    s = _settings(service)
    if step.direction == "down":
        return "dump"
    if s.method != "auto":
        return s.method
    src = current_dir(s) or s.source_dir
    built_in = _built_in(service, step)
    if (
        built_in.is_dir()
        and (src / "PG_VERSION").is_file()
        and filebackup.reflinks_between(src / "PG_VERSION", built_in)
    ):
        return "clone"  # btrfs reflinks cross subvolumes too
    return "copy-file-range" if int(step.to_version) >= 17 and same_filesystem(src, built_in) else "copy"


def _built_in(service: Service, step: Step) -> Path:
    """The directory the new cluster is built in (its staging directory's parent)."""
    s = _settings(service)
    src = current_dir(s) or s.source_dir
    dst = s.source_dir if src == s.data_dir and step.direction == "down" else s.data_dir
    return layout.staging_dir(dst, src).parent


def _method_flags(method: str, new_major: int) -> list[str]:
    if method == "copy":
        return ["--copy"] if new_major >= 16 else []
    return [f"--{method}"]


# -- hooks -----------------------------------------------------------------------------------


@hookimpl
def settings_model() -> type[PostgresSettings]:
    return PostgresSettings


@hookimpl
def detect_version(service: Service) -> str | None:
    found = current_dir(_settings(service))
    return major_of(found) if found else None


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    s = _settings(service)
    if not target.isdigit():
        raise UsageError(f"{service.name}: target {target!r} is not a PostgreSQL major version (like '17')")
    if target not in s.packages:
        raise UsageError(
            f"{service.name}: no binaries for PostgreSQL {target} in settings.packages "
            f"(have {sorted(s.packages) or 'none'})",
            hint=f'add settings.packages."{target}"',
        )
    if current is None or current == target:
        return []
    if current not in s.packages:
        raise UsageError(
            f"{service.name}: the data is PostgreSQL {current}, and settings.packages has no binaries for it",
            hint=f'add settings.packages."{current}"',
        )
    direction: Direction = "up" if int(target) > int(current) else "down"
    step = Step(current, target, direction)
    method = resolve_method(service, step)
    what = f"pg_upgrade --{method}" if direction == "up" and method != "dump" else "dump and reload"
    return [Step(current, target, direction, what, data={"method": method})]


def _logical(step: Step) -> bool:
    """Whether the step copies through SQL (every downgrade, the `dump` method)."""
    return step.direction == "down" or step.data.get("method") == "dump"


def _depth(service: Service, step: Step) -> fingerprint.Depth:
    """Sampling is exact enough only where pg_upgrade carries the relation files byte for byte."""
    return "full" if _logical(step) or _settings(service).verify_depth == "full" else "sample"


def _row_hash(step: Step) -> fingerprint.RowHash:
    """Hashing by columns needs functions of 14 (hash_record_extended for some types) on both sides."""
    return "columns" if min(_majors(step)) >= 14 else "text"


def _majors(step: Step) -> tuple[int, int]:
    return int(step.from_version or 0), int(step.to_version)


def _inspect_source(
    service: Service,
    step: Step,
    src: Path,
    *,
    fingerprint_too: bool,
    alongside: Callable[[Inspection], object] | None = None,
    blockers: list[str] | None = None,
) -> tuple[Inspection, Any]:
    """Inspect the source cluster on a private server and, with `fingerprint_too`, fingerprint it;
    `alongside(inspection)` runs in a thread meanwhile (it must not touch the source). For a
    downgrade, what the older major cannot hold is appended to `blockers` when given."""
    s = _settings(service)
    prefix = prefix_of(s, step.from_version or "")
    control = control_data(service.run, prefix, src)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with running(service, prefix, src, _socket(service), s.port, s.superuser) as server:
            found = inspect(server, control, s.superuser)
            beside = pool.submit(alongside, found) if alongside else None
            if blockers is not None and step.direction == "down":
                blockers += compat.blockers(server, int(step.from_version or 0), int(step.to_version))
            fp = None
            if fingerprint_too:
                fp = fingerprint.take(server, s.jobs, depth=_depth(service, step), row_hash=_row_hash(step))
        # the server stops while `alongside` may still run
        if beside is not None:
            beside.result()  # its failure is the caller's
    return found, fp


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    s = _settings(service)
    checks: list[Check] = []
    tools = UP_TOOLS if step.direction == "up" else DOWN_TOOLS
    missing = []
    for side, major in (("old", step.from_version or ""), ("new", step.to_version)):
        for tool in tools[side]:
            try:
                binary(s, major, tool)
            except MigrateError as exc:
                missing.append(exc.message)
    checks.append(Check("binaries of both majors", not missing, "; ".join(missing)))
    if missing:
        return checks
    try:
        src = _source_dir(service, step)
    except MigrateError as exc:
        return [*checks, Check("source cluster", False, exc.message)]
    dst = _target_dir(service, step)
    pid = running_pid(src)
    unit = service.control.unit
    if pid is not None and unit and service.control.is_active():
        # the pre-switch check runs while the old generation's server still serves; `up` stops it first
        detail = f"runs now as {unit} (pid {pid}); `up` stops {unit} and checks the cluster again"
        return [*checks, Check("source cluster stopped before the step", True, detail)]
    checks.append(Check("source cluster not running", pid is None, f"postmaster pid {pid} on {src}" if pid else ""))
    if pid is not None:
        return checks
    control = control_data(service.run, prefix_of(s, step.from_version or ""), src)
    checks.append(Check("source cluster shut down cleanly", control.shut_down, f"state: {control.state}"))
    built_in = layout.staging_dir(dst, src).parent
    pinned = [f"{path} is {layout.describe(path)}" for path in sorted({src, dst}) if layout.pinned(path)]
    if pinned:
        how = f"its contents move, the directory stays; the new cluster is built in {built_in}"
        checks.append(Check("layout", True, "; ".join(pinned) + f": {how}"))
    for taken in tablespaces.occupied(tablespaces.locations(src), step.to_version):
        checks.append(
            Check(
                f"tablespace directory {taken} is free",
                False,
                f"another PostgreSQL {step.to_version} cluster used this tablespace location, and the new "
                "cluster's files go there; move the directory away if no cluster needs it",
            )
        )
    if dst != src:
        other = major_of(dst)
        checks.append(Check(f"{dst} holds no cluster yet", other is None, f"it holds PostgreSQL {other}"))
        if dst.exists() and other is None and layout.cluster_entries(dst):
            checks.append(Check(f"{dst} is empty", False, "it holds files that are no cluster"))
    method = str(step.data.get("method", "copy"))
    if method in ("link", "swap"):
        choice = filebackup.choose(src)
        checks.append(
            Check("backup", True, f"{choice.kind}: {choice.why} (pg_upgrade --{method} changes the old cluster)")
        )
    else:
        checks.append(Check("backup", True, "the untouched old cluster is retained (renamed, O(1))"))
    new = int(step.to_version)
    if step.direction == "up":
        if method == "copy-file-range" and new < 17:
            checks.append(Check("method copy-file-range", False, "pg_upgrade has --copy-file-range from 17"))
        if method == "swap" and new < 18:
            checks.append(Check("method swap", False, "pg_upgrade has --swap from 18"))
        if method in ("link", "swap") and not same_filesystem(src, built_in):
            checks.append(
                Check(
                    f"method {method}",
                    False,
                    f"pg_upgrade --{method} hard-links or moves the old cluster's files into the new one, which "
                    f"cannot cross filesystems or btrfs subvolumes: the old cluster {src} is {layout.describe(src)} "
                    f'and the new one is built in {built_in}; set method = "clone" where reflinks work (btrfs '
                    'across subvolumes, XFS) or "auto"',
                )
            )
        if method == "clone" and not filebackup.reflinks_between(src / "PG_VERSION", built_in):
            checks.append(
                Check(
                    "method clone",
                    False,
                    f"files of {src} cannot be reflinked into {built_in} (another filesystem, or one without "
                    'reflinks); set method = "auto" or "copy"',
                )
            )
        if method == "copy-file-range" and not same_filesystem(src, built_in):
            checks.append(Check("method copy-file-range", False, f"{src} and {built_in} are on different filesystems"))
    if not all(c.ok for c in checks):
        return checks
    found: Inspection | None = None
    if not service.applying or s.expected_databases is not None or step.direction == "down":
        # a private server on the old cluster; when applying an upgrade, the backup inspects it anyway
        blocked: list[str] = []
        found, _ = _inspect_source(service, step, src, fingerprint_too=False, blockers=blocked)
        if step.direction == "down":
            checks.append(
                Check(
                    f"PostgreSQL {step.to_version} can hold every object",
                    not blocked,
                    (
                        "; ".join(blocked) + "; drop or change them on the newer major first,"
                        " or restore the backup taken before the upgrade"
                    )
                    if blocked
                    else "no object of a kind it lacks",
                )
            )
        checks.append(Check("data checksums carried", True, "on" if found.checksums else "off"))
        checks.append(
            Check(
                "encoding and locale carried",
                True,
                f"{found.encoding}, {found.collate}/{found.ctype}, provider {found.provider}",
            )
        )
    if found is not None and s.expected_databases is not None:
        extra = sorted(set(found.databases) - set(s.expected_databases) - {"template0", "template1", "postgres"})
        checks.append(Check("only the expected databases", not extra, f"unexpected: {', '.join(extra)}"))
    size = tree_size(src)
    # clone shares extents and link/swap share or move files: only copy, copy-file-range and dump write it all
    need = size + size // 10 if method in ("copy", "copy-file-range", "dump") else (64 << 20)
    free = shutil.disk_usage(dst.parent if dst.parent.exists() else src.parent).free
    checks.append(
        Check(f"room for the new cluster ({method})", free >= need, f"{free >> 20} MiB free, {need >> 20} MiB needed")
    )
    if step.direction == "up" and method != "dump":
        if found is None or service.applying:
            # pg_upgrade runs the same consistency checks first, before it changes anything, and a
            # failure there is restored like any other; `plan` (the pre-switch check) runs them now
            checks.append(Check("pg_upgrade --check", True, "done by pg_upgrade itself before it changes anything"))
        else:
            checks.append(_pg_upgrade_check(service, step, src, dst, found, method))
    return checks


def _pg_upgrade_check(service: Service, step: Step, src: Path, dst: Path, found: Inspection, method: str) -> Check:
    """`pg_upgrade --check` against a throwaway new cluster beside the target; changes no data."""
    s = _settings(service)
    scratch = layout.check_dir(dst, src)
    shutil.rmtree(scratch, ignore_errors=True)
    service.private_dir(scratch)  # initdb fills an empty directory the service user owns
    try:
        service.run.run(initdb_argv(binary(s, step.to_version, "initdb"), scratch, int(step.to_version), found))
        result = service.run.run(
            [*_pg_upgrade_argv(service, step, src, scratch, found, method), "--check"],
            cwd=service.private_dir(service.state_dir / "pg_upgrade"),
            env=_pg_env(service),
            check=False,
        )
        detail = (
            "\n".join(
                line
                for line in result.output.splitlines()
                if "fatal" in line.lower() or "*failure*" in line.lower() or "could not" in line.lower()
            )
            or result.output.strip()[-800:]
        )
        return Check("pg_upgrade --check", result.returncode == 0, "" if result.returncode == 0 else detail)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _pg_env(service: Service) -> dict[str, str]:
    s = _settings(service)
    env: dict[str, str] = {}
    if s.password_file is not None:
        passfile = service.private_dir(service.state_dir / "secrets") / "pgpass"
        password = s.password_file.read_text().strip().replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"*:*:*:*:{password}\n")
        passfile.chmod(0o600)
        if os.geteuid() == 0:
            os.chown(passfile, service.run.identity.uid, service.run.identity.gid)
        env["PGPASSFILE"] = str(passfile)
    return env


def _pg_upgrade_argv(service: Service, step: Step, src: Path, new: Path, found: Inspection, method: str) -> list[str]:
    s = _settings(service)
    old_bin = prefix_of(s, step.from_version or "") / "bin"
    new_bin = prefix_of(s, step.to_version) / "bin"
    return [
        str(new_bin / "pg_upgrade"),
        "-b",
        str(old_bin),
        "-B",
        str(new_bin),
        "-d",
        str(src),
        "-D",
        str(new),
        "-U",
        found.superuser,
        "-j",
        str(s.jobs),
        "-s",
        str(_socket(service)),
        "-p",
        str(s.port),
        "-P",
        str(s.port + 1),
        *_method_flags(method, int(step.to_version)),
        *(["--no-sync"] if _no_sync(step, method) else []),
    ]


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    if step.data.get("method") in ("link", "swap"):
        found = current_dir(_settings(service))
        return filebackup.estimate([found, *tablespaces.of_cluster(found, step.from_version or "")]) if found else 0
    return 0  # the untouched source cluster is the backup: it is renamed, not copied


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    src = _source_dir(service, step)
    fp = None
    _verified_file(service).unlink(missing_ok=True)  # of an earlier step
    if _logical(step):
        # a logical step reads every row of the source anyway: the server it starts for the copy
        # inspects the source and takes its fingerprint meanwhile, into `fingerprint_file`
        # (`_logical_into`); a server started here as well would cost more than it could overlap
        _inspection_file(service).unlink(missing_ok=True)
        _staging_marker(service).unlink(missing_ok=True)
    else:
        # the empty target cluster does not depend on the fingerprint: initdb (a second or more of
        # CPU) runs while the source is read
        found, fp = _inspect_source(
            service, step, src, fingerprint_too=True, alongside=lambda found: _prepare_staging(service, step, found)
        )
        found.save(_inspection_file(service))
    _expected_file(service).write_text(json.dumps(fp))
    sidecar = dest / "fingerprint.json"
    sidecar.unlink(missing_ok=True)
    detail = {
        "source": str(src),
        "major": step.from_version,
        "fingerprint": fp,
        "fingerprint_file": str(sidecar),
        "tablespaces": tablespaces.locations(src),
    }
    if step.data.get("method") in ("link", "swap"):
        # the tablespaces' files are linked or moved too
        paths = [src, *tablespaces.of_cluster(src, step.from_version or "")]
        info = filebackup.backup_paths(paths, dest, service.run, service.progress)
        return BackupInfo(info.kind, info.path, info.size, info.checksum, {**info.detail, **detail})
    retained = dest / "cluster" if same_filesystem(dest, src) else sibling(src, f"retained-{dest.name}")
    # `up`/`down` rename the source there at commit; until then it stays in place, untouched
    marker = {"path": str(retained), "source": str(src), "fingerprint_file": str(sidecar)}
    _retained_marker(service).write_text(json.dumps(marker))
    return BackupInfo(RETAINED, retained, tree_size(src), fingerprint.digest(fp) if fp else None, detail)


def _backup_fingerprint(backup: BackupRecord) -> Any:
    """The fingerprint of the data a backup holds: in its record, or (logical steps) beside it."""
    if backup.detail.get("fingerprint") is not None:
        return backup.detail["fingerprint"]
    sidecar = Path(str(backup.detail.get("fingerprint_file", "")))
    return json.loads(sidecar.read_text()) if sidecar.is_file() else None


def _staging_marker(service: Service) -> Path:
    return service.state_dir / "staging.json"


def _staging(service: Service, step: Step, found: Inspection) -> tuple[Path, dict[str, Any]]:
    """The staging directory beside the step's target, and how it is initdb'ed for the step (with
    the source's settings): the record its marker holds."""
    staging = layout.staging_dir(_target_dir(service, step), _source_dir(service, step))
    initdb = prefix_of(_settings(service), step.to_version) / "bin" / "initdb"
    argv = initdb_argv(initdb, staging, int(step.to_version), found)
    return staging, {"argv": argv, "step": [step.from_version, step.to_version]}


def _initdb(service: Service, staging: Path, record: dict[str, Any]) -> None:
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    service.private_dir(staging)
    service.run.run(record["argv"])


def _prepare_staging(service: Service, step: Step, found: Inspection) -> None:
    """initdb the staging cluster ahead of the step (`backup` does, alongside its fingerprint);
    the marker, written once initdb succeeded, lets `up`/`down` take it over once."""
    marker = _staging_marker(service)
    marker.unlink(missing_ok=True)
    staging, record = _staging(service, step, found)
    _initdb(service, staging, record)
    marker.write_text(json.dumps(record))


def _initdb_staging(service: Service, step: Step, found: Inspection) -> Path:
    """A freshly initdb'ed staging directory for the step's target major, with the settings of the
    source `found`: the one `backup` prepared when it is there untouched (its marker is taken: a
    step that fails after this point leaves no reusable staging behind), else a new one."""
    staging, wanted = _staging(service, step, found)
    marker = _staging_marker(service)
    prepared = json.loads(marker.read_text()) if marker.exists() else None
    marker.unlink(missing_ok=True)
    if prepared != wanted or not (staging / "PG_VERSION").is_file():
        with service.progress.task(f"initdb PostgreSQL {step.to_version}"):
            _initdb(service, staging, wanted)
    _target_dir(service, step).parent.mkdir(parents=True, exist_ok=True)
    return staging


def _sync(service: Service, cluster: Path) -> None:
    """Flush the new cluster to disk before it is committed: initdb ran with --no-sync, and
    neither pg_upgrade --no-sync nor a server's checkpoints cover every file. syncfs, not
    `initdb --sync-only`: one call instead of an fsync per file (1.15 s against 0.06 s after a
    `--link` upgrade on btrfs), and no walk racing the server that computes statistics meanwhile."""
    service.run.run(["sync", "--file-system", "--", cluster])


@hookimpl
def up(service: Service, step: Step) -> bool:
    method = str(step.data.get("method", "copy"))
    src, dst = _source_dir(service, step), _target_dir(service, step)
    if method == "dump":
        # a dump creates every extension at the new major's default version: nothing to update
        staging, _found = _logical_into(service, step, src)
    else:
        saved = Inspection.load(_inspection_file(service))
        # `backup` saves it; without one (a step run on its own), ask the source
        found = saved or _inspect_source(service, step, src, fingerprint_too=False)[0]
        staging = _initdb_staging(service, step, found)
        with service.progress.task(f"pg_upgrade --{method} {step.from_version} -> {step.to_version}"):
            try:
                service.run.run(
                    _pg_upgrade_argv(service, step, src, staging, found, method),
                    cwd=service.private_dir(service.state_dir / "pg_upgrade"),
                    env=_pg_env(service),
                )
            except MigrateError as exc:
                raise _with_pg_upgrade_logs(service, staging, exc) from exc
        _carry_config(src, staging)
        with ThreadPoolExecutor(max_workers=1) as pool:
            # pg_upgrade ran with --no-sync where it has it: its writes reach the disk while the new
            # cluster is checked
            synced = pool.submit(_sync, service, staging) if _no_sync(step, method) else None
            _verify_before_commit(service, step, staging, found.superuser)
            if synced is not None:
                synced.result()
        _sync(service, staging)  # what the checking server wrote (it does not fsync)
    _note_statistics(service, step, dst)
    _commit(service, step, src, dst, staging, method)
    return True


def _with_pg_upgrade_logs(service: Service, staging: Path, exc: MigrateError) -> MigrateError:
    """pg_upgrade writes its logs into the new cluster, which the restore removes: keep them in
    the service's log directory, and quote the end of the log that names the cause."""
    logs = staging / "pg_upgrade_output.d"
    if not logs.is_dir():
        return exc
    kept = service.state_dir / "logs" / f"pg_upgrade-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(logs, kept)
    tail = ""
    for log in sorted(kept.rglob("*.log"), key=lambda f: f.stat().st_mtime, reverse=True):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if any("error" in line.lower() for line in lines[-10:]):
            tail = f"\nthe end of {log.name}:\n" + "\n".join(lines[-6:])
            break
    return MigrateError(f"{exc.message}{tail}", hint=f"pg_upgrade's logs are kept in {kept}")


def _no_sync(step: Step, method: str) -> bool:
    """Whether pg_upgrade leaves syncing the new cluster to us (it has --no-sync from 15)."""
    return method != "dump" and int(step.to_version) >= 15


@hookimpl
def down(service: Service, step: Step) -> bool:
    src, dst = _source_dir(service, step), _target_dir(service, step)
    staging, _found = _logical_into(service, step, src)
    _note_statistics(service, step, dst)
    _commit(service, step, src, dst, staging, "dump")
    return True


def _logical_into(service: Service, step: Step, src: Path) -> tuple[Path, Inspection]:
    """Copy the content of the cluster in `src` through SQL into a new staging cluster of the
    target major, compare the copy with the source table by table, and flush it to disk: the
    staging directory and what the source was found to be."""
    s = _settings(service)
    sock = _socket(service)
    work = service.private_dir(service.state_dir / "dump")
    src_prefix = prefix_of(s, step.from_version or "")
    dst_prefix = prefix_of(s, step.to_version)
    # the newer pg_dump of the two: an older one refuses a newer server, a newer one reads older servers
    dump_bin = prefix_of(s, str(max(int(step.from_version or 0), int(step.to_version)))) / "bin"
    sidecar = Path(json.loads(_retained_marker(service).read_text())["fingerprint_file"])
    row_hash = _row_hash(step)
    control = control_data(service.run, src_prefix, src)
    with running(service, src_prefix, src, sock, s.port, s.superuser) as old:
        found = inspect(old, control, s.superuser)
        with ThreadPoolExecutor(max_workers=1) as pool:
            # nobody writes the source (its service is stopped, this server is private): its
            # fingerprint is read while the new cluster is made and filled, on the CPU that leaves
            # idle; kept even when the copy fails, for the restore that follows checks against it
            before = pool.submit(_fingerprint_into, sidecar, old.in_background(), s.jobs, row_hash)
            staging = _initdb_staging(service, step, found)
            with running(service, dst_prefix, staging, sock, s.port + 1, found.superuser, loading_settings()) as new:
                with _flushing(service, staging):
                    logical.copy_cluster(
                        service,
                        old,
                        dump_bin,
                        new,
                        dst_prefix / "bin",
                        int(step.to_version),
                        work,
                        jobs=s.jobs,
                        direct_above=s.direct_copy_above,
                    )
                expected = before.result()
                checks = _compare_copy(service, staging, new, expected)
    _carry_config(src, staging)
    with service.progress.task("flush the new cluster to disk"):
        _sync(service, staging)  # what the server's shutdown wrote, and the carried config
    # should the record not hold (the cluster ran since), verify compares every row again
    _expected_file(service).write_text(json.dumps(expected))
    _record_verified(service, step, staging, checks)
    return staging, found


@contextlib.contextmanager
def _flushing(service: Service, cluster: Path, every: float = 2.0) -> Iterator[None]:
    """Flush the filesystem of `cluster` every `every` seconds while the block runs. The loading
    server does not fsync (loading_settings) and the kernel starts writing its pages back only past
    its own thresholds (10% of RAM): without this, all of a copy is written at the end, competing
    with the comparison (0.9-1.1 s of 1.3-1.5 s at 1.3 GiB). A load is bound by one backend's CPU,
    so the disk is free meanwhile; pg_upgrade's copy is bound by the disk, and flushing during it
    only moved the time (measured). Only a head start: a failed flush here is left to the final
    one, which must succeed."""
    stop = threading.Event()

    def flush() -> None:
        with contextlib.suppress(MigrateError):
            while not stop.wait(every):
                _sync(service, cluster)

    thread = threading.Thread(target=flush, name="flush-copy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _fingerprint_into(sidecar: Path, server: PrivateServer, jobs: int, row_hash: fingerprint.RowHash) -> Any:
    """The full fingerprint of what `server` holds, also written to `sidecar`."""
    taken = fingerprint.take(server, jobs, depth="full", row_hash=row_hash)
    sidecar.write_text(json.dumps(taken))
    return taken


def _compare_copy(service: Service, staging: Path, new: PrivateServer, expected: Any) -> list[Check]:
    """Check the copy that `new` serves from `staging` as verify would, against the source's full
    fingerprint `expected` (every row, table by table), while its writes reach the disk: the
    checks, for `_record_verified`. Raises when one fails: nothing is committed."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        # the loading server does not fsync (loading_settings): the copy reaches the disk while it
        # is read back and compared
        flushed = pool.submit(_sync, service, staging)
        with service.progress.task("compare the copy with its source, table by table"):
            checks = [Check("server starts", True, "the loading server, before the commit")]
            checks += _content_checks(service, new, expected, amcheck_above=fingerprint.SAMPLE_ABOVE)
        flushed.result()
    _refuse_failed(service, checks, "the copy failed verification before the commit")
    return checks


def _carry_config(src: Path, new: Path) -> None:
    """Access rules and ALTER SYSTEM settings follow the data; postgresql.conf is kept for reference
    (its settings may not exist in the other major)."""
    for name in ("pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf"):
        if (src / name).is_file() and not (src / name).is_symlink():
            shutil.copy2(src / name, new / name)
            st = (src / name).stat()
            if os.geteuid() == 0:
                os.chown(new / name, st.st_uid, st.st_gid)
    if (src / "postgresql.conf").is_file() and not (src / "postgresql.conf").is_symlink():
        shutil.copy2(src / "postgresql.conf", new / f"postgresql.conf.from-{major_of(src)}")


def _commit(service: Service, step: Step, src: Path, dst: Path, staging: Path, method: str) -> None:
    """Rename the new cluster into place last; the source leaves the data path."""
    if method in COPY_LIKE:
        # the untouched source is this step's backup: it goes where `backup` recorded it would
        marker = json.loads(_retained_marker(service).read_text())
        if marker["source"] != str(src):
            raise MigrateError(f"the backup of this step was taken of {marker['source']}, not {src}")
        retained = Path(marker["path"])
        layout.vacate(src, retained, service.run)
        # its tablespace directories go with it: the locations now serve the new cluster
        tablespaces.detach(retained, step.from_version or "", service.run)
        old_tablespace_dirs: list[Path] = []
    else:
        old_tablespace_dirs = tablespaces.of_cluster(src, step.from_version or "")
        garbage = sibling(src, "replaced")
        if garbage.exists():
            shutil.rmtree(garbage)
        if layout.pinned(src):
            layout.empty(src)
        else:
            src.rename(garbage)
    layout.place(staging, dst, service.run)  # dst was checked empty before the step
    if method not in COPY_LIKE:
        # its files now belong to the new cluster or are gone; the file backup holds them
        shutil.rmtree(garbage, ignore_errors=True)
        for directory in old_tablespace_dirs:
            shutil.rmtree(directory)


def _retained_marker(service: Service) -> Path:
    return service.state_dir / "retained.json"


def _verified_file(service: Service) -> Path:
    return service.state_dir / "verified.json"


def _verify_before_commit(service: Service, step: Step, staging: Path, superuser: str) -> None:
    """Start the new cluster on a private server before the commit, update its extensions and
    check it as `verify` would; a failure leaves the data path as it was. This server runs while
    the new cluster is flushed to disk, and `verify` after the commit starts none (see
    `_record_verified`). The caller syncs the cluster after it."""
    s = _settings(service)
    # without fsync: its few writes would wait behind the flush of the whole cluster (ext4 orders
    # a journal commit after the data of the files in it); the caller syncs once it stopped
    prefix, no_fsync = prefix_of(s, step.to_version), {"fsync": "off"}
    with running(service, prefix, staging, _socket(service), s.port, superuser, no_fsync) as server:
        _update_extensions(service, server)
        with service.progress.task("verify the new cluster before the commit"):
            checks = [Check("server starts", True, "before the commit")]
            checks += _content_checks(service, server, _expected(service))
    _refuse_failed(service, checks, "the new cluster failed verification before the commit")
    _record_verified(service, step, staging, checks)


def _refuse_failed(service: Service, checks: list[Check], what: str) -> None:
    if failed := [c for c in checks if not c.ok]:
        raise MigrateError(
            f"{what}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
            hint=f"nothing was committed; the logs of the private servers are in {service.state_dir / 'logs'}",
        )


def _record_verified(service: Service, step: Step, staging: Path, checks: list[Check]) -> None:
    """Record the checks of the stopped staging cluster for `verify` after the commit, with the
    pg_control state that shows it has not run since: the commit renames it and changes no byte,
    so a second server start and read would find the same. Recorded for the path the commit
    gives it; used once (`_recorded_checks`)."""
    control = control_data(service.run, prefix_of(_settings(service), step.to_version), staging)
    record = {
        "cluster": str(_target_dir(service, step)),
        "control": control.identity,
        "checks": [[c.name, c.ok, c.detail] for c in checks],
    }
    _verified_file(service).write_text(json.dumps(record))


def _recorded_checks(service: Service, cluster: Path, major: str) -> list[Check] | None:
    """The checks `_verify_before_commit` recorded for `cluster` in this step, if it has not run
    since; used once, so a later `verify` starts the cluster again."""
    recorded = _verified_file(service)
    if not recorded.exists():
        return None
    record = json.loads(recorded.read_text())
    recorded.unlink()
    if service.step is None or record.get("cluster") != str(cluster):
        return None
    control = control_data(service.run, prefix_of(_settings(service), major), cluster)
    if not control.shut_down or control.identity != record.get("control"):
        return None
    checks = [Check(str(name), bool(ok), str(detail)) for name, ok, detail in record["checks"]]
    return [*checks, Check("not started since", True, f"pg_control unchanged ({control.identity})")]


def _update_extensions(service: Service, server: PrivateServer) -> None:
    """`ALTER EXTENSION … UPDATE` where the new major ships a newer version: before the commit,
    because the service's queries may need the new version."""
    from psycopg import sql  # imported when first needed: see server._prefetch_psycopg

    with server.connect("postgres") as conn:
        dbs = [
            str(n) for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").fetchall()
        ]
    for db in dbs:
        with server.connect(db) as conn:
            # no event trigger fires for the update (an audit trigger would log it into the data)
            conn.execute("SET session_replication_role = replica")
            rows = conn.execute(
                "SELECT e.extname FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname"
                " WHERE a.default_version IS DISTINCT FROM e.extversion"
            ).fetchall()
            for (name,) in rows:
                with service.progress.task(f"update extension {name} in {db}"):
                    conn.execute(sql.SQL("ALTER EXTENSION {} UPDATE").format(sql.Identifier(str(name))))


def _settle_file(service: Service) -> Path:
    return service.state_dir / "settle.json"


def _note_statistics(service: Service, step: Step, cluster: Path) -> None:
    """Planner statistics are left for `settle`: neither pg_upgrade before 18 nor a dump carries
    them, and the manual computes them on the running server (`--analyze-in-stages` gives it rough
    statistics within seconds), so they need not lengthen the service's downtime. Noted before the
    commit, for the cluster the commit puts at `cluster`: a crash in between cannot lose the note,
    and `settle` drops a note whose cluster is not there (a failed step, restored)."""
    _settle_file(service).write_text(json.dumps({"statistics": {"major": step.to_version, "data_dir": str(cluster)}}))


@hookimpl
def settle(service: Service) -> list[Check] | None:
    noted = _settle_file(service)
    if not noted.exists():
        return None
    pending = json.loads(noted.read_text()).get("statistics") or {}
    s = _settings(service)
    cluster = current_dir(s)
    if cluster is None or str(cluster) != pending.get("data_dir") or major_of(cluster) != pending.get("major"):
        noted.unlink()  # noted for data that a restore or a later step has replaced
        return None
    major = str(pending["major"])
    prefix = prefix_of(s, major)
    vacuumdb = prefix / "bin" / "vacuumdb"
    # 18 carries most statistics through pg_upgrade: only what is missing
    missing = ["--missing-stats-only"] if int(major) >= 18 else []
    started = time.monotonic()
    with service.progress.task("refresh planner statistics"):
        if running_pid(cluster) is None:
            with running(service, prefix, cluster, _socket(service), s.port, s.superuser) as server:
                conn = ["-h", str(server.socket_dir), "-p", str(server.port), "-U", server.find_superuser(s.superuser)]
                # nobody is served meanwhile: one full pass is less work than the stages
                service.run.run([vacuumdb, *conn, "--all", "-j", str(s.jobs), "--analyze-only", *missing])
            how = "on the stopped cluster"
        else:
            conn = ["-h", str(s.service_socket_dir), "-p", str(s.service_port)]
            conn += ["-U", s.superuser] if s.superuser else []
            stages = ["--analyze-in-stages", *missing]
            service.run.run([vacuumdb, *conn, "--all", "-j", str(s.jobs), *stages], env=_pg_env(service))
            how = f"through the running server ({s.service_socket_dir}, port {s.service_port}), in stages"
    noted.unlink()
    return [Check("planner statistics", True, f"PostgreSQL {major}, {how}, {time.monotonic() - started:.1f} s")]


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    s = _settings(service)
    source = Path(str(backup.detail["source"]))
    places = {str(k): str(v) for k, v in dict(backup.detail.get("tablespaces") or {}).items()}
    _staging_marker(service).unlink(missing_ok=True)
    _verified_file(service).unlink(missing_ok=True)
    for base in {s.data_dir, s.source_dir}:
        for directory in (base, *layout.leftovers(base)):
            stop_stray_server(directory)
        for leftover in layout.leftovers(base):
            shutil.rmtree(leftover, ignore_errors=True)
    if backup.step.to_version != backup.step.from_version:
        # what the step wrote into the tablespace locations (check found them free before it)
        tablespaces.remove_major(places, backup.step.to_version)
    if backup.kind == RETAINED:
        if backup.path.exists():
            _replace_with_copy(service, backup.path, source)
            tablespaces.reattach(source, places, service.run)
        elif major_of(source) != backup.detail.get("major"):
            raise MigrateError(
                f"backup {backup.id}: the retained cluster {backup.path} is gone and {source} "
                "does not hold the original"
            )
    else:
        filebackup.restore_paths(backup, service.run, service.progress)
    for other in {s.data_dir, s.source_dir} - {source}:
        if major_of(other) is not None:
            tablespaces.remove_cluster(other, major_of(other))  # the cluster the failed or undone step produced
    _expected_file(service).write_text(json.dumps(_backup_fingerprint(backup)))
    return True


def _replace_with_copy(service: Service, retained: Path, source: Path) -> None:
    """Make `source` a copy of `retained` (a clone where the filesystem can), keeping `retained`."""
    if layout.pinned(source):
        tablespaces.remove_cluster(source, major_of(source))  # emptied; the directory stays
        service.run.run(["cp", "-a", "--reflink=auto", "--", f"{retained}/.", str(source)], as_root=True)
        return
    if source.exists():
        aside = sibling(source, "replaced")
        shutil.rmtree(aside, ignore_errors=True)
        source.rename(aside)
        tablespaces.remove_cluster(aside, major_of(aside))
    service.run.run(["cp", "-a", "--reflink=auto", "--", str(retained), str(source)], as_root=True)


@hookimpl
def verify(service: Service) -> list[Check]:
    s = _settings(service)
    found_dir = current_dir(s)
    if found_dir is None:
        return [Check("cluster present", False, f"no cluster in {s.data_dir} or {s.source_dir}")]
    major = major_of(found_dir) or ""
    pid = running_pid(found_dir)
    if pid is not None:
        return [Check("cluster running", True, f"pid {pid}; stop it to verify its content")]
    checks = [Check("cluster present", True, f"PostgreSQL {major} in {found_dir}")]
    verified = _recorded_checks(service, found_dir, major)
    if verified is not None:
        return checks + verified
    try:
        server_cm = running(service, prefix_of(s, major), found_dir, _socket(service), s.port, s.superuser)
        with server_cm as server:
            checks.append(Check("server starts", True, ""))
            checks += _content_checks(service, server, _expected(service))
    except MigrateError as exc:
        checks.append(Check("server starts", False, exc.message))
    return checks


def _content_checks(
    service: Service, server: PrivateServer, expected: dict[str, Any] | None, amcheck_above: int | None = None
) -> list[Check]:
    """What verify checks on the running cluster: the content against `expected`, the fingerprint
    taken before the step (read as deep as it was; the objects alone without one), the b-tree
    indexes (those up to `amcheck_above` blocks, or to the sample's limit after a sampled
    fingerprint), the expected databases."""
    s = _settings(service)
    depth: fingerprint.Depth = "shape" if expected is None else expected.get("depth", "full")
    row_hash: fingerprint.RowHash = "text" if expected is None else expected.get("row_hash", "text")
    fp = fingerprint.take(server, s.jobs, depth=depth, row_hash=row_hash)
    checks = _compare_expected(expected, fp)
    checks += _amcheck(server, fingerprint.SAMPLE_ABOVE if depth == "sample" else amcheck_above)
    if s.expected_databases is not None:
        extra = sorted(set(fp["databases"]) - set(s.expected_databases) - {"template1", "postgres"})
        checks.append(Check("only the expected databases", not extra, ", ".join(extra)))
    return checks


def _expected(service: Service) -> dict[str, Any] | None:
    """Right after a step (or a restore): the fingerprint taken before it."""
    if service.step is None or not _expected_file(service).exists():
        return None
    expected = json.loads(_expected_file(service).read_text())
    return expected if isinstance(expected, dict) else None


def _compare_expected(expected: dict[str, Any] | None, fp: Any) -> list[Check]:
    """The content must equal the fingerprint taken before the step."""
    if expected is None:
        return []
    diffs = fingerprint.differences(expected, fp)
    entries = [v for d in fp["databases"].values() for v in d.get("tables", {}).values()]
    sampled = sum(1 for v in entries if str(v[0]).endswith(" blocks"))
    how = f" ({sampled} large ones by size and a repeatable sample of blocks)" if sampled else ""
    detail = f"{len(fp['databases'])} databases, {len(entries)} tables and sequences{how}"
    return [Check("content equals the fingerprint before the step", not diffs, "; ".join(diffs) or detail)]


# amcheck's SQLSTATEs for damage it found (index_corrupted, data_corrupted); any other error means
# the check could not run on that index, which says nothing about the data
CORRUPTION = ("XX001", "XX002")


def _amcheck(server: PrivateServer, max_blocks: int | None = None) -> list[Check]:
    """B-tree structure of every user index amcheck can check (of those up to `max_blocks`, when
    given), with amcheck created in a rolled-back transaction. Only leaf b-tree indexes with storage
    of their own are checked: a partitioned table's index (relkind I) has none, an unlogged or
    temporary one may have none here, an invalid one is not maintained; they are counted and named
    in the detail. An index amcheck refuses (an error that reports no corruption) is counted too,
    never a failure of the data."""
    with server.connect("postgres") as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone()
        dbs = [
            str(n) for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1").fetchall()
        ]
    if not available:
        return [Check("amcheck", True, "not available in this build; skipped")]
    checked, too_big, problems = 0, 0, []
    uncheckable: dict[str, int] = {}
    refused: list[str] = []
    for db in dbs:
        with server.connect(db) as conn:
            conn.autocommit = False
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
                indexes = conn.execute(
                    "SELECT c.oid::regclass::text, CASE"
                    "   WHEN c.relkind <> 'i' THEN 'partitioned'"
                    "   WHEN c.relpersistence = 'u' THEN 'unlogged'"
                    "   WHEN c.relpersistence = 't' THEN 'temporary'"
                    "   WHEN NOT (i.indisvalid AND i.indisready) THEN 'invalid' END,"
                    " CASE WHEN c.relkind = 'i' AND c.relpersistence = 'p'"
                    "   THEN pg_relation_size(c.oid) / current_setting('block_size')::int END"
                    " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_am a ON a.oid = c.relam JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE a.amname = 'btree'"
                    " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'"
                    " AND n.nspname !~ '^pg_temp'"
                ).fetchall()
                for index, why_not, blocks in indexes:
                    if why_not is not None:
                        uncheckable[str(why_not)] = uncheckable.get(str(why_not), 0) + 1
                        continue
                    if max_blocks is not None and int(str(blocks)) > max_blocks:
                        too_big += 1
                        continue
                    try:
                        conn.execute("SAVEPOINT idx")
                        # structure only: the content is compared by the fingerprint already
                        conn.execute("SELECT bt_index_check(%s::regclass, false)", (index,))
                        conn.execute("RELEASE SAVEPOINT idx")
                        checked += 1
                    except Exception as exc:
                        conn.execute("ROLLBACK TO SAVEPOINT idx")
                        message = f"{db}: {index}: {str(exc).strip()}"
                        if getattr(exc, "sqlstate", None) in CORRUPTION:
                            problems.append(message)
                        else:
                            refused.append(message)
            finally:
                conn.rollback()
    detail = f"{checked} indexes"
    if uncheckable:
        kinds = ", ".join(f"{n} {why}" for why, n in sorted(uncheckable.items()))
        detail += f"; not checkable, skipped: {kinds}"
    if refused:
        detail += f"; {len(refused)} amcheck could not check: " + "; ".join(refused[:3])
    if too_big:
        # physical copies: their files are the old ones; a plain `verify` checks them all
        detail += f"; {too_big} larger than {max_blocks} blocks left to a plain `nixos-migrate verify`"
    return [Check("amcheck of b-tree indexes", not problems, "; ".join(problems[:5]) or detail)]
