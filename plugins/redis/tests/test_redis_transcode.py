# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The rewrite of a newer server's snapshot in an older format (transcode.py), against real
servers: the corpus written by Redis 8.0 (format 12) and Valkey 8.0 (11) rewritten for Redis 7.0
(10) and Valkey 8.0, loaded there, and read back equal by the corpus's independent digest, the
streams' counters and consumers included; the file passes the target's own redis-check-rdb (its
CRC-64 among the checks). LZF is checked against what a server compressed; a damaged or cut
file, and a key the rewrite does not carry, are refused with nothing written in place; through
the CLI a hash kept in 7.4's field-expiry encoding (its expiries removed) makes the down step
copy every key by type instead, and succeed; and a stream's pending entry whose entry was
deleted, which a copy by commands cannot recreate, goes down in the rewritten snapshot; a
cluster node's snapshot loses only its slot sizes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from redis_corpus import of_db
from redis_env import Rig, content, make_instance, queue_with_a_deleted_pending_entry

from nixos_migrate.errors import MigrateError
from nixos_migrate.progress import NullProgress
from nixos_migrate.testing import provision
from nixos_migrate_redis import datafiles, transcode, versions
from nixos_migrate_redis.server import connect
from nixos_migrate_redis.testing import Instance, package, server_program

RELEASES = {"7.0": ("redis", "7.0.15"), "valkey-8.0": ("valkey", "8.0.1")}


def _streams(client):
    """What the corpus's digest does not read of its streams: the counters 7.0 added, each
    group's entries read, each consumer's pending count; and when each consumer was last seen
    (ms, from its idle time)."""
    jobs = of_db(client, 5)
    found, seen = {}, {}
    for name in (b"jobs", b"empty-stream"):
        info = jobs.execute_command("XINFO", "STREAM", name)
        fields = dict(zip(info[::2], info[1::2], strict=True))
        groups = []
        for group in jobs.execute_command("XINFO", "GROUPS", name):
            g = dict(zip(group[::2], group[1::2], strict=True))
            consumers = []
            for consumer in jobs.execute_command("XINFO", "CONSUMERS", name, g[b"name"]):
                c = dict(zip(consumer[::2], consumer[1::2], strict=True))
                consumers.append((c[b"name"], c[b"pending"]))
                seen[name, g[b"name"], c[b"name"]] = time.time() * 1000 - int(c[b"idle"])
            groups.append((g[b"name"], g[b"entries-read"], g[b"pending"], sorted(consumers)))
        found[name] = (fields[b"entries-added"], fields[b"max-deleted-entry-id"],
                       fields[b"recorded-first-entry-id"], sorted(groups))  # fmt: skip
    return found, seen


def _convert(instance, target, dest):
    return transcode.convert(instance.data_dir / "dump.rdb", dest, versions.RDB[target], RELEASES[target],
                             NullProgress())  # fmt: skip


@pytest.mark.parametrize(("source", "target"), [("8.0", "7.0"), ("valkey-8.0", "7.0"), ("8.0", "valkey-8.0")])
def test_a_rewritten_snapshot_loads_in_the_older_server_with_every_key(tmp_path, source, target):
    instance = make_instance(tmp_path, source, keys=20_000)
    before = content(instance, source)
    with instance.running(source, save=False) as client:
        streams = _streams(client)
    original = (instance.data_dir / "dump.rdb").read_bytes()
    dest = tmp_path / "rewritten.rdb"
    done = _convert(instance, target, dest)

    assert (instance.data_dir / "dump.rdb").read_bytes() == original  # the source is only read
    assert sum(done.keys.values()) == sum(db["keys"] for name, db in before.items() if name != "functions")
    assert [name for name, _ in before["functions"]] == [b"audit", b"shop"]  # carried in the file as they are
    # the corpus's text sets are packed from 7.2 on; its two streams have consumers
    assert (done.sets, done.streams) == ((300, 2) if target == "7.0" else (0, 0))
    header = datafiles.read_header(dest)
    assert header is not None and header.rdb_version == versions.RDB[target]
    assert header.writer == RELEASES[target]
    check = package(target) / "bin" / ("valkey-check-rdb" if target.startswith("valkey") else "redis-check-rdb")
    checked = subprocess.run([str(check), str(dest)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0 and "RDB looks OK" in checked.stdout, checked.stdout + checked.stderr

    shutil.copyfile(dest, instance.data_dir / "dump.rdb")
    assert content(instance, target) == before
    with instance.running(target, save=False) as client:
        found, seen = _streams(client)
    assert found == streams[0] and seen.keys() == streams[1].keys()
    assert all(abs(seen[c] - streams[1][c]) < 250 for c in seen), (seen, streams[1])


def test_lzf_decompresses_what_a_server_compressed(tmp_path):
    instance = Instance(tmp_path / "redis").create()
    values = [b"x" * 3000, ("Grüße " * 400).encode(), bytes(range(256)) * 64, b"ab" * 10 + b"c" * 5000]
    with instance.running("8.0", save=False) as client:
        for i, value in enumerate(values):
            client.set(f"v{i}", value)
            payload = client.dump(f"v{i}")  # type 0, the value as an RDB string, format, CRC
            assert payload[1] == 0xC3, "the server did not compress this value"
            found, end = transcode.Reader(payload, tmp_path / "dump").string(1)
            assert found == value and end == len(payload) - 10


def test_a_damaged_or_cut_snapshot_is_refused_and_a_key_it_cannot_carry_is_named(tmp_path):
    instance = make_instance(tmp_path, "8.0", keys=2_000, big=False)
    rdb = instance.data_dir / "dump.rdb"
    good = rdb.read_bytes()
    dest = tmp_path / "out.rdb"

    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x01
    rdb.write_bytes(bytes(damaged))
    with pytest.raises(MigrateError, match="does not match its own checksum"):
        _convert(instance, "7.0", dest)

    rdb.write_bytes(good[: len(good) // 2] + bytes(8))  # cut, with no checksum to catch it
    with pytest.raises(transcode.Unconvertible, match=r"not an RDB file this rewrite reads|beyond the end"):
        _convert(instance, "7.0", dest)

    rdb.write_bytes(good)
    with instance.running("8.0") as client:
        client.hset("session:kept", mapping={"user": "u1", "csrf": "x"})
        client.execute_command("HPEXPIRE", "session:kept", 86_400_000, "FIELDS", 1, "csrf")
        client.execute_command("HPERSIST", "session:kept", "FIELDS", 1, "csrf")
    with pytest.raises(transcode.Unconvertible, match="db0:session:kept is a hash with field expiries"):
        _convert(instance, "7.0", dest)

    with pytest.raises(transcode.Unconvertible, match="not a rewrite"):
        transcode.convert(rdb, dest, 9, ("redis", "6.0.16"), NullProgress())


def test_a_key_the_rewrite_does_not_carry_makes_the_down_step_copy_every_key(tmp_path):
    instance = make_instance(tmp_path, "8.0", keys=5_000, big=False)
    with instance.running("8.0") as client:
        # 8.0 keeps the hash in its field-expiry encoding after the expiry is removed: 7.0 can hold
        # it, the rewrite does not carry it
        client.hset("session:kept", mapping={"user": "u1", "csrf": "x"})
        client.execute_command("HPEXPIRE", "session:kept", 86_400_000, "FIELDS", 1, "csrf")
        client.execute_command("HPERSIST", "session:kept", "FIELDS", 1, "csrf")
    before = content(instance, "8.0")
    rig = Rig(tmp_path, instance)
    down = rig.cli("7.0", "up", "--json")  # to an older target: a down step
    assert down.code == 0, down.output
    assert "is a hash with field expiries; every key is copied by type instead" in down.output
    assert "every key as read" in down.output and "2 function libraries" in down.output
    assert len(before["functions"]) == 2  # loaded as their code into 7.0
    header = datafiles.read_header(instance.data_dir / "dump.rdb")
    assert header is not None and header.rdb_version == 10
    assert content(instance, "7.0") == before


def _pending(client):
    return [(p["message_id"], p["consumer"], p["times_delivered"])
            for p in client.xpending_range("queue", "workers", "-", "+", 10)]  # fmt: skip


def test_a_pending_entry_whose_entry_was_deleted_goes_down_in_the_rewritten_snapshot(tmp_path):
    instance = make_instance(tmp_path, "8.0", keys=2_000, big=False)
    with instance.running("8.0") as client:
        queue_with_a_deleted_pending_entry(client)
        pending = _pending(client)
    assert pending == [(b"1-0", b"alice", 1), (b"2-0", b"alice", 1)]
    before = content(instance, "8.0")
    rig = Rig(tmp_path, instance)
    down = rig.cli("7.0", "up", "--json")  # a copy by commands could not recreate it: XCLAIM needs the entry
    assert down.code == 0, down.output
    assert "loaded the rewritten snapshot" in down.output
    assert content(instance, "7.0") == before
    with instance.running("7.0", save=False) as client:
        assert _pending(client) == pending


def test_a_cluster_nodes_snapshot_loses_only_its_slot_sizes(tmp_path):
    """7.4+ writes each slot's sizes (opcode 0xF4) before its keys in cluster mode; 7.0 does not
    know the opcode, and the sizes are only a hint for the load."""
    instance = Instance(tmp_path / "redis").create()
    sock = instance.run_dir / "cluster.sock"
    argv = [str(server_program("8.0")), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "777",
            "--dir", str(instance.data_dir), "--save", "", "--cluster-enabled", "yes", "--daemonize", "no",
            "--cluster-config-file", str(instance.data_dir / "nodes.conf"),
            "--logfile", str(instance.run_dir / "cluster.log")]  # fmt: skip
    server = provision.Server(argv, user=instance.user, env={"PATH": os.environ["PATH"]})
    server.start(sock.exists, timeout=60)
    try:
        client = connect(sock)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        for _ in range(100):
            if client.cluster("info")["cluster_state"] == "ok":
                break
            time.sleep(0.05)
        pipe = client.pipeline(transaction=False)  # one key a command: a cluster refuses keys of several slots
        for i in range(1000):
            pipe.set(f"k{i}", f"v{i}")
        pipe.execute()
        client.save()
        client.shutdown(nosave=True)
    finally:
        server.stop(timeout=60)
    rdb = instance.data_dir / "dump.rdb"
    assert b"\xf4" in rdb.read_bytes()[:200]  # the first slot's sizes, before its keys
    done = _convert(instance, "7.0", tmp_path / "rewritten.rdb")
    assert done.keys == {0: 1000}
    shutil.copyfile(tmp_path / "rewritten.rdb", rdb)
    with instance.running("7.0", save=False) as client:
        assert client.dbsize() == 1000 and client.get("k596") == b"v596"
