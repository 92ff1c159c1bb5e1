# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Real major upgrades between real PostgreSQL versions, through the CLI, checked by content."""

from __future__ import annotations

import json

import pytest
from conftest import SMALL

from nixos_migrate.model import Step
from nixos_migrate_postgresql import plugin
from nixos_migrate_postgresql.cluster import control_data

# (from, to, method, layout): `same` keeps one data directory, `split` one per major (NixOS)
HOPS = [
    ("14", "15", "copy", "same"),
    ("15", "16", "link", "split"),
    ("16", "17", "copy-file-range", "split"),
    ("17", "18", "swap", "same"),
    ("16", "18", "link", "split"),  # partitioned primary keys through pg_upgrade --link
    ("13", "18", "auto", "split"),
    ("11", "18", "copy", "split"),  # the oldest major the plugin takes, straight to the newest
]


def _dirs(pg_root, old, new, layout):
    if layout == "same":
        return pg_root / "data", pg_root / "data"
    return pg_root / "pgdata" / old, pg_root / "pgdata" / new


@pytest.mark.parametrize(("old", "new", "method", "layout"), HOPS, ids=[f"{a}-{b}-{m}" for a, b, m, _ in HOPS])
def test_upgrade_hop_keeps_every_row(cluster_factory, pg_service, pg_root, old, new, method, layout):
    source, target = _dirs(pg_root, old, new, layout)
    cluster = cluster_factory(old, source)
    before = cluster.offline_content()
    settings = {"method": method}
    if layout == "split":
        settings["old_data_dir"] = str(source)
    svc = pg_service(target, (old, new), **settings)

    plan = svc.cli(new, "plan", "--json")
    assert plan.code == 0, plan.output
    [p] = plan.json
    assert p["current"] == old
    assert [(s["from_version"], s["to_version"], s["direction"]) for s in p["steps"]] == [(old, new, "up")]
    checks = {c["name"]: c for c in p["checks"]}
    assert checks["pg_upgrade --check"]["ok"], checks
    assert checks["data checksums carried"]["detail"] == "off"

    result = svc.cli(new, "up", "--json")
    assert result.code == 0, result.output
    step = result.json[0]["steps"][0]
    verified = {c["name"]: c for c in step["checks"]}
    assert verified["content equals the fingerprint before the step"]["ok"], verified
    assert verified["amcheck of b-tree indexes"]["ok"], verified
    # the partitioned tables' indexes have no storage to check, nor do the unlogged ones here
    assert "not checkable, skipped:" in verified["amcheck of b-tree indexes"]["detail"]
    assert "partitioned" in verified["amcheck of b-tree indexes"]["detail"]
    # checked on the new cluster before the commit, and found not to have run since
    assert verified["server starts"]["detail"] == "before the commit", verified
    assert verified["not started since"]["ok"], verified
    # no unit starts the service: the statistics were computed at once (18: only the missing ones)
    settled = result.json[0]["settle"]
    assert settled["state"] == "done" and settled["checks"][0]["name"] == "planner statistics", settled

    assert (target / "PG_VERSION").read_text().strip() == new
    if layout == "split":
        assert not (source / "PG_VERSION").exists()  # the old cluster left the data path
    upgraded = type(cluster)(new, target, cluster.sock, cluster.user)
    assert upgraded.offline_content() == before
    status = svc.cli(new, "status", "--json").json[0]
    assert (status["recorded"], status["data_version"], status["pending"]) == (new, new, [])
    later = svc.cli(new, "verify", "--json")
    assert later.code == 0, later.output
    names = [c["name"] for c in later.json["db"]]
    assert "server starts" in names and "not started since" not in names  # a later verify starts it


@pytest.mark.parametrize("direct_above", [None, 0], ids=["through-pg_dump", "tables-on-their-own"])
def test_dump_method_reloads_every_row_frozen(cluster_factory, pg_service, pg_root, direct_above):
    """method = dump: pg_dump of the newer major through the rewriter into a fresh cluster (or,
    with direct_copy_above = 0, every table by its own COPY stream beside it); every row arrives
    (content equal), each table was loaded in one WAL-skipping COPY FREEZE (its pages all-frozen
    in the visibility map, so no later vacuum rewrites them)."""
    source, target = _dirs(pg_root, "14", "17", "split")
    cluster = cluster_factory("14", source)
    before = cluster.offline_content()
    svc = pg_service(target, ("14", "17"), method="dump", old_data_dir=str(source), direct_copy_above=direct_above)
    plan = svc.cli("17", "plan", "--json")
    assert plan.code == 0, plan.output
    assert plan.json[0]["steps"][0]["description"] == "dump and reload"

    result = svc.cli("17", "up", "--json")
    assert result.code == 0, result.output
    verified = {c["name"]: c for c in result.json[0]["steps"][0]["checks"]}
    assert verified["content equals the fingerprint before the step"]["ok"], verified

    upgraded = type(cluster)("17", target, cluster.sock, cluster.user)
    assert upgraded.offline_content() == before
    upgraded.start()
    try:
        frozen = upgraded.psql(
            "CREATE EXTENSION pg_visibility; SELECT all_frozen, pg_relation_size('sales.orders') / 8192"
            " FROM pg_visibility_map_summary('sales.orders')",
            db="app",
        )
    finally:
        upgraded.stop()
    all_frozen, pages = (int(v) for v in frozen.split("|"))
    # without FREEZE none would be; COPY marks the pages it fills in one batch (not the few a
    # batch leaves partly filled)
    assert pages > 10 and all_frozen > 0.9 * pages


def test_extensions_are_updated_to_the_new_majors_version(cluster_factory, pg_service, pg_root):
    """amcheck is 1.3 on 16 and 1.4 on 17: after the upgrade the database has 17's version."""
    cluster = cluster_factory("16", pg_root / "data")
    cluster.start()
    try:
        cluster.psql("CREATE EXTENSION IF NOT EXISTS amcheck", "app")
        before = cluster.psql("SELECT extversion FROM pg_extension WHERE extname = 'amcheck'", "app").strip()
    finally:
        cluster.stop()
    svc = pg_service(pg_root / "data", ("16", "17"), method="copy")
    result = svc.cli("17", "up")
    assert result.code == 0, result.output
    upgraded = type(cluster)("17", pg_root / "data", cluster.sock, cluster.user).start()
    try:
        after = upgraded.psql("SELECT extversion FROM pg_extension WHERE extname = 'amcheck'", "app").strip()
        default = upgraded.psql("SELECT default_version FROM pg_available_extensions WHERE name = 'amcheck'").strip()
    finally:
        upgraded.stop()
    assert (before, after) == ("1.3", default) and after != before


def test_verify_takes_the_checks_made_before_the_commit_only_while_the_cluster_has_not_run(
    cluster_factory, pg_service, pg_root
):
    """`up` checks the new cluster before the commit and records what it found with the cluster's
    pg_control state; verify after the commit reports that record instead of starting the cluster
    again, but only while pg_control shows that nothing ran it since."""
    cluster = cluster_factory("16", pg_root / "data", sql=SMALL)
    svc = pg_service(pg_root / "data", ("16", "17"), method="copy")
    assert svc.cli("17", "up").code == 0
    upgraded = type(cluster)("17", pg_root / "data", cluster.sock, cluster.user)
    service = svc.service("17")
    service.step = Step("16", "17", "up")
    record_file = service.state_dir / "verified.json"

    def record() -> None:
        identity = control_data(service.run, upgraded.prefix, upgraded.data).identity
        checks = [["server starts", True, "before the commit"], ["recorded check", True, "from the record"]]
        record_file.write_text(json.dumps({"cluster": str(upgraded.data), "control": identity, "checks": checks}))

    record()
    names = [c.name for c in plugin.verify(service)]
    assert names == ["cluster present", "server starts", "recorded check", "not started since"]
    assert not record_file.exists()  # used once
    assert "recorded check" not in [c.name for c in plugin.verify(service)]

    record()
    upgraded.start()
    upgraded.stop()  # a new shutdown checkpoint: the record no longer describes the cluster
    checks = {c.name: c for c in plugin.verify(service)}
    assert "recorded check" not in checks and checks["server starts"].detail == ""
    assert checks["content equals the fingerprint before the step"].ok, checks
