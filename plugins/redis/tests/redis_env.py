"""Shared by the redis plugin's tests: an instance holding the corpus, its manifest, and the
independent digest of its content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis_corpus import digest, load

from nixos_migrate.fingerprint import tree_entries
from nixos_migrate.testing.manifests import ServiceRig
from nixos_migrate_redis.testing import ALL, Instance


def make_instance(root: Path, version: str, *, keys: int = 100_000, big: bool = True, appendonly: bool = False
                  ) -> Instance:  # fmt: skip
    """A data directory of `version` holding the corpus, saved as a stopping service saves it."""
    instance = Instance(root / "redis").create()
    with instance.running(version, appendonly=appendonly) as client:
        load(client, keys, big)
    return instance


def queue_with_a_deleted_pending_entry(client: Any) -> None:
    """A stream whose group holds a pending entry that is no longer in the stream (db 0)."""
    client.xadd("queue", {"job": "first"}, id="1-0")
    client.xadd("queue", {"job": "second"}, id="2-0")
    client.xgroup_create("queue", "workers", id="0")
    client.xreadgroup("workers", "alice", {"queue": ">"})
    client.xdel("queue", "1-0")  # delivered, never acknowledged, then deleted (or trimmed away)


def content(instance: Instance, version: str, *, appendonly: bool = False) -> dict[str, Any]:
    """The corpus digest read by the server of `version` (which must load the data)."""
    with instance.running(version, appendonly=appendonly, save=False) as client:
        return digest(client)


def files(instance: Instance) -> dict[str, str]:
    """Every file of the data directory, digested (for failures, which must leave it exactly as
    it was; a difference names the files)."""
    return tree_entries(instance.data_dir)


class Rig(ServiceRig):
    """An instance with a manifest (service `cache`) and the CLI bound to it."""

    plugin = "redis"
    service_name = "cache"

    versions = ALL
