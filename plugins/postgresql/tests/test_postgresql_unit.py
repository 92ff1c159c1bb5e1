# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The cluster under its systemd unit, as on NixOS: the pre-switch `plan` runs while the old
generation's server still serves, and `up` stops the unit before it checks and migrates.

This machine runs no systemd: `systemctl` is a stand-in on PATH whose `stop` does what
postgresql.service's stop does (a fast shutdown of the postmaster) and whose `is-active` asks
the cluster's postmaster.pid. The server itself is real.
"""

from __future__ import annotations

import os

from conftest import SMALL

from nixos_migrate.testing.cli import run_cli

FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "{log}"
case "$1" in
  is-active) [ -f "{data}/postmaster.pid" ] ;;
  stop) kill -INT "$(head -n1 "{data}/postmaster.pid")"
        while [ -f "{data}/postmaster.pid" ]; do sleep 0.1; done ;;
  start) : ;;
esac
"""


def test_pre_switch_plan_accepts_the_serving_cluster_and_up_stops_its_unit_first(
    cluster_factory, pg_service, pg_root, tmp_path
):
    source, target = pg_root / "pgdata" / "16", pg_root / "pgdata" / "17"
    cluster = cluster_factory("16", source, sql=SMALL).start()
    before = cluster.content()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL.format(log=log, data=source))
    (bin_dir / "systemctl").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    svc = pg_service(target, ("16", "17"), old_data_dir=str(source))

    # without a unit, a running cluster is refused: nothing would stop it
    refused = run_cli(svc.manifest("17"), "plan", env=env)
    assert refused.code == 3, refused.output
    assert "source cluster not running" in refused.stderr

    manifest = svc.manifest("17", unit="postgresql.service")
    plan = run_cli(manifest, "plan", "--json", env=env)
    assert plan.code == 0, plan.output
    checks = {c["name"]: c for c in plan.json[0]["checks"]}
    assert checks["source cluster stopped before the step"]["ok"]
    assert "stop" not in log.read_text()  # plan never stops anything

    result = run_cli(manifest, "up", "--json", env=env, timeout=900)
    assert result.code == 0, result.output
    calls = log.read_text().splitlines()
    assert calls.index("systemctl stop postgresql.service") < len(calls) - 1
    step = result.json[0]["steps"][0]
    names = {c["name"]: c["ok"] for c in step["checks"]}
    assert names["content equals the fingerprint before the step"]
    assert (target / "PG_VERSION").read_text().strip() == "17"
    upgraded = type(cluster)("17", target, cluster.sock, cluster.user).start()
    try:
        assert upgraded.content() == before
    finally:
        upgraded.stop()


def test_a_superuser_by_another_name_is_refused_naming_the_names_tried_until_configured(
    cluster_factory, pg_service, pg_root
):
    """The plugin asks as `postgres` and as the service's user; a bootstrap superuser renamed
    away from both is found only through settings.superuser."""
    cluster = cluster_factory("16", pg_root / "data", sql=SMALL + "; CREATE ROLE helper SUPERUSER LOGIN")
    cluster.start()
    try:
        as_helper = [cluster.prefix / "bin" / "psql", "-X", "-h", cluster.sock, "-p", str(cluster.port), "-c"]
        cluster.as_user([*as_helper, "ALTER ROLE postgres RENAME TO dba", "-U", "helper", "-d", "postgres"])
        cluster.as_user([*as_helper, "DROP ROLE helper", "-U", "dba", "-d", "postgres"])
    finally:
        cluster.stop()
    svc = pg_service(pg_root / "data", ("16", "17"))

    refused = svc.cli("17", "plan")
    assert refused.code != 0, refused.output
    assert "cannot find the superuser" in refused.stderr and "set settings.superuser" in refused.stderr
    assert 'role "postgres" does not exist' in refused.stderr, refused.stderr

    svc.settings["superuser"] = "dba"
    plan = svc.cli("17", "plan", "--json")
    assert plan.code == 0, plan.output
    checks = {c["name"]: c for c in plan.json[0]["checks"]}
    assert checks["pg_upgrade --check"]["ok"], checks
