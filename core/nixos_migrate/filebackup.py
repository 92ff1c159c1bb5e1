"""The file-level backup primitive plugins use for the directories of a stopped service.

For every directory it takes the fastest backup that is still exact, and restores the mirror way:

- `btrfs-snapshot` when the directory is a btrfs subvolume: a read-only snapshot, O(1); restored
  as a writable snapshot of it in place, O(1);
- `zfs-snapshot` when the directory is the mountpoint of a ZFS dataset and `zfs` is installed:
  `zfs snapshot`, O(1); restored with `zfs rollback`, O(1) — or, when later snapshots exist (a
  rollback would have to destroy them, and they may be other backups), copied back from the
  snapshot's `.zfs/snapshot/NAME` directory;
- `reflink` when the filesystem clones files (btrfs, XFS with reflink=1): `cp -a
  --reflink=always`, no data copied; restored as a clone back;
- `copy` anywhere else: `cp -a` (owners, modes, hard links, ACLs, xattrs); restored as a copy.

Snapshots and clones go into the backup's directory when it is on the same filesystem, else beside
the data (hidden, same filesystem). Each slot records its kind and location, so that restore and
`backups prune` know what to undo. Copies carry a checksum of their content, checked before a
restore; snapshots and clones share their blocks with the data and are not read again (btrfs
checksums its blocks itself, and nothing but nixos-migrate writes to them).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nixos_migrate.errors import CommandFailed, MigrateError
from nixos_migrate.fingerprint import tree_digest, tree_size
from nixos_migrate.model import BackupInfo, BackupRecord
from nixos_migrate.progress import Progress
from nixos_migrate.runner import CommandRunner

SNAPSHOT, ZFS, REFLINK, COPY, ABSENT = "btrfs-snapshot", "zfs-snapshot", "reflink", "copy", "absent"
#: kept for readers of older journals: backups written before per-slot kinds were all copies
KIND = COPY
_BTRFS_SUBVOLUME_ROOT_INODE = 256
_ZFS_TAKEN = ".zfs-snapshots"


@dataclass(frozen=True)
class Choice:
    path: Path
    kind: str
    why: str
    dataset: str | None = None
    """The ZFS dataset mounted at `path`, for `zfs-snapshot`."""


def _fs_type(path: Path) -> str:
    """The type of the filesystem holding `path` ("btrfs", "xfs", "ext4"...), from the mount table."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mountpoint = fields[1].encode().decode("unicode_escape")  # "\040" is a space
        inside = target == mountpoint or target.startswith(mountpoint.rstrip("/") + "/")
        if inside and len(mountpoint) >= len(best):
            best, kind = mountpoint, fields[2]
    return kind


def is_btrfs_subvolume(path: Path) -> bool:
    try:
        return path.is_dir() and path.stat().st_ino == _BTRFS_SUBVOLUME_ROOT_INODE and _fs_type(path) == "btrfs"
    except OSError:
        return False


def zfs_dataset(path: Path) -> str | None:
    """The ZFS dataset mounted exactly at `path`, when `zfs` is installed (asked of `zfs list`)."""
    if shutil.which("zfs") is None or not path.is_dir():
        return None
    result = subprocess.run(
        ["zfs", "list", "-H", "-o", "name,mountpoint", str(path)], capture_output=True, text=True, check=False
    )
    name, _, mountpoint = result.stdout.strip().partition("\t")
    if result.returncode != 0 or not name or os.path.realpath(mountpoint) != os.path.realpath(path):
        return None
    return name


def reflink_supported(directory: Path) -> bool:
    """Whether files in `directory` can be cloned (btrfs, XFS with reflink=1): probed, not guessed."""
    probe = directory / f".nixos-migrate-reflink-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"probe")
        return reflinks_between(probe, directory)
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def reflinks_between(source_file: Path, directory: Path) -> bool:
    """Whether `source_file` can be cloned into `directory` (one btrfs filesystem across its
    subvolumes, one XFS with reflink=1): probed with a clone that is removed at once."""
    clone = directory / f".nixos-migrate-reflink-probe-{os.getpid()}.clone"
    try:
        result = subprocess.run(
            ["cp", "--reflink=always", str(source_file), str(clone)], capture_output=True, check=False
        )
        return result.returncode == 0
    except OSError:
        return False
    finally:
        clone.unlink(missing_ok=True)


def choose(path: Path) -> Choice:
    """The kind of backup `path` gets, and why (shown by `plan`)."""
    if not path.exists() and not path.is_symlink():
        return Choice(path, ABSENT, "does not exist: nothing to keep, removed on restore")
    if is_btrfs_subvolume(path):
        return Choice(path, SNAPSHOT, "a btrfs subvolume: read-only snapshot, O(1)")
    if (dataset := zfs_dataset(path)) is not None:
        return Choice(path, ZFS, f"the mountpoint of ZFS dataset {dataset}: snapshot, O(1)", dataset)
    probe_dir = path if path.is_dir() else path.parent
    if reflink_supported(probe_dir):
        return Choice(path, REFLINK, f"{_fs_type(probe_dir)} clones files: reflink copy, no data copied")
    return Choice(path, COPY, f"{_fs_type(probe_dir) or 'this filesystem'} has no snapshots or reflinks: full copy")


def estimate(paths: Sequence[Path]) -> int:
    """Bytes the backup of `paths` takes in the backup directory: a copy needs the data's size plus
    1 % and 1 MiB; snapshots and clones need next to nothing."""
    total = 1 << 20
    for path in paths:
        if choose(path).kind == COPY:
            size = tree_size(path)
            total += size + size // 100
    return total


def _slot(dest: Path, index: int) -> Path:
    return dest / f"path-{index}"


def _beside(path: Path, dest: Path, index: int) -> Path:
    return path.parent / f".{path.name}.nixos-migrate-{dest.name}-{index}"


def _try(runner: CommandRunner, argv: list[str]) -> bool:
    try:
        runner.run(argv, as_root=True)
    except CommandFailed:
        return False
    return True


def _snapshot(runner: CommandRunner, path: Path, candidates: list[Path]) -> Path | None:
    for location in candidates:
        if _try(runner, ["btrfs", "subvolume", "snapshot", "-r", str(path), str(location)]):
            return location
    return None


def _clone(runner: CommandRunner, path: Path, candidates: list[Path]) -> Path | None:
    for location in candidates:
        if _try(runner, ["cp", "-a", "--reflink=always", "--", str(path), str(location)]):
            return location
        _remove(location)
    return None


def backup_paths(paths: Sequence[Path], dest: Path, runner: CommandRunner, progress: Progress) -> BackupInfo:
    """Back up every path in `paths` into (or, for snapshots and clones on another filesystem,
    beside) `dest`."""
    with backing_up(paths, dest, runner, progress) as files:
        pass
    return files.result()


class Finishing:
    """A backup whose files are in place, and what makes them a backup (on disk, a copy's size and
    checksum) under way in threads; `result` waits for them."""

    def __init__(self, slots: list[dict[str, str]], dest: Path, runner: CommandRunner, progress: Progress) -> None:
        self._slots, self._dest, self._progress = slots, dest, progress
        copies = [s for s in slots if s["kind"] == COPY]
        # on disk before the step may change the originals: a copy's pages, and a snapshot's or
        # clone's metadata (btrfs can persist a later fsync of the original before the transaction
        # holding the clone); syncfs costs what is dirty on those filesystems, next to nothing
        # after a clone (a ZFS snapshot is on disk when `zfs snapshot` returns: it waits for its
        # transaction group)
        located = sorted({s["location"] for s in slots if s["location"] and s["kind"] != ZFS})
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup")
        self._synced = (
            self._pool.submit(runner.run, ["sync", "--file-system", "--", *located], as_root=True) if located else None
        )
        # reading the copy back runs beside writing it out: both hash and sync release the GIL
        self._measured = self._pool.submit(
            lambda: (sum(tree_size(Path(s["location"])) for s in copies), _digest(copies) if copies else None)
        )

    def wait(self) -> None:
        """Both threads done (their failures kept for `result`)."""
        self._pool.shutdown(wait=True)

    def result(self) -> BackupInfo:
        """The backup's record once it is on disk and summed; raises what either thread raised."""
        pending = [f for f in (self._synced, self._measured) if f is not None and not f.done()]
        with self._progress.task("backup to disk, its checksum") if pending else contextlib.nullcontext():
            self.wait()
        if self._synced is not None:
            self._synced.result()
        size, checksum = self._measured.result()
        kinds = {s["kind"] for s in self._slots if s["kind"] != ABSENT} or {ABSENT}
        return BackupInfo(
            kinds.pop() if len(kinds) == 1 else "mixed",
            self._dest,
            size,
            checksum,
            {"paths": [s["path"] for s in self._slots], "slots": self._slots},
        )


@contextlib.contextmanager
def backing_up(paths: Sequence[Path], dest: Path, runner: CommandRunner, progress: Progress) -> Iterator[Finishing]:
    """`backup_paths`, with the body run while the backup's files go to disk and are summed: for
    what a plugin does before the step that leaves the originals within their own version (a
    fingerprint, a slow shutdown, a dump), which no longer waits for them. Take `result()` after
    the body; the threads are done when the block ends, however it ends (nothing reads a backup a
    failure then discards)."""
    slots: list[dict[str, str]] = []
    with progress.task(f"back up {len(paths)} path(s)", total=len(paths)) as task:
        for index, path in enumerate(paths):
            choice = choose(path)
            candidates = [_slot(dest, index), _beside(path, dest, index)]
            location: Path | None = None
            kind = choice.kind
            if kind == SNAPSHOT:
                location = _snapshot(runner, path, candidates)
            elif choice.dataset is not None:
                location = _zfs_snapshot(runner, choice.dataset, dest, index)
            elif kind == REFLINK:
                location = _clone(runner, path, candidates)
            if location is None and kind != ABSENT:
                kind, location = COPY, _slot(dest, index)
                runner.run(["cp", "-a", "--", str(path), str(location)], as_root=True)
            slots.append({"path": str(path), "kind": kind, "location": str(location or "")})
            task.advance()
    files = Finishing(slots, dest, runner, progress)
    try:
        yield files
    finally:
        files.wait()


def _zfs_snapshot(runner: CommandRunner, dataset: str, dest: Path, index: int) -> Path | None:
    """`zfs snapshot` of `dataset`; its name (dataset@snapshot) is the slot's location. The name is
    written into `dest` first: a backup killed before the journal records it lives outside `dest`,
    and `discard` finds it there."""
    name = f"{dataset}@nixos-migrate-{dest.name}-{index}"
    with (dest / _ZFS_TAKEN).open("a") as taken:
        taken.write(name + "\n")
    return Path(name) if _try(runner, ["zfs", "snapshot", name]) else None


def _zfs_restore(runner: CommandRunner, path: Path, snapshot: str) -> None:
    if _try(runner, ["zfs", "rollback", snapshot]):
        return
    # later snapshots exist: `rollback -r` would destroy them, and they may be other backups
    files = path / ".zfs" / "snapshot" / snapshot.partition("@")[2]
    if not files.is_dir():
        raise MigrateError(f"cannot roll {path} back to {snapshot}, and {files} is not readable")
    _empty(path, runner)
    runner.run(["cp", "-a", "--", f"{files}/.", str(path)], as_root=True)


def _digest(copies: Sequence[Mapping[str, str]]) -> str:
    return ",".join(tree_digest(Path(s["location"])) for s in copies)


def _slots_of(backup: BackupRecord) -> list[dict[str, str]]:
    """The slots of a backup; journals from before per-slot kinds hold copies under `present`."""
    if "slots" in backup.detail:
        return [dict(s) for s in backup.detail["slots"]]
    present = set(backup.detail.get("present", []))
    return [
        {"path": p, "kind": COPY if p in present else ABSENT, "location": str(_slot(backup.path, i))}
        for i, p in enumerate(backup.detail.get("paths", []))
    ]


def owns(backup: BackupRecord) -> bool:
    """Whether `backup` was written by `backup_paths`."""
    return "slots" in backup.detail or "present" in backup.detail


def restore_paths(backup: BackupRecord, runner: CommandRunner, progress: Progress) -> None:
    """Make every backed-up path exactly as in `backup`; the backup stays usable."""
    slots = _slots_of(backup)
    copies = [s for s in slots if s["kind"] == COPY]
    if copies and backup.checksum is not None and _digest(copies) != backup.checksum:
        raise MigrateError(
            f"backup {backup.id} at {backup.path} does not match its checksum; it was not used",
            hint="restore from another backup (`nixos-migrate backups`)",
        )
    for slot in slots:
        present = (
            _try(runner, ["zfs", "list", "-H", "-t", "snapshot", "-o", "name", slot["location"]])
            if slot["kind"] == ZFS
            else Path(slot["location"]).exists()
        )
        if slot["kind"] != ABSENT and not present:
            raise MigrateError(f"backup {backup.id}: {slot['location']} is gone; it was not used")
    with progress.task(f"restore {len(slots)} path(s)", total=len(slots)) as task:
        for slot in slots:
            path, location = Path(slot["path"]), Path(slot["location"])
            if slot["kind"] == ZFS:
                _zfs_restore(runner, path, slot["location"])
                task.advance()
                continue
            _remove(path, runner)
            if slot["kind"] == SNAPSHOT:
                runner.run(["btrfs", "subvolume", "snapshot", str(location), str(path)], as_root=True)
            elif slot["kind"] in (REFLINK, COPY):
                path.parent.mkdir(parents=True, exist_ok=True)
                reflink = "--reflink=always" if slot["kind"] == REFLINK else "--reflink=auto"
                # a mount point survives _remove; copy into it instead of beside it
                src, dst = (f"{location}/.", str(path)) if path.is_dir() else (str(location), str(path))
                if not _try(runner, ["cp", "-a", reflink, "--", src, dst]):
                    runner.run(["cp", "-a", "--", src, dst], as_root=True)
            task.advance()


def remove_backup(backup: BackupRecord, runner: CommandRunner) -> None:
    """Delete what `backup` holds (`backups prune`): snapshots, clones beside the data, copies."""
    if owns(backup):
        for slot in _slots_of(backup):
            if slot["kind"] == ZFS:
                _try(runner, ["zfs", "destroy", slot["location"]])  # gone already: nothing to do
            elif slot["kind"] != ABSENT:
                _remove(Path(slot["location"]), runner)
    _remove(backup.path, runner)


def discard(path: Path, runner: CommandRunner) -> None:
    """Delete `path` whatever it holds, read-only btrfs snapshots included, and the ZFS snapshots
    it names (partial backups)."""
    if (path / _ZFS_TAKEN).is_file():
        for name in (path / _ZFS_TAKEN).read_text().split():
            _try(runner, ["zfs", "destroy", name])  # never taken, or gone already: nothing to do
    if path.exists() or path.is_symlink():
        for child in list(path.iterdir()) if path.is_dir() and not is_btrfs_subvolume(path) else []:
            _remove(child, runner)
        _remove(path, runner)


def _remove(path: Path, runner: CommandRunner | None = None) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        if runner is not None and is_btrfs_subvolume(path):
            runner.run(["btrfs", "subvolume", "delete", str(path)], as_root=True)
            return
        if os.path.ismount(path):
            _empty(path, runner)
            return
        shutil.rmtree(path)


def _empty(path: Path, runner: CommandRunner | None) -> None:
    """Remove what the directory `path` holds (a mount point stays)."""
    for child in path.iterdir():
        if child.name != ".zfs":  # a ZFS dataset's own view of its snapshots, read-only
            _remove(child, runner)
