# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Planner statistics after the service's downtime (the `settle` hook): through the running
server when the service runs again, on the stopped cluster when nothing would start it."""

from __future__ import annotations

from conftest import Cluster

ORDERS_STATISTICS = "SELECT count(*) FROM pg_stats WHERE schemaname = 'sales' AND tablename = 'orders'"


def test_statistics_wait_for_the_running_service_and_are_computed_through_it(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("16", pg_root / "data")
    svc = pg_service(pg_root / "data", ("16", "17"), method="copy")
    result = svc.cli("17", "up", "--defer-settle", "--json")
    assert result.code == 0, result.output
    assert result.json[0]["settle"]["state"] == "deferred"

    # the service runs again (here: started by the test, on its own socket and port)
    service = Cluster("17", pg_root / "data", cluster.sock, cluster.user).start()
    try:
        # pg_upgrade before 18 carries no statistics: the upgraded cluster has none yet
        assert service.psql(ORDERS_STATISTICS, "app").strip() == "0"
        svc.settings |= {"service_socket_dir": str(cluster.sock.resolve()), "service_port": service.port}
        svc.settings["superuser"] = "postgres"
        settled = svc.cli("17", "settle", "--json")
        assert settled.code == 0, settled.output
        [check] = settled.json["db"]["checks"]
        assert check["ok"] and "through the running server" in check["detail"]
        assert int(service.psql(ORDERS_STATISTICS, "app")) > 0
        again = svc.cli("17", "settle", "--json")
        assert again.json["db"] == {"state": "nothing", "checks": []}  # done once, not again
    finally:
        service.stop()


def test_statistics_are_computed_at_once_when_no_unit_would_start_the_service(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("16", pg_root / "data")
    svc = pg_service(pg_root / "data", ("16", "17"), method="copy")
    result = svc.cli("17", "up", "--json")
    assert result.code == 0, result.output
    settled = result.json[0]["settle"]
    assert settled["state"] == "done" and "on the stopped cluster" in settled["checks"][0]["detail"]
    upgraded = Cluster("17", pg_root / "data", cluster.sock, cluster.user).start()
    try:
        assert int(upgraded.psql(ORDERS_STATISTICS, "app")) > 0
    finally:
        upgraded.stop()


def test_a_failed_settle_keeps_the_upgrade_and_the_work_noted(cluster_factory, pg_service, pg_root):
    """The service runs but not where settle looks for it: settle fails and says so; the upgrade
    stays, and the statistics are still noted for the next call."""
    cluster = cluster_factory("16", pg_root / "data")
    svc = pg_service(pg_root / "data", ("16", "17"), method="copy")
    assert svc.cli("17", "up", "--defer-settle").code == 0
    service = Cluster("17", pg_root / "data", cluster.sock, cluster.user).start()
    try:
        svc.settings |= {"service_socket_dir": str(cluster.sock.resolve()), "service_port": service.port + 1}
        failed = svc.cli("17", "settle")
        assert failed.code == 1, failed.output
        assert "settle failed: db: " in failed.stderr
        assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "17"
        svc.settings |= {"service_port": service.port, "superuser": "postgres"}
        assert svc.cli("17", "settle").code == 0
        assert int(service.psql(ORDERS_STATISTICS, "app")) > 0
    finally:
        service.stop()
