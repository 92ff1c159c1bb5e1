"""Which way a step copies the cluster, decided before anything runs: `plan` (and so `status`)
asks it, and it imports none of the upgrade's machinery."""

from __future__ import annotations

from pathlib import Path

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.model import Step
from nixos_migrate_postgresql import layout, state
from nixos_migrate_postgresql.cluster import current_dir, same_filesystem


def resolve_method(service: Service, step: Step) -> str:
    s = state.settings_of(service)
    if step.direction == "down":
        return "dump"
    if s.method != "auto":
        return s.method
    src = current_dir(s) or s.source_dir
    where = built_in(service, step)
    if where.is_dir() and (src / "PG_VERSION").is_file() and filebackup.reflinks_between(src / "PG_VERSION", where):
        return "clone"  # btrfs reflinks cross subvolumes too
    return "copy-file-range" if int(step.to_version) >= 17 and same_filesystem(src, where) else "copy"


def built_in(service: Service, step: Step) -> Path:
    """The directory the new cluster is built in (its staging directory's parent)."""
    s = state.settings_of(service)
    src = current_dir(s) or s.source_dir
    dst = s.source_dir if src == s.data_dir and step.direction == "down" else s.data_dir
    return layout.staging_dir(dst, src).parent
