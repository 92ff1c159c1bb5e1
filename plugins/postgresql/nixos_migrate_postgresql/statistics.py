"""Planner statistics, left for `settle`: computed once the service runs again."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.model import Check, Step
from nixos_migrate_postgresql import state, upgrade
from nixos_migrate_postgresql.cluster import (
    current_dir,
    major_of,
    prefix_of,
    running_pid,
)
from nixos_migrate_postgresql.server import running


def note(service: Service, step: Step, cluster: Path) -> None:
    """Planner statistics are left for `settle`: neither pg_upgrade before 18 nor a dump carries
    them, and the manual computes them on the running server (`--analyze-in-stages` gives it rough
    statistics within seconds), so they need not lengthen the service's downtime. Noted before the
    commit, for the cluster the commit puts at `cluster`: a crash in between cannot lose the note,
    and `settle` drops a note whose cluster is not there (a failed step, restored)."""
    state.settle_file(service).write_text(
        json.dumps({"statistics": {"major": step.to_version, "data_dir": str(cluster)}})
    )


def settle(service: Service) -> list[Check] | None:
    noted = state.settle_file(service)
    if not noted.exists():
        return None
    pending = json.loads(noted.read_text()).get("statistics") or {}
    s = state.settings_of(service)
    cluster = current_dir(s)
    if cluster is None or str(cluster) != pending.get("data_dir") or major_of(cluster) != pending.get("major"):
        noted.unlink()  # noted for data that a restore or a later step has replaced
        return None
    major = str(pending["major"])
    prefix = prefix_of(s, major)
    vacuumdb = prefix / "bin" / "vacuumdb"
    # 18 carries most statistics through pg_upgrade: only what is missing
    missing = ["--missing-stats-only"] if int(major) >= 18 else []
    started = time.monotonic()
    with service.progress.task("refresh planner statistics"):
        if running_pid(cluster) is None:
            with running(service, prefix, cluster, state.socket(service), s.port, s.superuser) as server:
                conn = ["-h", str(server.socket_dir), "-p", str(server.port), "-U", server.find_superuser(s.superuser)]
                # nobody is served meanwhile: one full pass is less work than the stages
                service.run.run([vacuumdb, *conn, "--all", "-j", str(s.jobs), "--analyze-only", *missing])
            how = "on the stopped cluster"
        else:
            conn = ["-h", str(s.service_socket_dir), "-p", str(s.service_port)]
            conn += ["-U", s.superuser] if s.superuser else []
            stages = ["--analyze-in-stages", *missing]
            service.run.run([vacuumdb, *conn, "--all", "-j", str(s.jobs), *stages], env=upgrade.pg_env(service))
            how = f"through the running server ({s.service_socket_dir}, port {s.service_port}), in stages"
    noted.unlink()
    return [Check("planner statistics", True, f"PostgreSQL {major}, {how}, {time.monotonic() - started:.1f} s")]
