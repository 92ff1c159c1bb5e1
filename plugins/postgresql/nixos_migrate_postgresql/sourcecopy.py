"""`method = copy` by a parallel copy: pg_upgrade --copy copies the relation files one after the
other (its --jobs gives each tablespace one worker, not each file), so the plugin copies the
source cluster with `jobs` workers into a private directory beside the target, leaving out the WAL
a clean start does not read, and runs pg_upgrade --link from that copy. The source is only read,
as with --copy; the new cluster's files are linked from the copy, never from the source, and are
its own once the copy is removed.

Where the copy could not stand in for the source faithfully (tablespaces, replication slots,
symbolic links pg_upgrade would follow, a configuration that points the server elsewhere),
pg_upgrade --copy runs on the source as before, and the step says why."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate_postgresql.cluster import Control

# a server that starts and stops on the copy only reads these: a symbolic link (NixOS links
# postgresql.conf from the store) is copied as the link
READ_ONLY_LINKS = frozenset({"postgresql.conf", "pg_hba.conf", "pg_ident.conf"})
# holds the relation files: copied once the copy's configuration is known to keep the server on it
BULK = frozenset({"base", "global"})


@dataclass
class _Listing:
    dirs: list[tuple[Path, Path]] = field(default_factory=list)
    links: list[tuple[Path, Path]] = field(default_factory=list)
    files: list[tuple[Path, Path, int]] = field(default_factory=list)
    bulk: list[tuple[Path, Path, int]] = field(default_factory=list)


def copy_source(service: Service, src: Path, dst: Path, control: Control, prefix: Path, jobs: int) -> str | None:
    """Copy the cluster `src` (shut down cleanly; `control` is its pg_controldata) to `dst` for
    pg_upgrade --link, `prefix` holding its major's binaries. Returns None when the copy is
    complete, else why the source cannot be copied this way; `dst` is then gone."""
    listing = _list(src, dst, control)
    if isinstance(listing, str):
        return listing
    if dst.exists():
        shutil.rmtree(dst)
    done = False
    try:
        for source, copy in listing.dirs:
            copy.mkdir()
            _same_owner_and_mode(source, copy)
        for source, copy in listing.links:
            os.symlink(os.readlink(source), copy)
            if os.geteuid() == 0:
                st = source.lstat()
                os.lchown(copy, st.st_uid, st.st_gid)
        total = sum(size for *_, size in listing.files + listing.bulk)
        with service.progress.task("copy the old cluster for pg_upgrade --link", total=total) as task:
            _copy_files(listing.files, jobs, task.advance)
            redirected = _configured_elsewhere(service, prefix, dst)
            if redirected is not None:
                return redirected
            _copy_files(listing.bulk, jobs, task.advance)
        done = True
        return None
    except OSError as exc:
        raise MigrateError(
            f"copying {src} for pg_upgrade: {exc}", hint=f"{src} is unchanged; check the free space of {dst.parent}"
        ) from exc
    finally:
        if not done:
            shutil.rmtree(dst, ignore_errors=True)


def _list(src: Path, dst: Path, control: Control) -> _Listing | str:
    """What to copy where, or why the copy would not be faithful."""
    if control.shutdown_segment is None:
        return "its last checkpoint is no clean shutdown's"
    for holder, what in (("pg_tblspc", "tablespaces"), ("pg_replslot", "replication slots")):
        if (src / holder).is_dir() and any((src / holder).iterdir()):
            return f"it has {what}"
    listing = _Listing(dirs=[(src, dst)])
    for entry in sorted(src.iterdir()):
        copy = dst / entry.name
        if entry.name == "pg_wal":
            reason = _list_wal(entry.resolve(), copy, control.shutdown_segment, listing)
        elif entry.is_symlink():
            if entry.name not in READ_ONLY_LINKS or not entry.is_file():
                return f"{entry} is a symbolic link"
            listing.links.append((entry, copy))
            reason = None
        elif entry.name == "postmaster.pid":
            continue
        else:
            reason = _list_tree(entry, copy, listing.bulk if entry.name in BULK else listing.files, listing)
        if reason is not None:
            return reason
    # the largest first: the workers end together
    listing.bulk.sort(key=lambda f: -f[2])
    return listing


def _list_tree(path: Path, copy: Path, files: list[tuple[Path, Path, int]], listing: _Listing) -> str | None:
    st = path.lstat()
    if stat.S_ISREG(st.st_mode):
        files.append((path, copy, st.st_size))
        return None
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is no regular file or directory"
    listing.dirs.append((path, copy))
    for entry in sorted(path.iterdir()):
        reason = _list_tree(entry, copy / entry.name, files, listing)
        if reason is not None:
            return reason
    return None


def _list_wal(wal: Path, copy: Path, segment: str, listing: _Listing) -> str | None:
    """The WAL directory with the segment of the shutdown checkpoint and the timeline histories:
    what a start reads. The segments before it are done with; those after it are recycled ones,
    the bulk of the directory, that a server writes over. Its subdirectories are copied empty."""
    if not (wal / segment).is_file():
        return f"{wal} lacks {segment}, the segment of its last checkpoint"
    listing.dirs.append((wal, copy))
    for entry in sorted(wal.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            listing.dirs.append((entry, copy / entry.name))
        elif entry.name == segment or entry.name.endswith(".history"):
            listing.files.append((entry, copy / entry.name, entry.stat().st_size))
    return None


def _copy_files(files: list[tuple[Path, Path, int]], jobs: int, advance: Callable[[float], None]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending = [pool.submit(_copy_file, source, copy) for source, copy, _ in files]
        try:
            for done in as_completed(pending):
                advance(done.result())
        finally:
            for future in pending:
                future.cancel()


def _copy_file(source: Path, copy: Path) -> int:
    shutil.copyfile(source, copy)  # sendfile: the kernel copies, without a pass through Python
    return _same_owner_and_mode(source, copy).st_size


def _same_owner_and_mode(source: Path, copy: Path) -> os.stat_result:
    st = source.stat()
    os.chmod(copy, stat.S_IMODE(st.st_mode))
    if os.geteuid() == 0:
        os.chown(copy, st.st_uid, st.st_gid)
    return st


def _configured_elsewhere(service: Service, prefix: Path, copy: Path) -> str | None:
    """Why a server started on `copy` would not use it (a `data_directory` in its configuration):
    pg_upgrade --link would then link the source's files. None when it would."""
    result = service.run.run([prefix / "bin" / "postgres", "-D", copy, "-C", "data_directory"], check=False)
    if result.returncode != 0:
        return f"`postgres -C data_directory` failed on the copy: {result.output.strip()[-300:]}"
    used = Path(result.output.strip().splitlines()[-1]) if result.output.strip() else copy
    if used.resolve() != copy.resolve():
        return f"its configuration sets data_directory = {used}"
    return None
