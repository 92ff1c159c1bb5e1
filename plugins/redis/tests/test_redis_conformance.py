# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The redis plugin passes the conformance suite on real Redis data: 6.0 -> 7.0 (the hop that
moves AOF into appendonlydir/ and whose down is the logical copy), compared by the corpus's
independent digest. 7.0 -> 8.0 both ways is test_redis_upgrade's (the suite's time is kept
under CI's 30 minutes)."""

from __future__ import annotations

import json
from pathlib import Path

from redis_env import content, make_instance

from nixos_migrate.testing.conformance import Instance, PluginConformance
from nixos_migrate_redis import datafiles, versions
from nixos_migrate_redis.testing import ALL
from nixos_migrate_redis.testing import Instance as Redis


class TestRedisConformance(PluginConformance):
    plugin = "redis"
    hops = [("6.0", "7.0")]

    def create(self, root: Path, version: str | None) -> Instance:
        if version is None:
            instance = Redis(root / "redis").create()
        else:
            instance = make_instance(root, version, keys=3000, big=False)
        return Instance(settings=instance.settings(ALL), spec={"user": instance.user.pw_name},
                        data={"instance": instance})  # fmt: skip

    def fingerprint(self, instance: Instance) -> str:
        redis: Redis = instance.data["instance"]
        found = datafiles.layout(redis.data_dir, "dump.rdb", "appendonly.aof", "appendonlydir")
        if found.empty or found.newest is None or found.newest.writer is None:
            return "no data"
        flavour, release = found.newest.writer
        version = versions.series(release, flavour)
        return f"{version}: {json.dumps(content(redis, version), sort_keys=True)}"
