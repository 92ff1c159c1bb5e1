"""`restore`: the backed-up cluster and its tablespaces put back, what the failed step wrote removed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import BackupRecord
from nixos_migrate_postgresql import layout, state, tablespaces
from nixos_migrate_postgresql.cluster import (
    major_of,
    sibling,
    stop_stray_server,
)


def restore(service: Service, backup: BackupRecord) -> bool:
    s = state.settings_of(service)
    source = Path(str(backup.detail["source"]))
    places = {str(k): str(v) for k, v in dict(backup.detail.get("tablespaces") or {}).items()}
    state.staging_marker(service).unlink(missing_ok=True)
    state.verified_file(service).unlink(missing_ok=True)
    for base in {s.data_dir, s.source_dir}:
        for directory in (base, *layout.leftovers(base)):
            stop_stray_server(directory)
        for leftover in layout.leftovers(base):
            shutil.rmtree(leftover, ignore_errors=True)
    if backup.step.to_version != backup.step.from_version:
        # what the step wrote into the tablespace locations (check found them free before it)
        tablespaces.remove_major(places, backup.step.to_version)
    if backup.kind == state.RETAINED:
        if backup.path.exists():
            replace_with_copy(service, backup.path, source)
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
    state.expected_file(service).write_text(json.dumps(state.backup_fingerprint(backup)))
    return True


def replace_with_copy(service: Service, retained: Path, source: Path) -> None:
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
