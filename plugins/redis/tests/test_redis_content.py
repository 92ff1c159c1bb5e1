# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The fingerprints against real servers: the sampled one (what the backup takes by default) on a
Redis 7.0 holding the corpus, with exact counts per database and a repeatable sample compared in
every detail (what it sees and what it does not is the trade of `verify_depth = sample`); a
string's digest computed here equal to every server's own; and the copy's fingerprint of what
it read equal to the source's own and to its copy's, a changed value in the copy caught."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from redis_corpus import of_db
from redis_env import make_instance

from nixos_migrate.errors import MigrateError
from nixos_migrate.progress import NullProgress
from nixos_migrate_redis import content, copy, workers
from nixos_migrate_redis.server import Server
from nixos_migrate_redis.testing import ALL, Instance


def _server(client, version, instance):
    return Server(version, instance.data_dir, Path(client.connection_pool.connection_kwargs["path"]), Path("/dev/null"))


@pytest.mark.parametrize("version", ALL)
def test_every_server_digests_a_string_as_string_digest_computes_it(tmp_path, version):
    values = [b"", b"0", b"12345", b"-9223372036854775808", b"3.14", b"x" * 44, b"\x00\xff\r\n" * 300,
              "Grüße, 世界 🙂".encode(), bytes(range(256)) * 4096]  # fmt: skip
    instance = Instance(tmp_path / "redis").create()
    with instance.running(version, save=False) as client:
        server = _server(client, version, instance)
        for i, value in enumerate(values):
            client.set(f"plain:{i}", value)
            client.set(f"expiring:{i}", value, px=86_400_000)
        names = [f"{kind}:{i}".encode() for kind in ("plain", "expiring") for i in range(len(values))]
        answers = client.execute_command("DEBUG", "DIGEST-VALUE", *names)
        computed = [content.string_digest(client.get(n), n.startswith(b"expiring")) for n in names]
        assert computed == answers
        keys = content.describe(server, 0, names, digested=True, values=True)
        assert server.strings_digested_alike is True
        assert [k.digest for k in keys] == answers and [k.value for k in keys] == values * 2


def test_a_server_that_digests_strings_otherwise_digests_them_all_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(content, "string_digest", lambda value, expires: b"0" * 40)
    instance = Instance(tmp_path / "redis").create()
    with instance.running("7.0", save=False) as client:
        server = _server(client, "7.0", instance)
        client.mset({f"k{i}": f"value {i}" for i in range(50)})
        names = [f"k{i}".encode() for i in range(50)]
        keys = content.describe(server, 0, names, digested=True, values=True)
        assert server.strings_digested_alike is False
        assert [k.digest for k in keys] == client.execute_command("DEBUG", "DIGEST-VALUE", *names)


def test_the_copy_reads_what_the_source_holds_and_a_changed_value_in_the_copy_is_caught(tmp_path):
    instance = make_instance(tmp_path, "7.0", keys=20_000, big=True)
    target = Instance(tmp_path / "target").create()
    with instance.running("8.0", save=False) as old_client, target.running("7.0", save=False) as new_client:
        old, new = _server(old_client, "8.0", instance), _server(new_client, "7.0", target)
        with workers.Workers(2) as pool:
            read = copy.copy(old, new, 300, pool, NullProgress())
            since = int(time.time() * 1000)
            written = workers.fingerprint(new, 300, pool, NullProgress(), "copy")
        # what the copy read (strings digested here) is the source as its server digests it
        assert read["dbs"] == content.fingerprint(old, 300, NullProgress(), "source")["dbs"]
        # the copy read back by the workers (strings hashed there) is what its server digests
        assert written["dbs"] == content.fingerprint(new, 300, NullProgress(), "copy")["dbs"]
        assert content.compare(read, written, since).ok
        changed = next(k for k in new_client.scan_iter(match="cache:*", count=1000)
                       if new_client.type(k) == b"string" and new_client.ttl(k) == -1)  # fmt: skip
        new_client.append(changed, b"!")
        found = content.compare(read, content.fingerprint(new, 300, NullProgress(), "copy"), since)
        assert not found.ok and "db0: keys without expiry differ" in found.detail


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
        # function libraries are part of the data, in the sample as in the full fingerprint
        assert set(sample["functions"]) == {"shop", "audit"}
        full = content.fingerprint(server, 300, NullProgress(), "full")
        assert full["functions"] == sample["functions"]
        client.execute_command("FUNCTION", "DELETE", "audit")
        client.execute_command("FUNCTION", "LOAD", "REPLACE", "#!lua name=shop\nredis.register_function('greet', "
                               "function(keys, args) return 'changed' end)")  # fmt: skip
        libraries = compared(sample).detail
        assert "function libraries differ (missing: audit; changed: shop)" in libraries, libraries
        since = int(time.time() * 1000)
        again = content.compare(full, content.fingerprint(server, 300, NullProgress(), "again"), since)
        assert "function libraries differ (missing: audit; changed: shop)" in again.detail, again.detail


def test_a_worker_that_fails_fails_the_pass_with_its_cause(tmp_path):
    instance = Instance(tmp_path / "redis").create()
    with instance.running("7.0", save=False) as client:
        server = _server(client, "7.0", instance)
        client.mset({f"k{i}": str(i) for i in range(100)})
        gone = ("7.0", str(tmp_path / "no-such.sock"))  # the workers reach no server there
        with workers.Workers(2) as pool, pytest.raises(MigrateError) as failed:
            pool.shared(server, 0, 10, workers.read, (gone, 0), content.Tally(), lambda n: None)
        assert "Redis 7.0: ConnectionError" in failed.value.message and "no-such.sock" in failed.value.message
