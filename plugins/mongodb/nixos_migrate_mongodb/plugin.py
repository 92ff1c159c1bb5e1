"""The `mongodb` plugin: MongoDB 4.4-8.0 on a standalone mongod, one major at a time.

The version of the data is its featureCompatibilityVersion (FCV), read by starting a mongod of
the packages on it (versions.py says which majors open which FCV). An up step starts the next
major's mongod on the data, raises the FCV (with `confirm: true` from 7.0), validates every
collection and compares the content with the fingerprint taken before. A down step below 7.0
lowers the FCV on the newer mongod and starts the older one on the data; from 7.0 on, Community
builds have no binary downgrade, so the down step restores the backup taken before the matching
up step (after `--accept-data-loss`). Every backup is a file copy of the dbpath (exact, O(1) on
snapshotting filesystems) and a logical dump (mongodump's archive, or the plugin's own pymongo
dump in mongodump's layout) that a restore falls back to when the copy is damaged.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

from nixos_migrate import checkrecord, filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.fingerprint import tree_digest, tree_size
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate_mongodb import installation, rolling, versions
from nixos_migrate_mongodb.settings import MongoSettings

EXPECTED = "expected.json"
#: the FCV found on the data, with the stamp of its files then (a mongod start costs seconds)
DETECTED = "detected.json"
DUMP = "dump"
STAGING = ".nixos-migrate-restore"


@hookimpl
def settings_model() -> type[MongoSettings]:
    return MongoSettings


def _stamped(s: MongoSettings) -> list[Path]:
    """The files at the top of the dbpath: every start, checkpoint and stop of mongod writes
    some of them (WiredTiger.turtle, mongod.lock) — checkrecord's and the detection's stamp."""
    if not s.db_path.is_dir():
        return []
    return sorted(p for p in s.db_path.iterdir() if p.is_file())


def _remember(service: Service, fcv: dict[str, str], binary: str) -> None:
    s = installation.settings_of(service)
    payload = {"stamp": checkrecord.stamp(_stamped(s)), "fcv": fcv, "binary": binary}
    (service.state_dir / DETECTED).write_text(json.dumps(payload))


def _forget(service: Service) -> None:
    (service.state_dir / DETECTED).unlink(missing_ok=True)


def _candidates(service: Service) -> list[str]:
    """Majors to start on the data to read its FCV: the one that last ran, then newest first."""
    s = installation.settings_of(service)
    order = [service.journal_version, s.initial_version, *sorted(s.packages, key=versions.key, reverse=True)]
    return [v for v in dict.fromkeys(order) if v is not None and v in s.packages]


def read_fcv(service: Service) -> dict[str, str] | None:
    """The FCV document of the data (`version`, and `targetVersion`/`previousVersion` while a
    change of it is unfinished); None when there is no data."""
    from nixos_migrate_mongodb import server

    s = installation.settings_of(service)
    installation.check_dir(s.db_path)
    if not installation.has_data(s.db_path):
        return None
    path = service.state_dir / DETECTED
    known = json.loads(path.read_text()) if path.is_file() else None
    if known is not None and known["stamp"] == checkrecord.stamp(_stamped(s)):
        return dict(known["fcv"])
    pid = installation.running_pid(s.db_path)
    if pid is not None:
        hint = "stop it (the unit) to let nixos-migrate read the FCV, or set settings.initial_version"
        last = service.journal_version or s.initial_version or (known and known["fcv"]["version"])
        if last:
            return {"version": str(last)}
        raise MigrateError(f"mongod (pid {pid}) works on {s.db_path}: its FCV cannot be read offline", hint=hint)
    failures = []
    for version in _candidates(service):
        try:
            with server.running(service, version, s.db_path, name="detect") as running:
                fcv = running.fcv()
        except MigrateError as exc:
            failures.append(f"mongod {version}: {exc.message.splitlines()[-1]}")
            continue
        _remember(service, fcv, version)
        return fcv
    if not failures:
        raise UsageError(f"{s.db_path} holds MongoDB data and settings.packages has no mongod to read it with")
    raise MigrateError(
        f"no mongod of settings.packages starts on {s.db_path}: {'; '.join(failures)}",
        hint="add the package of the major that last ran on the data (its FCV must be that major or the one before)",
    )


@hookimpl
def detect_version(service: Service) -> str | None:
    fcv = read_fcv(service)
    return None if fcv is None else versions.major(fcv["version"])


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    versions.key(target)
    if current is None or current == target:
        return []
    s = installation.settings_of(service)
    steps = []
    for a, b in itertools.pairwise(versions.between(current, target)):
        order = {"rolling": rolling.order(a, b, s.replica_set)} if s.replica_set else {}
        if versions.key(b) > versions.key(a):
            confirm = " with confirm: true" if versions.needs_confirm(b) else ""
            what = f"mongod {b} on the data of {a}, then setFeatureCompatibilityVersion {b!r}{confirm}"
            steps.append(Step(a, b, "up", what, resumable=True, data={"method": "binary", **order}))
        elif versions.binary_downgrade(a):
            what = f"setFeatureCompatibilityVersion {b!r} on mongod {a}, then mongod {b} on the data"
            steps.append(Step(a, b, "down", what, resumable=True, data={"method": "fcv", **order}))
        else:
            what = (f"restore the backup taken before {b} -> {a}: Community builds of MongoDB {a} have no "
                    "binary downgrade")  # fmt: skip
            steps.append(Step(a, b, "down", what, via_backup=True, data={"method": "restore", **order}))
    return steps


def _binaries(s: MongoSettings, step: Step) -> Check:
    needed = [step.to_version] if step.via_backup else [step.from_version or "", step.to_version]
    problems = []
    for version in needed:
        try:
            installation.release(s, version)
        except MigrateError as exc:
            problems.append(exc.message)
    return Check(f"mongod of {' and '.join(needed)}", not problems, "; ".join(problems))


def _fcv_gate(service: Service, step: Step) -> Check:
    """Before a binary swap the FCV must be the old major, with no change of it unfinished."""
    major = step.from_version or ""
    fcv = read_fcv(service) or {}
    found = fcv.get("version")
    unfinished = fcv.get("targetVersion") or fcv.get("previousVersion")
    name = f"featureCompatibilityVersion is {major}"
    if fcv == {"version": major, "targetVersion": step.to_version} and step.direction == "up":
        return Check(name, True, f"{major}, on its way to {step.to_version}: the step finishes that change")
    if unfinished:
        going = fcv.get("targetVersion") or ""
        # the change runs on the newer of the two majors, which alone opens the data meanwhile
        binary = max((v for v in (found, going, fcv.get("previousVersion")) if v), key=versions.key)
        came = fcv.get("previousVersion") or found
        return Check(name, False, f"a change of the FCV from {came} to {going} was interrupted: finish it with "
                     f"setFeatureCompatibilityVersion {going!r} on mongod {binary}, then run again")  # fmt: skip
    if found != major:
        return Check(name, False, f"the data's FCV is {found}: raise it to {major} first (or plan from {found})")
    return Check(name, True, f"{found}")


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    s = installation.settings_of(service)
    checks = []
    if s.replica_set:
        detail = (f"member of replica set {s.replica_set!r}: upgrade the set in the rolling order `plan --json` "
                  "gives (steps[].data.rolling); the plugin performs standalone servers only")  # fmt: skip
        checks.append(Check("standalone server", False, detail))
    checks.append(_binaries(s, step))
    try:
        installation.check_dir(s.db_path)
        checks.append(Check("dbpath holds MongoDB data or nothing", True, str(s.db_path)))
    except UsageError as exc:
        return [*checks, Check("dbpath holds MongoDB data or nothing", False, exc.message)]
    unit = service.control.unit
    active = bool(unit) and service.control.is_active()
    pid = None if active else installation.running_pid(s.db_path)
    if active:
        checks.append(Check("mongod stopped before the step", True, f"{unit} runs now; the step stops it first"))
    else:
        detail = f"mongod (pid {pid}) works on {s.db_path}; stop it, or set `unit` so that the step stops it"
        checks.append(Check("mongod not running", pid is None, detail if pid else ""))
    first = not step.via_backup and installation.has_data(s.db_path) and detect_version(service) == step.from_version
    if first and not active and pid is None:
        checks.append(_fcv_gate(service, step))
    if s.db_path.is_dir():
        # a binary swap rewrites the catalog and checkpoints: room for a tenth of the data
        need = tree_size(s.db_path) // 10 + (64 << 20)
        free = shutil.disk_usage(s.db_path).free
        checks.append(Check(f"room in {s.db_path}", free >= need, f"{free >> 20} MiB free, {need >> 20} MiB needed"))
    return checks


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    s = installation.settings_of(service)
    # the file copy (0 on a snapshotting filesystem) and a logical dump of about the data's size
    return filebackup.estimate([s.db_path]) + tree_size(s.db_path)


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    from nixos_migrate_mongodb import content, dump, server

    s = installation.settings_of(service)
    _clear_staging(s)
    checkrecord.discard(service)
    version = step.from_version or ""
    # the copy goes to disk and is summed while the old server reads and dumps the data
    with filebackup.backing_up(
        [s.db_path], service.private_dir(dest / "files"), service.run, service.progress
    ) as files:
        dump_dir = service.private_dir(dest / DUMP)
        tools = installation.dump_tools(s, version)
        # the data's own major, or the newer one while an FCV change it finishes is under way
        binary = _opener(s, read_fcv(service) or {"version": version})
        with server.running(service, binary, s.db_path) as running:
            # data the server already finds damaged is repaired first, not moved: after the step
            # nothing could tell its damage from the step's
            bad = content.invalid(running, service.progress)
            if bad:
                names = "; ".join(f"{name}: {errors}" for name, errors in bad.items())
                raise MigrateError(
                    f"MongoDB {version} finds {', '.join(bad)} invalid before the step ({names}); repair it first "
                    "(mongod --repair, or drop the collection and restore it from a dump)"
                )
            expected = content.fingerprint(running, service.progress, f"fingerprint of MongoDB {version}")
            if tools:
                with service.progress.task("mongodump --archive"):
                    dump.write_archive(service, tools, running, dump_dir)
            else:
                dump.write(running, dump_dir, service.progress)
    info = files.result()
    _forget(service)
    (dest / EXPECTED).write_text(json.dumps(expected))
    (service.state_dir / EXPECTED).write_text(json.dumps(expected))
    detail = {**info.detail, "version": version, "dump": "mongodump" if tools else "pymongo",
              "dump_digest": tree_digest(dump_dir), "content": content.summary(expected)}  # fmt: skip
    return BackupInfo(info.kind, dest, info.size + tree_size(dump_dir), info.checksum, detail)


def _expected(service: Service) -> dict[str, Any]:
    path = service.state_dir / EXPECTED
    if not path.is_file():
        raise MigrateError(f"no fingerprint of the data before the step ({path})", hint="run the step again")
    return dict(json.loads(path.read_text()))


def _checked(running: Any, service: Service, version: str) -> list[Check]:
    """The checks of data just moved to `version`: FCV, validate, content; a failed one fails
    the step (and so restores its backup)."""
    from nixos_migrate_mongodb import content

    fcv = running.fcv()
    checks = [
        Check("mongod starts on the data", True, f"MongoDB {version} on {running.db_path}"),
        Check(f"featureCompatibilityVersion is {version}", fcv == {"version": version}, json.dumps(fcv)),
        content.validate(running, service.progress),
        content.compare(_expected(service), content.fingerprint(running, service.progress, f"content as {version}")),
    ]
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    if failed:
        raise MigrateError(f"MongoDB {version}: {'; '.join(failed)}")
    return checks


def _keep(service: Service, version: str, checks: list[Check]) -> None:
    """After the last server of a step stopped: its checks for the verify that follows, and the
    FCV it left for detection."""
    s = installation.settings_of(service)
    checkrecord.keep(service, _stamped(s), version, checks)
    _remember(service, {"version": version}, version)


@hookimpl
def up(service: Service, step: Step) -> bool:
    from nixos_migrate_mongodb import server

    s = installation.settings_of(service)
    source, target = step.from_version or "", step.to_version
    _forget(service)
    with server.running(service, target, s.db_path) as running:
        fcv = running.fcv()
        # a step resumed after a crash in setFeatureCompatibilityVersion finds it half done:
        # the same command finishes it
        if fcv not in ({"version": source}, {"version": source, "targetVersion": target}, {"version": target}):
            raise MigrateError(f"mongod {target} found FCV {json.dumps(fcv)} on the data, not {source}")
        if fcv != {"version": target}:
            with service.progress.task(f"setFeatureCompatibilityVersion {target}"):
                running.set_fcv(target, confirm=versions.needs_confirm(target))
        checks = _checked(running, service, target)
    _keep(service, target, checks)
    return True


@hookimpl
def down(service: Service, step: Step) -> bool:
    from nixos_migrate_mongodb import server

    s = installation.settings_of(service)
    source, target = step.from_version or "", step.to_version
    if not versions.binary_downgrade(source):
        raise MigrateError(f"MongoDB {source} has no binary downgrade; the step restores a backup instead")
    _forget(service)
    with server.running(service, source, s.db_path) as running:
        fcv = running.fcv()
        if fcv.get("targetVersion") not in (None, target) or fcv["version"] not in (source, target):
            raise MigrateError(f"mongod {source} found FCV {json.dumps(fcv)} on the data, not {source}")
        if fcv != {"version": target}:
            with service.progress.task(f"setFeatureCompatibilityVersion {target}"):
                running.set_fcv(target, confirm=versions.needs_confirm(source))
    with server.running(service, target, s.db_path) as running:
        checks = _checked(running, service, target)
    _keep(service, target, checks)
    return True


def _staging(s: MongoSettings) -> Path:
    return s.db_path / STAGING


def _clear_staging(s: MongoSettings) -> None:
    shutil.rmtree(_staging(s), ignore_errors=True)


def _restore_dump(service: Service, backup: BackupRecord) -> None:
    """The backup's logical dump loaded by a fresh mongod of the backup's major into a staging
    directory, then put in place of the dbpath's content."""
    from nixos_migrate_mongodb import dump, server

    s = installation.settings_of(service)
    source = Path(backup.path) / DUMP
    if not source.is_dir() or tree_digest(source) != backup.detail.get("dump_digest"):
        raise MigrateError(f"backup {backup.id}: its dump {source} is missing or does not match its checksum")
    version = backup.step.from_version or ""
    _clear_staging(s)
    staging = service.private_dir(_staging(s))
    tools = installation.dump_tools(s, version) if backup.detail.get("dump") == "mongodump" else None
    if backup.detail.get("dump") == "mongodump" and tools is None:
        raise MigrateError(
            f"backup {backup.id} is a mongodump archive and MongoDB {version}'s package has no mongorestore"
        )
    with server.running(service, version, staging, name="restore") as running:
        if tools:
            with service.progress.task("mongorestore --archive"):
                dump.load_archive(service, tools, running, source)
        else:
            dump.load(running, source, service.progress, s.batch)
    for path in s.db_path.iterdir():
        if path.name.startswith("."):
            continue  # the staging directory, and what is not mongod's (NixOS's .auth_setup_complete)
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in staging.iterdir():
        path.rename(s.db_path / path.name)
    staging.rmdir()


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    s = installation.settings_of(service)
    _clear_staging(s)
    checkrecord.discard(service)
    _forget(service)
    try:
        filebackup.restore_paths(backup, service.run, service.progress)
    except MigrateError as exc:
        if not (Path(backup.path) / DUMP).is_dir():
            raise
        service.progress.log(f"{exc.message}; restoring its logical dump instead")
        _restore_dump(service, backup)
    saved = Path(backup.path) / EXPECTED
    if saved.is_file():
        shutil.copyfile(saved, service.state_dir / EXPECTED)
    return True


def _opener(s: MongoSettings, fcv: dict[str, str]) -> str:
    """The oldest major of the packages whose mongod opens data with this FCV document (the FCV's
    own major, else the one after it; during a change of it, the newer of the two)."""
    values = [v for v in (fcv.get("version"), fcv.get("targetVersion"), fcv.get("previousVersion")) if v]
    for version in versions.MAJORS:
        if version in s.packages and all(versions.openable(version, v) for v in values):
            return version
    raise UsageError(f"settings.packages has no mongod that opens data of FCV {json.dumps(fcv)}")


@hookimpl
def verify(service: Service) -> list[Check]:
    from nixos_migrate_mongodb import content, server

    s = installation.settings_of(service)
    fcv = read_fcv(service)
    if fcv is None:
        return [Check("data present", False, f"no MongoDB data in {s.db_path}")]
    version = versions.major(fcv["version"])
    recorded = checkrecord.take(service, _stamped(s), version)
    if recorded is not None:
        return recorded
    binary = _opener(s, fcv)
    checks = []
    try:
        with server.running(service, binary, s.db_path) as running:
            checks.append(Check("mongod starts on the data", True, f"MongoDB {binary} on {s.db_path}"))
            found = running.fcv()
            checks.append(Check(f"featureCompatibilityVersion is {version}", found == {"version": version},
                                json.dumps(found)))  # fmt: skip
            checks.append(content.validate(running, service.progress))
            expected_file = service.state_dir / EXPECTED
            if service.step is not None and expected_file.is_file():
                expected = json.loads(expected_file.read_text())
                checks.append(content.compare(expected, content.fingerprint(running, service.progress, "content")))
            else:
                checks.append(
                    Check("content", True, content.summary(content.fingerprint(running, service.progress, "content")))
                )
    except MigrateError as exc:
        return [*checks, Check("mongod starts on the data", False, exc.message)]
    _forget(service)
    return checks
