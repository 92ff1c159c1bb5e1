# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The fingerprint of depth `sample` (what a load step compares by default) against a real Redis
7.0 holding the corpus: exact counts per database, and a repeatable sample of keys compared in
every detail. What it sees and what it does not is the trade of `verify_depth = sample`."""

from __future__ import annotations

from pathlib import Path

from redis_corpus import of_db
from redis_env import make_instance

from nixos_migrate.progress import NullProgress
from nixos_migrate_redis import content
from nixos_migrate_redis.server import Server


def test_a_sampled_fingerprint_counts_every_key_and_sees_every_change_in_its_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(content, "SAMPLE_KEYS", 2000)  # a sample well below the corpus's 20 000 keys
    instance = make_instance(tmp_path, "7.0", keys=20_000, big=False)
    with instance.running("7.0", save=False) as client:
        sock = Path(client.connection_pool.connection_kwargs["path"])
        server = Server("7.0", instance.data_dir, sock, tmp_path / "unused.log")

        def compared(expected):
            return content.compare_sampled(expected, server, 300)

        sample = content.sampled(server, 300, NullProgress(), "sample")
        dbs = sample["dbs"]
        assert {db: d["keys"] for db, d in dbs.items()} == {str(db): n for db, n in server.databases().items()}
        sampled = sum(len(d["sample"]) for d in dbs.values())
        assert 2000 <= sampled < sum(d["keys"] for d in dbs.values()) // 4
        assert {kind for d in dbs.values() for kind, _, _ in d["sample"].values()} >= {"string", "hash", "list"}
        assert compared(sample).ok, compared(sample).detail
        # repeatable: the same keys again give the same sample
        assert content.sampled(server, 300, NullProgress(), "again")["dbs"]["0"]["sample"] == dbs["0"]["sample"]

        persistent = [bytes.fromhex(n) for n, (kind, expire, _) in dbs["0"]["sample"].items()
                      if kind == "string" and expire == -1]  # fmt: skip
        inside = persistent[0]
        unsampled = (k for k in client.scan_iter(match="cache:*", count=1000) if k.hex() not in dbs["0"]["sample"])
        outside = next(k for k in unsampled if client.type(k) == b"string" and client.ttl(k) == -1)
        # a value outside the sample changed in place is not seen (the trade of sample) ...
        client.append(outside, b"!")
        assert compared(sample).ok
        # ... one inside it is, by name; so is an expiry set on a sampled key
        client.append(inside, b"!")
        changed = compared(sample)
        assert not changed.ok and inside.decode() in changed.detail
        client.pexpire(persistent[1], 3_600_000)
        expiring = compared(sample)
        assert persistent[1].decode() in expiring.detail and "keys with an expiry" in expiring.detail
        # a key gone anywhere changes the exact count of its database
        client.delete(outside)
        counted = compared(sample)
        assert "db0: " in counted.detail and "keys without expiry" in counted.detail
        # a database that appears is named
        of_db(client, 9).set("stray", "1")
        assert "db9: 1 keys without expiry, 0 before" in compared(sample).detail
