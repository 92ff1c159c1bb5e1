"""Putting the new cluster in place: carried config, flushing to disk, the commit itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import Step
from nixos_migrate_postgresql import layout, state, tablespaces
from nixos_migrate_postgresql.cluster import (
    major_of,
    sibling,
)


def sync(service: Service, cluster: Path) -> None:
    """Flush the new cluster to disk before it is committed: initdb ran with --no-sync, and
    neither pg_upgrade --no-sync nor a server's checkpoints cover every file. syncfs, not
    `initdb --sync-only`: one call instead of an fsync per file (1.15 s against 0.06 s after a
    `--link` upgrade on btrfs), and no walk racing the server that computes statistics meanwhile."""
    service.run.run(["sync", "--file-system", "--", cluster])


@contextlib.contextmanager
def flushing(service: Service, cluster: Path, every: float = 2.0) -> Iterator[None]:
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
                sync(service, cluster)

    thread = threading.Thread(target=flush, name="flush-copy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def carry_config(src: Path, new: Path) -> None:
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


def commit(service: Service, step: Step, src: Path, dst: Path, staging: Path, method: str) -> None:
    """Rename the new cluster into place last; the source leaves the data path."""
    if method in state.COPY_LIKE:
        # the untouched source is this step's backup: it goes where `backup` recorded it would
        marker = json.loads(state.retained_marker(service).read_text())
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
    if method not in state.COPY_LIKE:
        # its files now belong to the new cluster or are gone; the file backup holds them
        shutil.rmtree(garbage, ignore_errors=True)
        for directory in old_tablespace_dirs:
            shutil.rmtree(directory)
