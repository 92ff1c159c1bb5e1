"""The staging cluster: initdb'ed for the step's target major with the old cluster's settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.model import Step
from nixos_migrate_postgresql import layout, state
from nixos_migrate_postgresql.cluster import (
    prefix_of,
)
from nixos_migrate_postgresql.inspect import Inspection, initdb_argv


def planned(service: Service, step: Step, found: Inspection) -> tuple[Path, dict[str, Any]]:
    """The staging directory beside the step's target, and how it is initdb'ed for the step (with
    the source's settings): the record its marker holds."""
    staging = layout.staging_dir(state.target_dir(service, step), state.source_dir(service, step))
    initdb = prefix_of(state.settings_of(service), step.to_version) / "bin" / "initdb"
    argv = initdb_argv(initdb, staging, int(step.to_version), found)
    return staging, {"argv": argv, "step": [step.from_version, step.to_version]}


def initdb(service: Service, staging: Path, record: dict[str, Any]) -> None:
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    service.private_dir(staging)
    service.run.run(record["argv"])


def prepare(service: Service, step: Step, found: Inspection) -> None:
    """initdb the staging cluster ahead of the step (`backup` does, alongside its fingerprint);
    the marker, written once initdb succeeded, lets `up`/`down` take it over once."""
    marker = state.staging_marker(service)
    marker.unlink(missing_ok=True)
    staging, record = planned(service, step, found)
    initdb(service, staging, record)
    marker.write_text(json.dumps(record))


def initdb_staging(service: Service, step: Step, found: Inspection) -> Path:
    """A freshly initdb'ed staging directory for the step's target major, with the settings of the
    source `found`: the one `backup` prepared when it is there untouched (its marker is taken: a
    step that fails after this point leaves no reusable staging behind), else a new one."""
    staging, wanted = planned(service, step, found)
    marker = state.staging_marker(service)
    prepared = json.loads(marker.read_text()) if marker.exists() else None
    marker.unlink(missing_ok=True)
    if prepared != wanted or not (staging / "PG_VERSION").is_file():
        with service.progress.task(f"initdb PostgreSQL {step.to_version}"):
            initdb(service, staging, wanted)
    state.target_dir(service, step).parent.mkdir(parents=True, exist_ok=True)
    return staging
