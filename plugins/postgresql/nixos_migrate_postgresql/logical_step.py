"""A step through SQL (every downgrade, the `dump` method): copy, fingerprint of the source, comparison."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.model import Step
from nixos_migrate_postgresql import commit, fingerprint, logical, stage, state, verification
from nixos_migrate_postgresql.cluster import (
    control_data,
    prefix_of,
)
from nixos_migrate_postgresql.inspect import Inspection, inspect
from nixos_migrate_postgresql.server import PrivateServer, loading_settings, running


def copy_into(service: Service, step: Step, src: Path) -> tuple[Path, Inspection]:
    """Copy the content of the cluster in `src` through SQL into a new staging cluster of the
    target major, compare the copy with the source table by table, and flush it to disk: the
    staging directory and what the source was found to be."""
    s = state.settings_of(service)
    sock = state.socket(service)
    work = service.private_dir(service.state_dir / "dump")
    src_prefix = prefix_of(s, step.from_version or "")
    dst_prefix = prefix_of(s, step.to_version)
    # the newer pg_dump of the two: an older one refuses a newer server, a newer one reads older servers
    dump_bin = prefix_of(s, str(max(int(step.from_version or 0), int(step.to_version)))) / "bin"
    sidecar = Path(json.loads(state.retained_marker(service).read_text())["fingerprint_file"])
    row_hash = state.row_hash(step)
    control = control_data(service.run, src_prefix, src)
    with running(service, src_prefix, src, sock, s.port, s.superuser) as old:
        found = inspect(old, control, s.superuser)
        with ThreadPoolExecutor(max_workers=1) as pool:
            # nobody writes the source (its service is stopped, this server is private): its
            # fingerprint is read while the new cluster is made and filled, on the CPU that leaves
            # idle; kept even when the copy fails, for the restore that follows checks against it
            before = pool.submit(fingerprint_into, sidecar, old.in_background(), s.jobs, row_hash)
            staging = stage.initdb_staging(service, step, found)
            with running(service, dst_prefix, staging, sock, s.port + 1, found.superuser, loading_settings()) as new:
                with commit.flushing(service, staging):
                    logical.copy_cluster(
                        service,
                        old,
                        dump_bin,
                        new,
                        dst_prefix / "bin",
                        int(step.to_version),
                        work,
                        jobs=s.jobs,
                        direct_above=s.direct_copy_above,
                    )
                expected = before.result()
                checks = verification.compare_copy(service, staging, new, expected)
    commit.carry_config(src, staging)
    with service.progress.task("flush the new cluster to disk"):
        commit.sync(service, staging)  # what the server's shutdown wrote, and the carried config
    # should the record not hold (the cluster ran since), verify compares every row again
    state.expected_file(service).write_text(json.dumps(expected))
    verification.record(service, step, staging, checks)
    return staging, found


def fingerprint_into(sidecar: Path, server: PrivateServer, jobs: int, row_hash: fingerprint.RowHash) -> Any:
    """The full fingerprint of what `server` holds, also written to `sidecar`."""
    taken = fingerprint.take(server, jobs, depth="full", row_hash=row_hash)
    sidecar.write_text(json.dumps(taken))
    return taken
