# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Failures injected into real upgrades leave the cluster exactly as it was (compared by content)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from conftest import SMALL, Cluster, prefix_with

from nixos_migrate_postgresql import testing as servers


def test_missing_binary_is_refused_before_anything_changes(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("16", pg_root / "data")
    before = cluster.offline_content()
    empty = pg_root / "empty-prefix"
    (empty / "bin").mkdir(parents=True)
    svc = pg_service(pg_root / "data", ("16",))
    svc.settings["packages"]["17"] = str(empty)
    result = svc.cli("17", "up")
    assert result.code == 3, result.output
    assert "binaries of both majors" in result.stderr
    assert "pg_upgrade is missing or not executable" in result.stderr
    assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "16"
    assert cluster.offline_content() == before


def _pg_upgrade_pids(data_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_upgrade") and b"--check" not in argv and str(data_dir).encode() in argv:
            pids.append(int(proc.name))
    return pids


def test_killed_pg_upgrade_restores_the_old_cluster(cluster_factory, pg_service, pg_root):
    old, new = pg_root / "pgdata" / "15", pg_root / "pgdata" / "16"
    cluster = cluster_factory("15", old)
    before = cluster.offline_content()
    svc = pg_service(new, ("15", "16"), old_data_dir=str(old), method="link")
    import subprocess

    from nixos_migrate.testing.cli import cli_command

    proc = subprocess.Popen(
        cli_command(svc.manifest("16"), ["up"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        pids = _pg_upgrade_pids(old)
        if pids:
            time.sleep(0.3)  # let it start moving files
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):  # a parallel worker (-j) may be done
                    os.kill(pid, signal.SIGKILL)
                    killed = (killed or []) + [pid]
        time.sleep(0.02)
    _out, err = proc.communicate(timeout=600)
    assert killed, f"pg_upgrade never ran:\n{err}"
    assert proc.returncode == 1, err
    assert "pg_upgrade" in err and "restored from backup" in err
    assert (old / "PG_VERSION").read_text().strip() == "15"
    assert not (new / "PG_VERSION").exists()
    assert cluster.offline_content() == before
    assert svc.cli("16", "status", "--json").json[0]["recorded"] == "15"


def _corrupting_prefix(real: Path, where: Path) -> Path:
    """A copy of a PostgreSQL prefix whose pg_upgrade 'succeeds' but loses a table's rows (the
    silent corruption verify exists for): it empties the largest relation file it wrote."""
    return prefix_with(
        real,
        where,
        "pg_upgrade",
        f"""set -e
"{real}/bin/pg_upgrade" "$@"
case " $* " in *" --check "*) exit 0 ;; esac
while [ $# -gt 0 ]; do [ "$1" = -D ] && new="$2"; shift; done
victim=$(find "$new/base" -type f -size +1M -printf '%s %p\\n' | sort -n | tail -1 | cut -d' ' -f2)
: > "$victim"
""",
    )


def test_verify_mismatch_restores_the_old_cluster(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("16", pg_root / "data")
    before = cluster.offline_content()
    broken = _corrupting_prefix(servers.postgresql("17"), pg_root / "broken-17")
    svc = pg_service(pg_root / "data", ("16",), method="copy")
    svc.settings["packages"]["17"] = str(broken)
    result = svc.cli("17", "up")
    assert result.code == 1, result.output
    # found on the new cluster before the commit: the data path never held it
    assert "failed verification before the commit" in result.stderr
    assert "content equals the fingerprint before the step" in result.stderr
    assert "sales.orders" in result.stderr  # the table whose rows went missing is named
    assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "16"
    assert Cluster("16", pg_root / "data", cluster.sock, cluster.user).offline_content() == before
    # the statistics the failed step noted for its 17 cluster are dropped, not run on the 16 one
    assert svc.cli("17", "settle", "--json").json == {"db": {"state": "nothing", "checks": []}}
    state = Path(json.loads(svc.manifest("17").read_text())["state_dir"]) / "services" / "db"
    assert state.is_dir() and not (state / "settle.json").exists()


def test_what_pg_upgrade_refuses_is_refused_by_plan_and_restored_by_up(cluster_factory, pg_service, pg_root):
    """A column of a reg* type cannot cross pg_upgrade: `plan` (the pre-switch check) runs
    pg_upgrade --check and refuses; `up` leaves that check to pg_upgrade itself, which fails before
    it changes anything, and the step is restored."""
    cluster = cluster_factory("16", pg_root / "data", sql=None)
    cluster.start()
    try:
        cluster.psql("CREATE TABLE oids (f regproc); INSERT INTO oids VALUES ('now'::regproc);")
    finally:
        cluster.stop()
    before = cluster.offline_content()
    svc = pg_service(pg_root / "data", ("16", "17"), method="copy")
    plan = svc.cli("17", "plan")
    assert plan.code == 3, plan.output
    assert "pg_upgrade --check failed" in plan.stderr
    assert "reg*" in plan.stderr
    result = svc.cli("17", "up")
    assert result.code == 1, result.output
    assert "restored" in result.stderr
    assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "16"
    assert cluster.offline_content() == before


def test_a_database_not_in_expected_databases_is_refused(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("16", pg_root / "data", sql=SMALL)
    before = cluster.offline_content()
    svc = pg_service(pg_root / "data", ("16", "17"), expected_databases=["billing"])
    for command in ("plan", "up"):
        result = svc.cli("17", command)
        assert result.code == 3, result.output
        assert "pre-check only the expected databases failed: unexpected: app" in result.stderr
    assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "16"
    assert cluster.offline_content() == before
