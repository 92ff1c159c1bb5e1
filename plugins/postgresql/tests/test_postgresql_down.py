# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Logical downgrades that keep what was written after the upgrade."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Cluster, prefix_with

from nixos_migrate.testing import provision
from nixos_migrate_postgresql import testing as servers

WRITES_AFTER_UPGRADE = r"""
\connect app
INSERT INTO sales.orders (customer, amount, created) VALUES ('after the upgrade ✓', 1.5, now());
CREATE TABLE sales.new_since (id int PRIMARY KEY, note text);
INSERT INTO sales.new_since SELECT i, 'written on the newer major ' || i FROM generate_series(1, 500) i;
REFRESH MATERIALIZED VIEW sales.daily;
\connect legacy
INSERT INTO kunden VALUES ('Jürgen', 'München');
"""


@pytest.mark.parametrize(("old", "new", "layout"), [("17", "18", "same"), ("16", "17", "split")])
def test_down_keeps_rows_written_after_the_upgrade(cluster_factory, pg_service, pg_root, old, new, layout):
    source = pg_root / "data" if layout == "same" else pg_root / "pgdata" / old
    target = pg_root / "data" if layout == "same" else pg_root / "pgdata" / new
    cluster = cluster_factory(old, source)
    settings = {"old_data_dir": str(source)} if layout == "split" else {}
    svc = pg_service(target, (old, new), **settings)
    assert svc.cli(new, "up").code == 0

    upgraded = Cluster(new, target, cluster.sock, cluster.user).start()
    try:
        upgraded.psql(WRITES_AFTER_UPGRADE)
        written = upgraded.content()
    finally:
        upgraded.stop()

    result = svc.cli(new, "down", "db", "--to", old, "--json")
    assert result.code == 0, result.output
    [step] = result.json[0]["steps"]
    assert step["step"]["direction"] == "down"
    assert {c["name"]: c["ok"] for c in step["checks"]}["content equals the fingerprint before the step"]
    assert result.json[0]["settle"]["state"] == "done"  # a dump carries no statistics: computed

    assert (source / "PG_VERSION").read_text().strip() == old
    if layout == "split":
        assert not (target / "PG_VERSION").exists()
    downgraded = Cluster(old, source, cluster.sock, cluster.user).start()
    try:
        assert downgraded.content() == written
        assert downgraded.psql("SELECT count(*) FROM sales.new_since", "app").strip() == "500"
        assert int(downgraded.psql("SELECT count(*) FROM pg_stats WHERE tablename = 'orders'", "app")) > 0
        assert downgraded.psql("SELECT name FROM kunden WHERE stadt = 'München'", "legacy").strip() == "Jürgen"
    finally:
        downgraded.stop()
    status = svc.cli(old, "status", "--json").json[0]
    assert (status["recorded"], status["data_version"]) == (old, old)
    # the newer cluster is not lost: it is the backup taken before the down step
    backups = svc.cli(old, "backups", "--json").json
    assert backups[-1]["from_version"] == new
    assert backups[-1]["kind"] == "retained-cluster"


def test_a_configuration_switched_back_to_the_older_major_brings_the_data_back(cluster_factory, pg_service, pg_root):
    """NixOS: after 16 -> 17 the operator switches back to the generation with 16, whose settings
    name 16's directory as data_dir and 17's as old_data_dir; `up` to 16 is a logical down."""
    dir16, dir17 = pg_root / "pgdata" / "16", pg_root / "pgdata" / "17"
    cluster = cluster_factory("16", dir16)
    svc = pg_service(dir17, ("16", "17"), old_data_dir=str(dir16))
    assert svc.cli("17", "up").code == 0
    upgraded = Cluster("17", dir17, cluster.sock, cluster.user).start()
    try:
        upgraded.psql(WRITES_AFTER_UPGRADE)
        written = upgraded.content()
    finally:
        upgraded.stop()

    svc.settings.update(data_dir=str(dir16), old_data_dir=str(dir17))  # the older generation's manifest
    plan = svc.cli("16", "plan", "--json")
    assert plan.code == 0, plan.output
    assert [s["direction"] for s in plan.json[0]["steps"]] == ["down"]
    result = svc.cli("16", "up", "--json")
    assert result.code == 0, result.output
    assert (dir16 / "PG_VERSION").read_text().strip() == "16"
    assert not (dir17 / "PG_VERSION").exists()
    downgraded = Cluster("16", dir16, cluster.sock, cluster.user).start()
    try:
        assert downgraded.content() == written
    finally:
        downgraded.stop()


def _failing_psql_prefix(real, where):
    """A copy of a PostgreSQL prefix whose psql loads the roles (-f) but fails on every database
    stream, after reading it whole."""
    script = f"""for a in "$@"; do [ "$a" = -f ] || [ "$a" = --version ] && exec {real}/bin/psql "$@"; done
cat > /dev/null
echo "psql: simulated failure while loading" >&2
exit 3
"""
    return prefix_with(real, where, "psql", script)


def test_a_failed_down_is_restored_against_the_fingerprint_taken_during_the_copy(cluster_factory, pg_service, pg_root):
    """The source's fingerprint is read while the dump streams; a load that fails still leaves it
    beside the backup, and the restore is verified against it."""
    cluster = cluster_factory("16", pg_root / "data")
    svc = pg_service(pg_root / "data", ("16", "17"))
    assert svc.cli("17", "up").code == 0
    before = Cluster("17", pg_root / "data", cluster.sock, cluster.user).offline_content()
    svc.settings["packages"]["16"] = str(_failing_psql_prefix(servers.postgresql("16"), pg_root / "broken-16"))
    result = svc.cli("17", "down", "db", "--to", "16")
    assert result.code == 1, result.output
    assert "simulated failure while loading" in result.stderr
    assert "restored from backup" in result.stderr and "and verified" in result.stderr
    assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "17"
    assert Cluster("17", pg_root / "data", cluster.sock, cluster.user).offline_content() == before
    backup = svc.cli("17", "backups", "--json").json[-1]
    assert backup["from_version"] == "17"

    taken = json.loads(Path(backup["detail"]["fingerprint_file"]).read_text())
    assert taken["depth"] == "full"
    assert taken["databases"]["app"]["tables"]["sales.orders"][0] != "0"  # rows were counted


def test_a_copy_that_silently_lost_a_row_is_caught_before_the_commit_and_restored(cluster_factory, pg_service, pg_root):
    """A load that reports success but lost a row (here a psql that drops one line of the stream)
    is found by the table-by-table comparison inside the step, which names the table; nothing is
    committed and the newer cluster is back as it was."""
    cluster = cluster_factory("16", pg_root / "data")
    svc = pg_service(pg_root / "data", ("16", "17"))
    assert svc.cli("17", "up").code == 0
    before = Cluster("17", pg_root / "data", cluster.sock, cluster.user).offline_content()
    real = servers.postgresql("16")
    script = f"""for a in "$@"; do [ "$a" = -f ] || [ "$a" = --version ] && exec {real}/bin/psql "$@"; done
sed -e '/^77777\\t/d' | {real}/bin/psql "$@"
"""
    svc.settings["packages"]["16"] = str(prefix_with(real, pg_root / "lossy-16", "psql", script))
    result = svc.cli("17", "down", "db", "--to", "16")
    assert result.code == 1, result.output
    assert "the copy failed verification before the commit" in result.stderr
    assert "databases/app/tables/sales.orders" in result.stderr
    assert "restored from backup" in result.stderr
    assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "17"
    assert Cluster("17", pg_root / "data", cluster.sock, cluster.user).offline_content() == before


SHAPES = r"""
\connect app
CREATE TABLE sales."Odd""Name.x" (
  id int GENERATED ALWAYS AS IDENTITY, k regclass, doubled int GENERATED ALWAYS AS (id * 2) STORED, note text
);
INSERT INTO sales."Odd""Name.x" (k, note) SELECT 'sales.orders'::regclass, 'ü ' || i FROM generate_series(1, 300) i;
CREATE TABLE hr.measurements (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE hr.m2024 PARTITION OF hr.measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE hr.m2025 PARTITION OF hr.measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO hr.measurements SELECT date '2024-01-01' + i, i FROM generate_series(0, 700) i;
CREATE UNLOGGED TABLE hr.scratch AS SELECT i FROM generate_series(1, 1000) i;
CREATE TABLE hr.base (id int, name text);
CREATE TABLE hr.derived (extra text) INHERITS (hr.base);
INSERT INTO hr.base VALUES (1, 'base row');
INSERT INTO hr.derived VALUES (2, 'derived row', 'x');
CREATE TABLE hr.nothing ();
INSERT INTO hr.nothing SELECT FROM generate_series(1, 5);
CREATE DATABASE "o'dd";
\connect "o'dd"
CREATE TABLE t (v text);
INSERT INTO t VALUES ('in a database whose name needs quoting');
"""


def test_down_copies_tables_on_their_own_streams_as_pg_dump_would(cluster_factory, pg_service, pg_root):
    """With direct_copy_above = 0 every table pg_dump would copy itself is copied by its own
    `COPY TO | COPY FROM (FREEZE)` stream, two at a time, beside pg_dump's stream of the rest:
    generated and identity columns, regclass values, inheritance, unlogged and column-less tables
    and a database whose name needs quoting come out as they went in; partitions stay with pg_dump."""
    cluster = cluster_factory("17", pg_root / "data")
    svc = pg_service(pg_root / "data", ("17", "18"), jobs=2, direct_copy_above=0)
    assert svc.cli("18", "up").code == 0
    upgraded = Cluster("18", pg_root / "data", cluster.sock, cluster.user).start()
    try:
        upgraded.psql(WRITES_AFTER_UPGRADE + SHAPES)
        written = upgraded.content()
    finally:
        upgraded.stop()
    real = servers.postgresql("17")
    calls = pg_root / "psql-calls"
    logging = f"""printf '%s\\n' "$*" >> {calls}
exec {real}/bin/psql "$@"
"""
    svc.settings["packages"]["17"] = str(prefix_with(real, pg_root / "logged-17", "psql", logging))
    provision.chown_tree(pg_root / "logged-17", cluster.user)

    result = svc.cli("18", "down", "db", "--to", "17")
    assert result.code == 0, result.output
    # the commands of a non-UTF-8 database are in its encoding
    loads = [
        line
        for line in calls.read_text(errors="replace").splitlines()
        if "FROM STDIN WITH (" in line and "FREEZE)" in line
    ]
    copied = {line.split("TRUNCATE ONLY ")[1].split(" -c ")[0]: line for line in loads}
    assert {'"sales"."orders"', '"sales"."Odd""Name.x"', '"hr"."scratch"', '"hr"."base"', '"hr"."derived"'} <= {*copied}
    assert not {t for t in copied if "m202" in t or "measurements" in t or "nothing" in t}
    assert 'COPY "sales"."Odd""Name.x" ("id", "k", "note") FROM STDIN' in "\n".join(loads)  # not the generated one
    # built-in types only (numeric, timestamptz, text[], jsonb, bytea...): binary; a regclass, whose
    # binary form is the OID (another relation's in the target), goes as its name, in text
    binary = {t for t, line in copied.items() if "WITH (FORMAT binary, FREEZE)" in line}
    assert {'"sales"."orders"', '"hr"."people"', '"hr"."scratch"'} <= binary
    assert '"sales"."Odd""Name.x"' not in binary

    downgraded = Cluster("17", pg_root / "data", cluster.sock, cluster.user).start()
    try:
        assert downgraded.content() == written
        odd = 'sales."Odd""Name.x"'
        kept = downgraded.psql(f"SELECT count(*), min(k::text), bool_and(doubled = id * 2) FROM {odd}", "app")
        assert kept.strip() == "300|sales.orders|t"
        assert downgraded.psql(f"INSERT INTO {odd} (note) VALUES ('next') RETURNING id", "app").strip() == "301"
        assert downgraded.psql("SELECT count(*) FROM ONLY hr.base", "app").strip() == "1"
        assert downgraded.psql("SELECT count(*) FROM hr.m2025", "app").strip() == "335"
        assert downgraded.psql("SELECT count(*) FROM hr.nothing", "app").strip() == "5"
        assert downgraded.psql("SELECT v FROM t", "o'dd").strip() == "in a database whose name needs quoting"
    finally:
        downgraded.stop()


def test_a_downgrade_the_older_major_cannot_hold_is_refused_naming_the_objects(cluster_factory, pg_service, pg_root):
    """18's virtual generated columns and 17's login event triggers do not exist in 16: plan
    refuses 18 -> 16 naming them, and a run to 16 changes nothing (checked by content)."""
    cluster = cluster_factory("18", pg_root / "data").start()
    try:
        cluster.psql(
            "ALTER TABLE shop.orders ADD COLUMN id_x2 bigint GENERATED ALWAYS AS (id * 2) VIRTUAL;"
            " CREATE FUNCTION shop.on_login() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$;"
            " CREATE EVENT TRIGGER greet ON login EXECUTE FUNCTION shop.on_login();",
            "app",
        )
        before = cluster.content()
    finally:
        cluster.stop()
    svc = pg_service(pg_root / "data", ("16", "18"))
    plan = svc.cli("16", "plan", "--json")
    assert plan.code == 3, plan.output
    [refusal] = [c for c in plan.json[0]["checks"] if c["name"] == "PostgreSQL 16 can hold every object"]
    assert not refusal["ok"]
    assert "app: virtual generated columns (PostgreSQL 18+): shop.orders.id_x2" in refusal["detail"]
    assert "app: login event triggers (PostgreSQL 17+): greet" in refusal["detail"]
    # a configuration that names 16 again (the journal knows no 16 here, so `down --to` cannot)
    down = svc.cli("16", "up")
    assert down.code == 3 and "virtual generated columns" in down.output, down.output
    assert (pg_root / "data" / "PG_VERSION").read_text().strip() == "18"
    assert cluster.offline_content() == before
