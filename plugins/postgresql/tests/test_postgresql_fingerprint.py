# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The plugin's fingerprint: block-range hashing of big tables equals hashing them whole, a
changed row is found and named, and the sampled depth picks the same blocks before and after a real
pg_upgrade across majors."""

from __future__ import annotations

import os
from pathlib import Path

from nixos_migrate_postgresql import fingerprint
from nixos_migrate_postgresql.server import running


def _server(svc, target, prefix, data):
    """A private server of the plugin's own kind on the cluster in `data`."""
    service = svc.service(target)
    sock = svc.root / "sock" / "plugin"
    return running(service, prefix, data, sock.resolve(), svc.settings["port"])


def test_chunked_hash_equals_whole_table_and_differences_name_the_table(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("17", pg_root / "data")
    svc = pg_service(pg_root / "data", ("17",))
    with _server(svc, "17", cluster.prefix, cluster.data) as server:
        whole = fingerprint.take(server, jobs=1)
        chunked = fingerprint.take(server, jobs=3, chunk_blocks=16)  # sales.orders has ~1700 blocks
        assert chunked == whole
        orders = whole["databases"]["app"]["tables"]["sales.orders"]
        assert orders[0] == "100000"
        with server.connect("app") as conn:
            conn.execute("UPDATE sales.orders SET amount = amount + 1 WHERE id = 77777")
        changed = fingerprint.take(server, jobs=3, chunk_blocks=16)
    diffs = fingerprint.differences(whole, changed)
    assert len(diffs) == 1
    assert diffs[0].startswith("databases/app/tables/sales.orders")
    assert changed["databases"]["app"]["tables"]["sales.orders"][0] == "100000"  # same count, other content


def test_sampled_fingerprint_picks_the_same_blocks_after_a_real_pg_upgrade(cluster_factory, pg_service, pg_root):
    data = pg_root / "data"
    cluster = cluster_factory("13", data)
    svc = pg_service(data, ("13", "18"), method="link")

    def sampled(server):  # sales.orders (~1700 blocks) is sampled
        return fingerprint.take(server, jobs=2, depth="sample", sample_above=64, sample_blocks=40)

    with _server(svc, "18", cluster.prefix, data) as server:
        before = sampled(server)
        full_before = fingerprint.take(server, jobs=2, depth="full")
    orders = before["databases"]["app"]["tables"]["sales.orders"]
    assert orders[0].endswith(" blocks") and orders[1].startswith("sample ")
    assert 0 < int(orders[2]) < 100000  # a part of the rows, not all of them

    result = svc.cli("18", "up", "--json")
    assert result.code == 0, result.output
    upgraded = type(cluster)("18", data, cluster.sock, cluster.user)
    with _server(svc, "18", upgraded.prefix, data) as server:
        after = sampled(server)
        assert after == before
        assert fingerprint.take(server, jobs=2, depth="full") == full_before
        with server.connect("app") as conn:
            conn.execute(
                "INSERT INTO sales.orders (customer, amount, created)"
                " SELECT g::text, 1, now() FROM generate_series(1, 5000) g"
            )
        grown = sampled(server)
    assert fingerprint.differences(before, grown)[0].startswith("databases/app/tables/sales.orders")


def test_column_hashes_cover_built_in_types_and_fall_back_to_text_for_the_rest(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("17", pg_root / "data")
    svc = pg_service(pg_root / "data", ("17",))
    with _server(svc, "17", cluster.prefix, cluster.data) as server:
        with server.connect("app") as conn:
            conn.execute(
                "CREATE TABLE sales.notes (id int, doc json); INSERT INTO sales.notes VALUES (1, '{\"a\": 1}')"
            )
        text = fingerprint.take(server, jobs=2, row_hash="text")
        by_columns = fingerprint.take(server, jobs=2, row_hash="columns")
        tables = {
            k: (text["databases"]["app"]["tables"][k], v) for k, v in by_columns["databases"]["app"]["tables"].items()
        }
        assert tables["sales.orders"][0][0] == tables["sales.orders"][1][0] == "100000"
        assert tables["sales.orders"][0][1] != tables["sales.orders"][1][1]  # hashed by columns
        assert tables["sales.notes"][0] == tables["sales.notes"][1]  # json has no hash function: as text
        with server.connect("app") as conn:
            conn.execute("UPDATE sales.orders SET payload = payload || '{\"x\": 1}' WHERE id = 4242")
        changed = fingerprint.take(server, jobs=2, row_hash="columns")
    assert fingerprint.differences(by_columns, changed)[0].startswith("databases/app/tables/sales.orders")


def test_column_hashes_take_every_listed_type_and_see_swaps_and_nulls(cluster_factory, pg_service, pg_root):
    """Every type the column hash knows (arrays and NULLs too) is hashed without falling back to
    text, and rows that differ only by two swapped values, or by a NULL, hash differently."""
    cluster = cluster_factory("17", pg_root / "data")
    svc = pg_service(pg_root / "data", ("17",))
    every = (
        'b bool, y bytea, c "char", n name, i8 int8, i2 int2, i4 int4, t text, o oid, ci cidr, f4 float4,'
        " f8 float8, ip inet, bp char(5), vc varchar(9), d date, tm time, ts timestamp, tz timestamptz,"
        " iv interval, nu numeric, u uuid, j jsonb, a int4[], x int4"
    )
    values = (
        "true, '\\x01', 'c', 'n', 8, 2, 4, 't', 26, '10.0.0.0/8', 1.5, 2.5, '10.0.0.1', 'bp', 'vc',"
        " '2024-02-29', '12:00', '2024-01-01 00:00', '2024-01-01 00:00+00', '1 day', 1.25,"
        " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": 1}', '{1,2}', 4"
    )
    with _server(svc, "17", cluster.prefix, cluster.data) as server:

        def table_hash(rows: str) -> list[str]:
            with server.connect("app") as conn:
                # the corpus publishes all tables: an UPDATE needs a replica identity
                create = f"CREATE TABLE public.every ({every}); ALTER TABLE public.every REPLICA IDENTITY FULL"
                conn.execute(f"DROP TABLE IF EXISTS public.every; {create}; {rows}")
            fp = fingerprint.take(server, jobs=1, row_hash="columns")
            return list(fp["databases"]["app"]["tables"]["public.every"])

        with server.connect("app") as conn:
            columns = fingerprint._hashed_columns(conn)
        assert "sales.orders" in columns  # timestamptz, numeric, text[] and jsonb are all hashable

        one = table_hash(f"INSERT INTO every VALUES ({values})")
        with server.connect("app") as conn:
            assert "public.every" in fingerprint._hashed_columns(conn)  # not left to the text hash
        assert one[0] == "1"
        sevens = table_hash(f"INSERT INTO every VALUES ({values}); UPDATE every SET i4 = 7, x = 7")
        nines = table_hash(f"INSERT INTO every VALUES ({values}); UPDATE every SET i4 = 9, x = 9")
        assert sevens != nines  # one value in two columns does not cancel itself out
        swapped = table_hash(f"INSERT INTO every VALUES ({values}); UPDATE every SET i4 = 5, x = 4")
        unswapped = table_hash(f"INSERT INTO every VALUES ({values}); UPDATE every SET i4 = 4, x = 5")
        assert swapped != unswapped
        with_null = table_hash(f"INSERT INTO every VALUES ({values}); UPDATE every SET tz = NULL")
        assert with_null != one and with_null[0] == "1"
        assert table_hash(f"INSERT INTO every VALUES ({values})") == one  # deterministic


def test_background_connections_run_at_the_lowest_cpu_priority(cluster_factory, pg_service, pg_root):
    """The source's fingerprint during a downgrade's copy must only take idle CPU. A backend is a
    session leader, so under autogroup scheduling its nice value alone changes nothing against the
    copy's backends: its group's nice must be lowered too."""
    cluster = cluster_factory("17", pg_root / "data", sql=None)
    svc = pg_service(pg_root / "data", ("17",))
    autogroups = Path("/proc/self/autogroup").exists()
    with (
        _server(svc, "17", cluster.prefix, cluster.data) as server,
        server.in_background().connect() as low,
        server.connect() as normal,
    ):
        for conn, nice in ((low, 19), (normal, 0)):
            pid = conn.info.backend_pid
            assert os.getpriority(os.PRIO_PROCESS, pid) == nice
            assert os.getsid(pid) == pid  # why the autogroup matters
            if autogroups:
                assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == str(nice)
