"""The `redis` plugin: Redis 6.0-8.x and Valkey, one service per server (`services.redis.servers.NAME`).

A newer server loads an older one's files, an older one refuses a newer format. So an up step
lets the newer server load the data on a private socket, compares its content with the
fingerprint taken before, saves it in its own format (and rewrites the AOF into its own layout),
and stops. A down step (and a crossing to a Valkey that cannot read Redis 7.4+'s format) rewrites
a snapshot of 7.2+ offline in the older format (transcode.py) and lets the older server load and
compare it; where that cannot be (an AOF, a 6.x target, a key the rewrite does not carry) it
starts both servers and copies every key by type into a fresh directory of the older one
(copy.py). Either way it compares, and puts the older files in place of the newer ones. Before
either, `backup` copies the data directory (a snapshot or reflink where the filesystem has them)
and takes the fingerprint (content.py).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixos_migrate import checkrecord, filebackup, processes
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import tree_size
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate_redis import datafiles, installation, versions
from nixos_migrate_redis.settings import RedisSettings

if TYPE_CHECKING:  # imported when a server runs: the CLI's start stays light
    from nixos_migrate_redis.server import Server
    from nixos_migrate_redis.workers import Workers

EXPECTED = "expected.json"
#: written by check when the target of a down step can hold every key, with the files' stamp
HOLDS = "holds.json"


@hookimpl
def settings_model() -> type[RedisSettings]:
    return RedisSettings


@hookimpl
def detect_version(service: Service) -> str | None:
    return installation.data_version(service)


def _method(current: str, target: str) -> str:
    return "load" if versions.key(target) > versions.key(current) else "logical"


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    versions.key(target)
    if current is None or current == target:
        return []
    s = installation.settings_of(service)
    installation.prefix(s, target)  # a version without a package is a usage error, named
    if versions.key(target) < versions.key(current):
        what = f"every key of {versions.label(current)} copied by type into a fresh {versions.label(target)} directory"
        return [Step(current, target, "down", what, warning=versions.crossing_warning(current, target),
                     data={"method": "logical"})]  # fmt: skip
    steps = []
    hops = versions.path(current, target, s.packages)
    for a, b in itertools.pairwise(hops):
        what = f"{versions.label(b)} loads the data of {versions.label(a)} and saves it in its own format"
        steps.append(Step(a, b, "up", what, warning=versions.crossing_warning(a, b), data={"method": "load"}))
    return steps


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    s = installation.settings_of(service)
    source, target = step.from_version or "", step.to_version
    missing = []
    for version in (source, target):
        try:
            installation.release(installation.prefix(s, version), version)
        except MigrateError as exc:
            missing.append(exc.message)
    checks = [Check("binaries of both versions", not missing, "; ".join(dict.fromkeys(missing)))]
    other = datafiles.foreign(s.data_dir) if s.data_dir.is_dir() else "nothing (it does not exist)"
    checks.append(Check("data directory holds Redis/Valkey data", other is None,
                        f"{s.data_dir} holds {other}" if other else str(s.data_dir)))  # fmt: skip
    if other is not None:
        return checks
    unit = service.control.unit
    active = bool(unit) and service.control.is_active()
    pids = [] if active else processes.working_in(s.data_dir, (b"redis-server", b"valkey-server"))
    if active:
        checks.append(Check("server stopped before the step", True, f"{unit} runs now; `up` stops it first"))
    else:
        detail = f"pid {', '.join(map(str, pids))} works in {s.data_dir}; stop it, or set `unit` so that `up` stops it"
        checks.append(Check("server not running", not pids, detail if pids else ""))
    found = installation.layout(s)
    size = sum(tree_size(p) if p.is_dir() else p.stat().st_size for p in _data_files(s) if p.exists())
    # up: a new snapshot and a rewritten AOF beside the old ones; down: the copy beside them
    need = size * 2 + (64 << 20)
    free = shutil.disk_usage(s.data_dir).free
    checks.append(Check(f"room in {s.data_dir} for the new files", free >= need,
                        f"{free >> 20} MiB free, {need >> 20} MiB needed"))  # fmt: skip
    first = installation.data_version(service) == source  # a later step's data exists only then
    if step.data.get("method") == "logical" and first and not found.empty and not missing and not active and not pids:
        from nixos_migrate_redis import content, copy, server

        label = f"fingerprint of {versions.label(source)}"
        by_commands = not _rewritable(s, target)
        with server.running(service, source, s.data_dir, appendonly=installation.appendonly(s, found)) as running:
            if _depth(s, step) == "full":  # one pass: what the target cannot hold, and the fingerprint
                seen = copy.Refusals(running, target, by_commands=by_commands)
                expected = content.fingerprint(running, s.batch, service.progress, label, each=seen.see)
                problems = seen.found()
            else:
                problems = copy.refusals(running, target, s.batch, service.progress, by_commands=by_commands)
                expected = content.sampled(running, s.batch, service.progress, label)
        checks.append(Check(f"{versions.label(target)} can hold every key", not problems, "; ".join(problems)))
        if not problems:
            # the step and its backup read the same files: neither looks again unless they changed
            checkrecord.note(service, HOLDS, _stamped(s), target, expected)
    return checks


def _data_files(s: RedisSettings) -> list[Path]:
    """What the server keeps of the data in its directory (NixOS also keeps redis.conf there)."""
    return [s.data_dir / s.dbfilename, s.data_dir / s.appenddirname, s.data_dir / s.appendfilename]


def _checked(service: Service, target: str, *, used: bool) -> dict[str, Any] | None:
    """The fingerprint check took when it found that `target` can hold every key of the files as
    they are now, else None; `used`: the record is gone after (the step's own look)."""
    found = checkrecord.noted(service, HOLDS, _stamped(installation.settings_of(service)), target, keep=not used)
    return None if found is None else dict(found)


def _stamped(s: RedisSettings) -> list[Path]:
    """The files a server writes when it runs on the data (checkrecord's stamp)."""
    aof_dir = s.data_dir / s.appenddirname
    return [
        s.data_dir / s.dbfilename,
        s.data_dir / s.appendfilename,
        *(sorted(aof_dir.iterdir()) if aof_dir.is_dir() else []),
    ]


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    s = installation.settings_of(service)
    return filebackup.estimate([s.data_dir])


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    from nixos_migrate_redis import content, server

    s = installation.settings_of(service)
    _clear_staging(s)
    checkrecord.discard(service)
    version = step.from_version or ""
    # the copy goes to disk and is summed while the old server reads the data
    with filebackup.backing_up(
        [s.data_dir], service.private_dir(dest / "files"), service.run, service.progress
    ) as files:
        appendonly = installation.appendonly(s)
        expected = _checked(service, step.to_version, used=False) if step.data.get("method") == "logical" else None
        if expected is None:
            take = content.sampled if _depth(s, step) == "sample" else content.fingerprint
            with server.running(service, version, s.data_dir, appendonly=appendonly) as source:
                expected = take(source, s.batch, service.progress, f"fingerprint of {versions.label(version)}")
    info = files.result()
    (dest / EXPECTED).write_text(json.dumps(expected))
    (service.state_dir / EXPECTED).write_text(json.dumps(expected))
    detail = {**info.detail, "version": version, "content": content.summary(expected)}
    return BackupInfo(info.kind, dest, info.size, info.checksum, detail)


def _depth(s: RedisSettings, step: Step) -> str:
    """How much of the data the backup's fingerprint digests: a sample unless `verify_depth` says
    full. A load step reads the files the old server wrote (counts exact, a sample in detail); a
    logical step compares every key of its copy with what it read, and the copy with the sample."""
    return "full" if s.verify_depth == "full" else "sample"


def _expected(service: Service) -> dict[str, Any]:
    path = service.state_dir / EXPECTED
    if not path.is_file():
        raise MigrateError(f"no fingerprint of the data before the step ({path})", hint="run the step again")
    return dict(json.loads(path.read_text()))


def _compared(running: Server, service: Service, expected: dict[str, Any], what: str) -> Check:
    from nixos_migrate_redis import content

    s = installation.settings_of(service)
    if expected.get("depth") == "sample":
        with service.progress.task(what):
            return content.compare_sampled(expected, running, s.batch)
    since = int(time.time() * 1000)
    found = content.fingerprint(running, s.batch, service.progress, what)
    return content.compare(expected, found, since)


@hookimpl
def up(service: Service, step: Step) -> bool:
    from nixos_migrate_redis import server

    s = installation.settings_of(service)
    target = step.to_version
    with server.running(service, target, s.data_dir, appendonly=installation.appendonly(s)) as running:
        check = _compared(running, service, _expected(service), f"content as {versions.label(target)} loaded it")
        if not check.ok:
            raise MigrateError(f"{versions.label(target)} loaded other content than was there: {check.detail}")
        with service.progress.task(f"save in {versions.label(target)}'s format"):
            running.save()
    _record(service, target, check)
    return True


def _record(service: Service, version: str, check: Check) -> None:
    """The checks the step ran on the data it leaves, for the verify that follows (checkrecord):
    it saved what it compared, and stopped without writing anything after."""
    s = installation.settings_of(service)
    loaded = Check("server loads the data", True, f"{versions.label(version)} on {s.data_dir}")
    checkrecord.keep(service, _stamped(s), version, [loaded, check])


def _staging(s: RedisSettings) -> Path:
    return s.data_dir / ".nixos-migrate-copy"


def _clear_staging(s: RedisSettings) -> None:
    shutil.rmtree(_staging(s), ignore_errors=True)


@hookimpl
def down(service: Service, step: Step) -> bool:
    from nixos_migrate_redis import transcode

    s = installation.settings_of(service)
    source, target = step.from_version or "", step.to_version
    _clear_staging(s)
    staging = service.private_dir(_staging(s))
    check: Check | None = None
    why = None
    if _rewritable(s, target):
        try:
            check = _rewritten(service, target, staging)
        except transcode.Unconvertible as exc:
            why = f"{exc.message}; every key is copied by type instead"
            service.progress.log(why)
            _clear_staging(s)
            staging = service.private_dir(_staging(s))
    if check is None:
        # after a rewrite that could not be, check's look (made for the rewrite) is not the copy's
        check = _copied(service, source, target, staging, checked=why is None)
        if why is not None:  # said where the step's checks are read, not only where its progress is watched
            check = Check(check.name, check.ok, f"{check.detail} ({why})")
    _swap(s, staging)
    _record(service, target, check)
    return True


def _rewritable(s: RedisSettings, target: str) -> bool:
    """Whether the data is one snapshot (no AOF) of a format the rewrite reads, for a target
    whose format it writes."""
    from nixos_migrate_redis import transcode

    found = installation.layout(s)
    if installation.appendonly(s, found) or found.rdb is None or found.aof is not None or found.newest is None:
        return False
    return transcode.convertible(found.newest.rdb_version, versions.RDB[target])


def _rewritten(service: Service, target: str, staging: Path) -> Check:
    """The snapshot rewritten in the target's format into `staging`, loaded by the target's
    server and compared with the backup's fingerprint; the check."""
    from nixos_migrate_redis import server, transcode

    s = installation.settings_of(service)
    release = installation.release(installation.prefix(s, target), target)
    dest = staging / s.dbfilename
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    if os.geteuid() == 0:
        os.fchown(fd, service.run.identity.uid, service.run.identity.gid)
    os.close(fd)
    writer = (versions.flavour(target), release)
    done = transcode.convert(s.data_dir / s.dbfilename, dest, versions.RDB[target], writer, service.progress)
    with server.running(service, target, staging, appendonly=False, name="target") as new:
        what = f"content as {versions.label(target)} loaded the rewritten snapshot"
        check = _compared(new, service, _expected(service), what)
    if not check.ok:
        raise MigrateError(f"{versions.label(target)} loaded other content than was there: {check.detail}")
    rewritten = f"{done.sets} packed sets and {done.streams} streams written anew, the rest copied as it was"
    return Check(what, True, f"{check.name}: {check.detail}; {rewritten}")


def _copied(service: Service, source: str, target: str, staging: Path, *, checked: bool) -> Check:
    """Every key copied by type from the source's server into the target's on `staging`,
    compared, saved; the check. `checked`: check's look at what the target cannot hold, when the
    files kept their stamp, stands for the copy's."""
    from nixos_migrate_redis import copy, server, workers

    s = installation.settings_of(service)
    appendonly = installation.appendonly(s)
    held = _checked(service, target, used=True) is not None and checked
    with server.running(service, source, s.data_dir, appendonly=appendonly) as old:
        problems = [] if held else copy.refusals(old, target, s.batch, service.progress)
        if problems:
            raise MigrateError(f"{versions.label(target)} cannot hold: {'; '.join(problems)}")
        with (
            server.running(service, target, staging, appendonly=appendonly, name="target") as new,
            workers.Workers(s.jobs) as pool,
        ):
            read = copy.copy(old, new, s.batch, pool, service.progress)
            # the snapshot is written by a fork while the comparison reads the same keys
            check = new.saved_during(lambda: _copy_compared(new, service, read, pool))
            if not check.ok:
                raise MigrateError(f"the copy into {versions.label(target)} differs: {check.detail}")
    return check


def _copy_compared(new: Server, service: Service, read: dict[str, Any], pool: Workers) -> Check:
    """Every key of the copy, digested by its server, against every key as the copy read it; and
    the copy against the backup's fingerprint (the data the copy read is the data the backup holds,
    digested by the servers on both sides)."""
    from nixos_migrate_redis import content, workers

    s = installation.settings_of(service)
    expected = _expected(service)
    since = int(time.time() * 1000)
    what = f"content of the {versions.label(new.version)} copy"
    written = workers.fingerprint(new, s.batch, pool, service.progress, what)
    copied = content.compare(read, written, since)
    if expected.get("depth") == "sample":
        backed = content.compare_sampled(expected, new, s.batch)
    else:
        backed = content.compare(expected, written, since)
    failed = [c.detail for c in (copied, backed) if not c.ok]
    if failed:
        return Check(copied.name, False, "; ".join(failed))
    return Check(copied.name, True, f"{copied.detail}, every key as read; the backup's fingerprint: {backed.detail}")


def _swap(s: RedisSettings, staging: Path) -> None:
    """The staged data files in place of the old ones (the backup holds those)."""
    for path in _data_files(s):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    for path in _data_files(s):
        staged = staging / path.name
        if staged.exists():
            staged.rename(path)
    shutil.rmtree(staging)
    fd = os.open(s.data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    s = installation.settings_of(service)
    _clear_staging(s)
    checkrecord.discard(service)
    filebackup.restore_paths(backup, service.run, service.progress)
    saved = Path(backup.path) / EXPECTED
    if saved.is_file():
        shutil.copyfile(saved, service.state_dir / EXPECTED)
    return True


@hookimpl
def verify(service: Service) -> list[Check]:
    from nixos_migrate_redis import content, server

    s = installation.settings_of(service)
    version = installation.data_version(service)
    if version is None:
        return [Check("data present", False, f"no data in {s.data_dir}")]
    recorded = checkrecord.take(service, _stamped(s), version)
    if recorded is not None:
        return recorded
    checks = []
    try:
        with server.running(service, version, s.data_dir, appendonly=installation.appendonly(s)) as running:
            persistence = running.info("persistence")
            loaded = not persistence.get("loading") and persistence.get("aof_last_write_status", "ok") == "ok"
            checks.append(Check("server loads the data", loaded, f"{versions.label(version)} on {s.data_dir}"))
            expected_file = service.state_dir / EXPECTED
            if service.step is not None and expected_file.is_file():
                expected = json.loads(expected_file.read_text())
                checks.append(_compared(running, service, expected, "content against the fingerprint"))
            else:
                found = content.fingerprint(running, s.batch, service.progress, "content")
                checks.append(Check("content", True, content.summary(found)))
    except MigrateError as exc:
        return [*checks, Check("server loads the data", False, exc.message)]
    return checks
