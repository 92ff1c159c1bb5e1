"""The file-level backup primitive plugins use for the directories of a stopped service.

`backup_paths` copies each directory into the backup (`cp -a`, which keeps owners, modes,
hard links, sparse files, ACLs and xattrs, and clones extents on filesystems with reflinks);
`restore_paths` checks the backup against its checksum and then makes each directory exactly
what the backup holds. Paths that did not exist at backup time are removed on restore.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import tree_digest, tree_size
from nixos_migrate.model import BackupInfo, BackupRecord
from nixos_migrate.progress import Progress
from nixos_migrate.runner import CommandRunner

KIND = "copy"


def _slot(dest: Path, index: int) -> Path:
    return dest / f"path-{index}"


def estimate(paths: Sequence[Path]) -> int:
    """Bytes a copy backup of `paths` takes, plus 1 % and 1 MiB for metadata."""
    total = sum(tree_size(p) for p in paths if p.exists())
    return total + total // 100 + (1 << 20)


def backup_paths(paths: Sequence[Path], dest: Path, runner: CommandRunner, progress: Progress) -> BackupInfo:
    """Copy every path in `paths` into `dest`; return a `BackupInfo` of kind `copy`."""
    present: list[str] = []
    with progress.task(f"back up {len(paths)} path(s)", total=len(paths)) as task:
        for index, path in enumerate(paths):
            if path.exists() or path.is_symlink():
                runner.run(["cp", "-a", "--reflink=auto", "--", str(path), str(_slot(dest, index))], as_root=True)
                present.append(str(path))
            task.advance()
    slots = [str(_slot(dest, i)) for i, p in enumerate(paths) if str(p) in present]
    checksum = _digest_slots(dest, len(paths))
    size = sum(tree_size(Path(s)) for s in slots)
    return BackupInfo(KIND, dest, size, checksum, {"paths": [str(p) for p in paths], "present": present})


def _digest_slots(dest: Path, count: int) -> str:
    return ",".join(tree_digest(_slot(dest, i)) for i in range(count))


def restore_paths(backup: BackupRecord, runner: CommandRunner, progress: Progress) -> None:
    """Make every backed-up path exactly as in `backup` (a record written by `backup_paths`)."""
    paths = [Path(p) for p in backup.detail.get("paths", [])]
    present = set(backup.detail.get("present", []))
    if backup.checksum is not None and _digest_slots(backup.path, len(paths)) != backup.checksum:
        raise MigrateError(
            f"backup {backup.id} at {backup.path} does not match its checksum; it was not used",
            hint="restore from another backup (`nixos-migrate backups`)",
        )
    with progress.task(f"restore {len(paths)} path(s)", total=len(paths)) as task:
        for index, path in enumerate(paths):
            _remove(path)
            if str(path) in present:
                path.parent.mkdir(parents=True, exist_ok=True)
                source = _slot(backup.path, index)
                # a mount point survives _remove; copy into it instead of beside it
                src, dst = (f"{source}/.", str(path)) if path.is_dir() else (str(source), str(path))
                runner.run(["cp", "-a", "--reflink=auto", "--", src, dst], as_root=True)
            task.advance()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        if os.path.ismount(path):
            for child in path.iterdir():
                _remove(child)
            return
        shutil.rmtree(path)


def reflink_supported(directory: Path) -> bool:
    """Whether files in `directory` can be cloned (btrfs, XFS with reflink=1): probed, not guessed."""
    probe = directory / f".nixos-migrate-reflink-probe-{os.getpid()}"
    clone = probe.with_name(probe.name + ".clone")
    try:
        probe.write_bytes(b"probe")
        result = subprocess.run(["cp", "--reflink=always", str(probe), str(clone)], capture_output=True, check=False)
        return result.returncode == 0
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
        clone.unlink(missing_ok=True)
