# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Real Redis upgrades and downgrades: 6.0 -> 7.0 -> 8.0 by loading; 8.0 -> 7.0 by a rewritten
snapshot (RDB only) or a type-aware copy (AOF on), 7.0 -> 6.0 by the copy; Redis 7.0 -> Valkey
8.0 and back; the corpus compared by an independent digest at every version."""

from __future__ import annotations

from redis_env import Rig, content, make_instance

from nixos_migrate_redis import datafiles


def header(instance):
    found = datafiles.layout(instance.data_dir, "dump.rdb", "appendonly.aof", "appendonlydir")
    return found.newest.rdb_version if found.newest else None


def test_up_through_every_major_then_down_again_keeps_every_key(tmp_path):
    instance = make_instance(tmp_path, "6.0")
    before = content(instance, "6.0")
    assert sum(db["keys"] for db in before.values()) >= 100_000
    assert set(before["0"]["types"]) >= {"string", "list", "set", "zset", "hash"}
    rig = Rig(tmp_path, instance)

    planned = rig.cli("8.0", "plan", "--json")
    assert planned.code == 0, planned.output
    assert [(s["from_version"], s["to_version"]) for s in planned.json[0]["steps"]] == [("6.0", "7.0"), ("7.0", "8.0")]
    result = rig.cli("8.0", "up", "--json")
    assert result.code == 0, result.output
    assert rig.cli("8.0", "status", "--json").json[0]["data_version"] == "8.0"
    assert header(instance) == 12
    assert content(instance, "8.0") == before

    # a key written on 8.0 travels back down
    with instance.running("8.0") as client:
        client.set("written-on-8.0", "yes")
    after_write = content(instance, "8.0")
    assert after_write != before

    down = rig.cli("8.0", "down", "cache", "--to", "7.0", "--json")
    assert down.code == 0, down.output
    # one snapshot without AOF: rewritten in 7.0's format (its packed sets and its streams'
    # consumers written anew), loaded by 7.0 and compared with the backup's fingerprint
    assert "loaded the rewritten snapshot" in down.output and "sampled keys equal" in down.output
    assert "300 packed sets and 2 streams written anew" in down.output
    assert header(instance) == 10
    assert content(instance, "7.0") == after_write
    down = rig.cli("7.0", "down", "cache", "--to", "6.0", "--json")
    assert down.code == 0, down.output
    assert header(instance) == 9
    assert content(instance, "6.0") == after_write
    assert (instance.data_dir / "redis.conf").is_file()  # the service's own files stay

    verify = rig.cli("6.0", "verify", "--json")
    assert verify.code == 0, verify.output


def test_aof_from_a_single_file_to_the_multi_part_layout_and_back(tmp_path):
    instance = make_instance(tmp_path, "6.0", keys=20_000, big=False, appendonly=True)
    assert (instance.data_dir / "appendonly.aof").is_file()
    before = content(instance, "6.0", appendonly=True)
    rig = Rig(tmp_path, instance)
    result = rig.cli("8.0", "up", "--json")
    assert result.code == 0, result.output
    manifest = instance.data_dir / "appendonlydir" / "appendonly.aof.manifest"
    assert manifest.is_file() and not (instance.data_dir / "appendonly.aof").exists()
    assert content(instance, "8.0", appendonly=True) == before
    # the AOF is what a server with append-only on loads: the snapshot alone must not be needed
    (instance.data_dir / "dump.rdb").unlink()
    assert content(instance, "8.0", appendonly=True) == before

    # the backup's fingerprint in full this time: check takes it in its pass over the keys, and
    # the copy (the data is an AOF: every key by type, not a rewritten snapshot) is compared with
    # it as well as with what it read
    rig.extra["verify_depth"] = "full"
    down = rig.cli("8.0", "down", "cache", "--to", "7.0", "--json")
    assert down.code == 0, down.output
    assert "every key as read" in down.output and "sampled" not in down.output
    assert content(instance, "7.0", appendonly=True) == before
    down = rig.cli("7.0", "down", "cache", "--to", "6.0", "--json")
    assert down.code == 0, down.output
    assert "every key as read" in down.output and "sampled" not in down.output
    assert (instance.data_dir / "appendonly.aof").is_file() and not manifest.parent.exists()
    assert content(instance, "6.0", appendonly=True) == before


def test_redis_to_valkey_and_back_is_a_step_of_its_own_that_needs_acceptance(tmp_path):
    instance = make_instance(tmp_path, "7.0", keys=20_000)
    before = content(instance, "7.0")
    rig = Rig(tmp_path, instance)
    refused = rig.cli("valkey-8.0", "up")
    assert refused.code == 3, refused.output
    assert "crosses from redis to valkey" in refused.stderr
    result = rig.cli("valkey-8.0", "up", "--accept", "valkey-8.0", "--json")
    assert result.code == 0, result.output
    assert rig.cli("valkey-8.0", "status", "--json").json[0]["data_version"] == "valkey-8.0"
    assert header(instance) == 11
    assert content(instance, "valkey-8.0") == before

    back = rig.cli("valkey-8.0", "down", "cache", "--to", "7.0", "--accept", "7.0", "--json")
    assert back.code == 0, back.output
    assert header(instance) == 10
    assert content(instance, "7.0") == before
