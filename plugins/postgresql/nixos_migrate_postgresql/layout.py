"""Where a step builds the new cluster and how clusters enter and leave the data path.

A cluster directory is normally renamed: the new one built beside the target and renamed into
place, the old one renamed into the backup. A directory that is a mount point or a btrfs
subvolume of its own (one subvolume per major, as snapper and btrbk encourage; a dedicated disk
for the data) is *pinned*: renaming it would fail or change the layout the operator made, so its
contents move instead. The new cluster is then built inside the pinned target (its entries are
renamed up at the commit, on one filesystem and subvolume), and a pinned source is snapshotted
(btrfs) or has its contents moved into the backup.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from nixos_migrate import filebackup
from nixos_migrate.runner import CommandRunner
from nixos_migrate_postgresql.cluster import sibling

STAGING_INSIDE = ".nixos-migrate-staging"
CHECK_INSIDE = ".nixos-migrate-check"
#: entries a pinned directory may hold that belong to its filesystem, not to a cluster
FILESYSTEM_ENTRIES = frozenset({"lost+found"})


def pinned(path: Path) -> bool:
    """Whether `path` is a mount point or a btrfs subvolume: its contents move, not itself."""
    return path.is_dir() and (os.path.ismount(path) or filebackup.is_btrfs_subvolume(path))


def describe(path: Path) -> str:
    if filebackup.is_btrfs_subvolume(path):
        return "a btrfs subvolume"
    return "a mount point" if os.path.ismount(path) else "a plain directory"


def staging_dir(target: Path, source: Path) -> Path:
    """Where the new cluster is built: inside a pinned, empty target (so that the commit renames
    within one filesystem and subvolume), else beside the target."""
    if target != source and pinned(target):
        return target / STAGING_INSIDE
    return sibling(target, "staging")


def check_dir(target: Path, source: Path) -> Path:
    """Where `pg_upgrade --check` gets its throwaway new cluster: where the real one is built."""
    staging = staging_dir(target, source)
    return staging.with_name(CHECK_INSIDE) if staging.name == STAGING_INSIDE else sibling(target, "check")


def leftovers(base: Path) -> list[Path]:
    """Every place a step may have left a staging or check cluster for the target `base`."""
    return [sibling(base, "staging"), sibling(base, "check"), base / STAGING_INSIDE, base / CHECK_INSIDE]


def cluster_entries(path: Path) -> list[Path]:
    return [p for p in sorted(path.iterdir()) if p.name not in {*FILESYSTEM_ENTRIES, STAGING_INSIDE, CHECK_INSIDE}]


def move_contents(source: Path, target: Path, runner: CommandRunner) -> None:
    """Move every entry of `source` into the existing directory `target`: renames where both are
    on one filesystem and subvolume, else a copy (reflinked where the filesystem can) and a
    removal. `source` stays, empty."""
    for entry in cluster_entries(source):
        move_path(entry, target / entry.name, runner)


def move_path(source: Path, target: Path, runner: CommandRunner) -> None:
    """Rename `source` to `target`, or where that crosses filesystems or btrfs subvolumes, copy
    it with owners and modes (reflinked where the filesystem can) and remove it."""
    try:
        source.rename(target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        runner.run(["cp", "-a", "--reflink=auto", "--", str(source), str(target)], as_root=True)
        _remove(source)


def empty(path: Path) -> None:
    """Remove the cluster's entries of a pinned directory, keeping the directory itself."""
    for entry in cluster_entries(path):
        _remove(entry)


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def vacate(source: Path, kept: Path, runner: CommandRunner) -> None:
    """The cluster in `source` leaves the data path for `kept` (its backup): renamed, or for a
    pinned `source` snapshotted (a btrfs subvolume, where `kept` is on the same filesystem) or
    moved entry by entry; `source` itself stays, empty."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    if not pinned(source):
        source.rename(kept)
        return
    if filebackup.is_btrfs_subvolume(source) and filebackup.reflinks_between(source / "PG_VERSION", kept.parent):
        runner.run(["btrfs", "subvolume", "snapshot", str(source), str(kept)], as_root=True)
        empty(source)
        return
    kept.mkdir()
    shutil.copystat(source, kept)
    st = source.stat()
    if os.geteuid() == 0:
        os.chown(kept, st.st_uid, st.st_gid)
    move_contents(source, kept, runner)


def place(staging: Path, target: Path, runner: CommandRunner) -> None:
    """Put the new cluster built in `staging` at `target` (checked empty before the step)."""
    if pinned(target):
        move_contents(staging, target, runner)
        staging.rmdir()
        return
    if target.exists():
        target.rmdir()
    staging.rename(target)


def remove(cluster: Path) -> None:
    """Remove a cluster directory; a pinned one is emptied."""
    if pinned(cluster):
        empty(cluster)
    else:
        shutil.rmtree(cluster)
