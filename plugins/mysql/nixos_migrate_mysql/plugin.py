"""The `mysql` plugin: MariaDB (10.x, 11.x) and MySQL, as NixOS's `services.mysql` runs them.

Every step starts from a slow shutdown of the server the data is at (`innodb_fast_shutdown=0`:
purge and change-buffer merge done, nothing left in the redo log), taken by `backup` together
with the fingerprint of the content, then a file-level copy of the data directory (a snapshot or
reflink where the filesystem has them). Up steps go in place: the newer server opens the data and
its upgrade tool converts the system tables (upgrade.py). Down steps, and up steps with
`method = "logical"`, go through a dump loaded into a fresh data directory of the other version,
compared with the fingerprint before it replaces anything (logical.py). The version of the data
is read offline from the upgrade-info file the server keeps in the data directory.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import tree_digest, tree_size
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate_mysql import installation, record, versions
from nixos_migrate_mysql.settings import MysqlSettings

EXPECTED = "expected.json"
#: written by restore for the verify that follows it
RESTORED = "restored.json"


@hookimpl
def settings_model() -> type[MysqlSettings]:
    return MysqlSettings


@hookimpl
def detect_version(service: Service) -> str | None:
    s = installation.settings_of(service)
    if not installation.has_data(s.data_dir):
        return None
    other = installation.foreign(s.data_dir)
    if other is not None:
        raise MigrateError(f"{s.data_dir} holds {other}", hint="settings.data_dir must be the MySQL/MariaDB datadir")
    release = installation.upgrade_info(s.data_dir) or installation.redo_log_creator(s.data_dir)
    if release is not None:
        return versions.series_of(release)
    version = service.journal_version or s.initial_version
    if version is None:
        raise MigrateError(
            f"cannot tell which MySQL/MariaDB version wrote {s.data_dir}: no upgrade-info file, no redo log header",
            hint="set settings.initial_version (e.g. '8.0'); later steps are recorded in the journal",
        )
    return version


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    versions.key(target)
    if current is None or current == target:
        return []
    s = installation.settings_of(service)
    installation.prefix(s, target)  # a version without a package is a usage error, named
    if versions.key(target) < versions.key(current):
        return [
            Step(
                current,
                target,
                "down",
                f"dump of {versions.label(current)} loaded into a fresh {versions.label(target)} data directory",
                warning=versions.crossing_warning(current, target),
                data={"method": "logical"},
            )
        ]
    logical = s.method == "logical"
    hops = versions.path(current, target, set(s.packages), logical=logical)
    steps = []
    for a, b in itertools.pairwise(hops):
        if logical:
            what = f"dump of {versions.label(a)} loaded into a fresh {versions.label(b)} data directory"
        elif versions.self_upgrading(b):
            what = f"{versions.label(b)} opens the data and upgrades it as it starts"
        else:
            what = f"{versions.label(b)} opens the data, {installation.TOOLS['upgrade'][0]} converts the system tables"
        steps.append(Step(a, b, "up", what, warning=versions.crossing_warning(a, b), data={"method": s.method}))
    return steps


def _needed(step: Step) -> list[tuple[str, str]]:
    """(version, tool kind) the step runs."""
    source, target = step.from_version or "", step.to_version
    if step.data.get("method") == "logical" or step.direction == "down":
        init = "install-db" if versions.is_mariadb(target) or versions.key(target) < (5, 7) else "server"
        return [(source, "server"), (source, "dump"), (target, "server"), (target, "client"), (target, init)]
    tools = [(source, "server"), (target, "server")]
    if not versions.self_upgrading(target):
        tools.append((target, "upgrade"))
    return tools


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    s = installation.settings_of(service)
    missing = []
    for version, kind in _needed(step):
        try:
            installation.tool(installation.prefix(s, version), kind)
        except MigrateError as exc:
            missing.append(exc.message)
    checks = [Check("binaries of both versions", not missing, "; ".join(dict.fromkeys(missing)))]
    other = installation.foreign(s.data_dir) if installation.has_data(s.data_dir) else "nothing (it is empty)"
    detail = f"{s.data_dir} holds {other}" if other else str(s.data_dir)
    checks.append(Check("data directory holds MySQL/MariaDB data", other is None, detail))
    unit = service.control.unit
    active = bool(unit) and service.control.is_active()
    pid = None if active else installation.running_pid(s)
    if active:
        checks.append(Check("server stopped before the step", True, f"{unit} runs now; `up` stops it first"))
    else:
        checks.append(
            Check(
                "server not running",
                pid is None,
                f"pid {pid} holds {s.data_dir}; stop it, or set `unit` so that `up` stops it" if pid else "",
            )
        )
    if other is not None:
        return checks
    logical = step.direction == "down" or step.data.get("method") == "logical"
    if logical:
        mount = os.path.ismount(s.data_dir)
        checks.append(
            Check(
                "data directory can be replaced",
                not mount,
                f"{s.data_dir} is a mount point: a logical copy builds the new one beside it and renames it;"
                " make data_dir a directory inside the mount"
                if mount
                else "",
            )
        )
        need = tree_size(s.data_dir) * 2 + (256 << 20)  # the copy, its redo log and room to spare
        free = shutil.disk_usage(s.data_dir.parent).free
        checks.append(
            Check(
                f"room beside {s.data_dir} for the copy",
                free >= need,
                f"{free >> 20} MiB free, {need >> 20} MiB needed",
            )
        )
        first = detect_version(service) == step.from_version  # a later step's data exists only then
        if first and not active and pid is None and not missing and not mount:
            from nixos_migrate_mysql import logical as logical_copy

            checks.append(logical_copy.precheck(service, step))
    if not versions.is_mariadb(step.to_version) and versions.key(step.to_version) >= (8, 0) and not logical:
        partitioned = sorted(p.parent.name + "." + p.stem for p in s.data_dir.glob("*/*.par"))
        checks.append(
            Check(
                f"{versions.label(step.to_version)} can open every table",
                not partitioned,
                "partitioned tables of engines other than InnoDB (MySQL 8 dropped them): "
                + ", ".join(partitioned[:10]),
            )
        )
    return checks


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    s = installation.settings_of(service)
    return filebackup.estimate([s.data_dir])


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    from nixos_migrate_mysql import content, logical, server

    s = installation.settings_of(service)
    server.stop_leftovers(service)
    logical.clear_leftovers(s.data_dir)
    record.discard(service)
    # the files first, as the service left them: a server start rewrites some of them, and a
    # restore must give back exactly what was there; they go to disk while the old server runs
    with filebackup.backing_up(
        [s.data_dir], service.private_dir(dest / "files"), service.run, service.progress
    ) as files:
        version = step.from_version or ""
        logical_step = step.direction == "down" or step.data.get("method") == "logical"
        # a logical step's check fingerprinted these very files (a read-only server); an in-place
        # step needs its own server here anyway, for the slow shutdown the upgrade wants
        expected = record.checked_fingerprint(service, s.data_dir, logical.step_key(step)) if logical_step else None
        if expected is None:
            with (
                server.running(service, version, s.data_dir, slow_shutdown=True) as source,
                service.progress.task(f"fingerprint of {versions.label(version)}'s data"),
            ):
                expected = content.fingerprint(source, service.run.identity.name, s.jobs, installation.sampled(s, step))
    info = files.result()
    (dest / EXPECTED).write_text(json.dumps(expected))
    (service.state_dir / EXPECTED).write_text(json.dumps(expected))
    detail = {**info.detail, "version": version, "objects": len(expected), "digest": content.digest(expected)}
    return BackupInfo(info.kind, dest, info.size, info.checksum, detail)


def _expected(service: Service) -> dict[str, str]:
    path = service.state_dir / EXPECTED
    if not path.is_file():
        raise MigrateError(f"no fingerprint of the data before the step ({path})", hint="run the step again")
    return dict(json.loads(path.read_text()))


@hookimpl
def up(service: Service, step: Step) -> bool:
    from nixos_migrate_mysql import logical, upgrade

    if step.data.get("method") == "logical":
        logical.copy(service, step.from_version or "", step.to_version, _expected(service), _sampled(service, step))
    else:
        upgrade.in_place(service, step, _expected(service))
    return True


@hookimpl
def down(service: Service, step: Step) -> bool:
    from nixos_migrate_mysql import logical

    logical.copy(service, step.from_version or "", step.to_version, _expected(service), _sampled(service, step))
    return True


def _sampled(service: Service, step: Step) -> bool:
    return installation.sampled(installation.settings_of(service), step)


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    from nixos_migrate_mysql import logical, server

    s = installation.settings_of(service)
    server.stop_leftovers(service)
    logical.clear_leftovers(s.data_dir)
    record.discard(service)
    filebackup.restore_paths(backup, service.run, service.progress)
    saved = Path(backup.path) / EXPECTED
    if saved.is_file():
        shutil.copyfile(saved, service.state_dir / EXPECTED)
    slots = [dict(slot) for slot in backup.detail.get("slots", []) if slot.get("path") == str(s.data_dir)]
    if slots and slots[0].get("kind") != filebackup.ZFS:
        (service.state_dir / RESTORED).write_text(json.dumps(slots[0]))
    return True


def _restored_files(service: Service) -> Check | None:
    """Right after a restore: the data directory against the backup, byte for byte, instead of a
    server start (which would rewrite some of the files the restore just put back)."""
    marker = service.state_dir / RESTORED
    if service.step is None or not marker.is_file():
        marker.unlink(missing_ok=True)
        return None
    slot = json.loads(marker.read_text())
    marker.unlink()
    s = installation.settings_of(service)
    same = tree_digest(s.data_dir) == tree_digest(Path(slot["location"]))
    return Check(
        "restored files equal the backup",
        same,
        f"{s.data_dir} as in {slot['location']} ({slot['kind']}), byte for byte" if same else "they differ",
    )


@hookimpl
def verify(service: Service) -> list[Check]:
    from nixos_migrate_mysql import content, server

    s = installation.settings_of(service)
    restored = _restored_files(service)
    if restored is not None:
        return [restored]
    version = detect_version(service)
    if version is None:
        return [Check("data present", False, f"no data in {s.data_dir}")]
    recorded = record.take(service, s.data_dir, version)
    if recorded is not None:
        return recorded
    checks = []
    try:
        with server.running(service, version, s.data_dir) as running:
            checks.append(Check("server starts", True, f"{versions.label(version)} on {s.data_dir}"))
            checks += content.system_tables(running)
            databases = content.user_databases(running)
            # compared with the fingerprint before the step, read as deep as that one was
            sample = installation.sampled(s, service.step)
            checks.append(content.check_tables(running, databases, sample))
            found = content.fingerprint(running, service.run.identity.name, s.jobs, sample)
    except Exception as exc:  # a refused login or a lost connection is the finding, named
        message = exc.message if isinstance(exc, MigrateError) else f"{type(exc).__name__}: {exc}"
        return [*checks, Check("server starts and answers", False, message)]
    expected_file = service.state_dir / EXPECTED
    if service.step is not None and expected_file.is_file():
        checks.append(content.compare(json.loads(expected_file.read_text()), found))
    else:
        tables = sum(1 for k in found if k.startswith("table "))
        checks.append(
            Check("content", True, f"{len(databases)} databases, {tables} tables, digest {content.digest(found)}")
        )
    return checks
