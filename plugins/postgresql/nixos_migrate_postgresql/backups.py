"""`backup`: the untouched old cluster retained, or for link and swap a file backup first."""

from __future__ import annotations

import json
from pathlib import Path

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.fingerprint import tree_size
from nixos_migrate.model import BackupInfo, Step
from nixos_migrate_postgresql import fingerprint, origin, stage, state, tablespaces
from nixos_migrate_postgresql.cluster import (
    current_dir,
    same_filesystem,
    sibling,
)


def size(service: Service, step: Step) -> int | None:
    if step.data.get("method") in ("link", "swap"):
        found = current_dir(state.settings_of(service))
        return filebackup.estimate([found, *tablespaces.of_cluster(found, step.from_version or "")]) if found else 0
    return 0  # the untouched source cluster is the backup: it is renamed, not copied


def take(service: Service, step: Step, dest: Path) -> BackupInfo:
    src = state.source_dir(service, step)
    fp = None
    state.verified_file(service).unlink(missing_ok=True)  # of an earlier step
    if state.logical(step):
        # a logical step reads every row of the source anyway: the server it starts for the copy
        # inspects the source and takes its fingerprint meanwhile, into `fingerprint_file`
        # (`logical_step.copy_into`); a server started here as well would cost more than it could overlap
        state.inspection_file(service).unlink(missing_ok=True)
        state.staging_marker(service).unlink(missing_ok=True)
    else:
        # the empty target cluster does not depend on the fingerprint: initdb (a second or more of
        # CPU) runs while the source is read
        found, fp = origin.inspect_source(
            service, step, src, fingerprint_too=True, alongside=lambda found: stage.prepare(service, step, found)
        )
        found.save(state.inspection_file(service))
    state.expected_file(service).write_text(json.dumps(fp))
    sidecar = dest / "fingerprint.json"
    sidecar.unlink(missing_ok=True)
    detail = {
        "source": str(src),
        "major": step.from_version,
        "fingerprint": fp,
        "fingerprint_file": str(sidecar),
        "tablespaces": tablespaces.locations(src),
    }
    if step.data.get("method") in ("link", "swap"):
        # the tablespaces' files are linked or moved too
        paths = [src, *tablespaces.of_cluster(src, step.from_version or "")]
        info = filebackup.backup_paths(paths, dest, service.run, service.progress)
        return BackupInfo(info.kind, info.path, info.size, info.checksum, {**info.detail, **detail})
    retained = dest / "cluster" if same_filesystem(dest, src) else sibling(src, f"retained-{dest.name}")
    # `up`/`down` rename the source there at commit; until then it stays in place, untouched
    marker = {"path": str(retained), "source": str(src), "fingerprint_file": str(sidecar)}
    state.retained_marker(service).write_text(json.dumps(marker))
    return BackupInfo(state.RETAINED, retained, tree_size(src), fingerprint.digest(fp) if fp else None, detail)
