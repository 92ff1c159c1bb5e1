# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The plugin's fingerprint: block-range hashing of big tables equals hashing them whole, and a
changed row is found and named."""

from __future__ import annotations

import json

from nixos_migrate.executor import Engine
from nixos_migrate.manifest import parse_manifest
from nixos_migrate.plugins import PluginRegistry
from nixos_migrate_postgresql import fingerprint
from nixos_migrate_postgresql.server import running


def test_chunked_hash_equals_whole_table_and_differences_name_the_table(cluster_factory, pg_service, pg_root):
    cluster = cluster_factory("17", pg_root / "data")
    svc = pg_service(pg_root / "data", ("17",))
    manifest = parse_manifest(json.dumps(json.loads(svc.manifest("17").read_text())), "m.json", "json")
    engine = Engine(manifest, PluginRegistry.discover())
    service = engine.service("db")
    engine._private_dir(service.state_dir, service)
    prefix = cluster.prefix
    sock = pg_root / "sock" / "plugin"
    with running(service, prefix, cluster.data, sock.resolve(), svc.settings["port"]) as server:
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
