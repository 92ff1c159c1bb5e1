"""Settings of the `redis` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nixos_migrate.manifest import AbsolutePath, VersionedSettings
from nixos_migrate_redis import versions

Flavour = Literal["redis", "valkey"]


class RedisSettings(VersionedSettings):
    """
    data_dir: the server's `dir` (NixOS: /var/lib/redis-NAME, or /var/lib/redis for the server
        named "").
    packages: series ("7.0", "8.0", "valkey-8.0") -> install prefix holding bin/redis-server (or
        bin/valkey-server) and bin/redis-cli (or valkey-cli).
    flavour: redis or valkey, the service's package (NixOS fills it): an initial_version given
        without the `valkey-` prefix is of that flavour. The files of the data name their writer
        otherwise.
    dbfilename: the RDB snapshot's file name in data_dir (NixOS: dump.rdb).
    appendonly: whether the server keeps an AOF (NixOS: services.redis.servers.NAME.appendOnly);
        default: whether data_dir holds one.
    appendfilename, appenddirname: the AOF's names (defaults appendonly.aof, appendonlydir).
    socket: the unix socket of the private servers the plugin starts (default: in a private
        directory under the state directory); they listen on TCP only when `port` is set.
    port: a loopback TCP port for the private servers (default: none).
    There is no password setting: the private servers read no configuration (no requirepass, no
    ACL file) and only their 0700 socket reaches them; the service's own server is stopped by its
    unit before a step, never talked to.
    initial_version: the series that wrote data whose files do not name it (an AOF without an
        RDB preamble), the first time nixos-migrate sees it; later steps are in the journal.
    batch: keys read or written per round trip in fingerprints and logical copies.
    jobs: worker processes of a logical copy and of reading the copy back (each with its own
        connections; the private servers each work in one thread): 2 by default.
    verify_depth: how much of the content the backup's fingerprint reads, and so what a load
        step compares after it: full (every key: name, type, expiry and the digest of its value),
        sample (per database the exact counts of keys with and without an expiry, and every
        detail of about 16 000 keys spread over the keyspace), or auto (= sample: a load step's
        new server reads the RDB the old one wrote, every byte under its CRC-64). A logical step
        writes every key anew and compares its copy in full with what it read whatever the depth.
    """

    @staticmethod
    def version_key(version: str) -> object:
        return versions.key(version)

    data_dir: AbsolutePath
    packages: dict[str, AbsolutePath] = {}
    flavour: Flavour | None = None
    dbfilename: str = Field(default="dump.rdb", pattern=r"^[^/]+$")
    appendonly: bool | None = None
    appendfilename: str = Field(default="appendonly.aof", pattern=r"^[^/]+$")
    appenddirname: str = Field(default="appendonlydir", pattern=r"^[^/]+$")
    socket: AbsolutePath | None = None
    port: int | None = Field(default=None, ge=1024, le=65535)
    initial_version: str | None = None
    batch: int = Field(default=1000, ge=10, le=100_000)
    jobs: int = Field(default=2, ge=1, le=64)
    verify_depth: Literal["auto", "full", "sample"] = "auto"
