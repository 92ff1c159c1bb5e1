"""The old cluster, asked on a private server before the step: what the new cluster must carry."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.model import Step
from nixos_migrate_postgresql import compat, fingerprint, state
from nixos_migrate_postgresql.cluster import (
    control_data,
    prefix_of,
)
from nixos_migrate_postgresql.inspect import Inspection, inspect
from nixos_migrate_postgresql.server import running


def inspect_source(
    service: Service,
    step: Step,
    src: Path,
    *,
    fingerprint_too: bool,
    alongside: Callable[[Inspection], object] | None = None,
    blockers: list[str] | None = None,
) -> tuple[Inspection, Any]:
    """Inspect the source cluster on a private server and, with `fingerprint_too`, fingerprint it;
    `alongside(inspection)` runs in a thread meanwhile (it must not touch the source). For a
    downgrade, what the older major cannot hold is appended to `blockers` when given."""
    s = state.settings_of(service)
    prefix = prefix_of(s, step.from_version or "")
    control = control_data(service.run, prefix, src)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with running(service, prefix, src, state.socket(service), s.port, s.superuser) as server:
            found = inspect(server, control, s.superuser)
            beside = pool.submit(alongside, found) if alongside else None
            if blockers is not None and step.direction == "down":
                blockers += compat.blockers(server, int(step.from_version or 0), int(step.to_version))
            fp = None
            if fingerprint_too:
                fp = fingerprint.take(server, s.jobs, depth=state.depth(service, step), row_hash=state.row_hash(step))
        # the server stops while `alongside` may still run
        if beside is not None:
            beside.result()  # its failure is the caller's
    return found, fp
