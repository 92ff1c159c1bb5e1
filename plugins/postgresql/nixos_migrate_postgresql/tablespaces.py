"""Tablespaces outside the data directory, and the cluster they belong to.

A tablespace is a symlink `pg_tblspc/OID -> LOCATION` in the data directory; each major keeps
its files in `LOCATION/PG_<major>_<catversion>`, so clusters of several majors share a location.
pg_upgrade fills the new major's directory there (and refuses if it exists); a dump's
`CREATE TABLESPACE` creates it (and refuses if it exists). So a cluster that leaves the data
path takes its directories along: a retained cluster keeps them inside its own `pg_tblspc/OID`
(a directory instead of the symlink, which PostgreSQL itself never sees: a retained cluster is
only ever copied back, then reattached), and a removed cluster's directories are removed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nixos_migrate.errors import MigrateError
from nixos_migrate.runner import CommandRunner
from nixos_migrate_postgresql import layout


def locations(cluster: Path) -> dict[str, str]:
    """The cluster's tablespaces: OID -> location (the symlinks in pg_tblspc)."""
    links = cluster / "pg_tblspc"
    if not links.is_dir():
        return {}
    return {link.name: os.readlink(link) for link in sorted(links.iterdir()) if link.is_symlink()}


def version_dirs(location: Path | str, major: str) -> list[Path]:
    """The directories of PostgreSQL `major` in a tablespace location."""
    where = Path(location)
    return sorted(where.glob(f"PG_{major}_*")) if where.is_dir() else []


def of_cluster(cluster: Path, major: str) -> list[Path]:
    """Every tablespace directory the cluster of `major` in `cluster` has outside itself."""
    return [d for location in locations(cluster).values() for d in version_dirs(location, major)]


def occupied(places: dict[str, str], major: str) -> list[Path]:
    """The directories of `major` that already exist in the locations `places`."""
    return [d for location in places.values() for d in version_dirs(location, major)]


def remove_major(places: dict[str, str], major: str) -> None:
    """Remove the directories of `major` from the locations `places` (a failed step's)."""
    for directory in occupied(places, major):
        shutil.rmtree(directory)


def detach(cluster: Path, major: str, runner: CommandRunner) -> None:
    """Move the tablespace directories of the cluster now at `cluster` (renamed out of the data
    path to be kept) inside it, in place of its symlinks, so that its locations are free for
    the cluster that replaces it; `reattach` undoes it on a copy."""
    for oid, location in locations(cluster).items():
        link = cluster / "pg_tblspc" / oid
        dirs = version_dirs(location, major)
        link.unlink()
        link.mkdir()
        for directory in dirs:
            layout.move_path(directory, link / directory.name, runner)  # a rename on one filesystem
        if os.geteuid() == 0:
            st = Path(location).stat()
            os.chown(link, st.st_uid, st.st_gid)


def reattach(cluster: Path, places: dict[str, str], runner: CommandRunner) -> None:
    """Put the tablespace directories a detached copy holds back into their locations `places`
    and the symlinks in their place."""
    for oid, location in places.items():
        held = cluster / "pg_tblspc" / oid
        if held.is_symlink() or not held.is_dir():
            continue
        for directory in sorted(held.iterdir()):
            target = Path(location) / directory.name
            if target.exists():
                raise MigrateError(
                    f"tablespace directory {target} exists already; it is not overwritten",
                    hint=f"move it away, then restore again (the backup holds {directory})",
                )
            Path(location).mkdir(parents=True, exist_ok=True)
            layout.move_path(directory, target, runner)
        held.rmdir()
        held.symlink_to(location)


def remove_cluster(cluster: Path, major: str | None) -> None:
    """Remove a cluster (a pinned directory is emptied) and the tablespace directories it has
    outside itself."""
    if major is not None:
        for directory in of_cluster(cluster, major):
            shutil.rmtree(directory)
    layout.remove(cluster)
