"""Real Redis and Valkey servers for tests and benchmarks: Redis 6.0, 7.0 and 8.0 and Valkey 8.0
from four Debian releases.

`package(version)` is an install prefix of that version unpacked from Debian packages
(`nixos_migrate.testing.provision.debian_prefix`; trixie's through its own loader) with
`bin/redis-server` (Debian ships it as a link to redis-check-rdb, which is the server when
called by that name), `bin/redis-cli` (valkey-* for Valkey). On NixOS set
`NIXOS_MIGRATE_REDIS_<8_0>` (or `NIXOS_MIGRATE_REDIS_VALKEY-8_0`) to a store path instead.

`Instance` is a data directory owned by an unprivileged user, and `running()` a server of one
version on it, as the service would run it, on a private socket.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixos_migrate.testing import provision
from nixos_migrate.testing.provision import ProvisionError, debian_prefix
from nixos_migrate_redis.server import connect

#: version -> (suite, packages: the tools and the libraries the server needs from that suite)
REDIS: dict[str, tuple[str, list[str]]] = {
    "6.0": ("bullseye", ["redis-tools", "liblua5.1-0", "lua-cjson", "lua-bitop", "libjemalloc2", "liblzf1",
                         "libssl1.1"]),
    "7.0": ("bookworm", ["redis-tools", "libjemalloc2", "liblzf1"]),
    "8.0": ("trixie", ["redis-tools", "libc6", "libjemalloc2", "liblzf1", "libssl3t64", "libsystemd0", "libstdc++6",
                       "libgcc-s1", "libatomic1", "libcap2"]),
    "valkey-8.0": ("bookworm-backports", ["valkey-tools", "libjemalloc2@bookworm", "liblzf1@bookworm"]),
}  # fmt: skip
ALL = tuple(REDIS)


def package(version: str) -> Path:
    entry = provision.catalogued("Redis", version, REDIS)
    if isinstance(entry, Path):
        return entry
    suite, packages = entry
    name = "valkey" if version.startswith("valkey-") else "redis"
    programs = {f"bin/{name}-{tool}": f"usr/bin/{name}-{tool}" for tool in ("cli", "check-rdb", "check-aof")}
    programs[f"bin/{name}-server"] = f"usr/bin/{name}-check-rdb"
    return debian_prefix(f"redis-{version}", suite, packages, programs)


def server_program(version: str) -> Path:
    name = "valkey" if version.startswith("valkey-") else "redis"
    return package(version) / "bin" / f"{name}-server"


@dataclass
class Instance:
    """A data directory under `root` owned by an unprivileged user, as NixOS's
    `services.redis.servers.NAME` makes one (it also keeps its redis.conf there)."""

    root: Path
    user: pwd.struct_passwd = field(default_factory=provision.server_user)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def create(self) -> Instance:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        (self.data_dir / "redis.conf").write_text("# the service's own configuration, not data\nport 6379\n")
        provision.traversable(self.root)
        provision.chown_tree(self.root, self.user)
        os.chmod(self.data_dir, 0o700)
        return self

    def settings(self, versions: tuple[str, ...] = ALL, **extra: object) -> dict[str, object]:
        return {"data_dir": str(self.data_dir), "packages": {v: str(package(v)) for v in versions}} | extra

    @contextlib.contextmanager
    def running(self, version: str, *, appendonly: bool = False, save: bool = True) -> Iterator[Any]:
        """The server of `version` on the data directory, loaded, as a redis-py client of db 0;
        with `save`, a SAVE before it stops (as a service stopping with save points does)."""
        import redis

        sock = self.run_dir / "test.sock"
        log = self.run_dir / "test.log"
        argv = [str(server_program(version)), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "777",
                "--dir", str(self.data_dir), "--save", "", "--appendonly", "yes" if appendonly else "no",
                "--daemonize", "no", "--logfile", str(log)]  # fmt: skip
        if not version.startswith("6."):
            argv += ["--enable-debug-command", "yes"]
        server = provision.Server(argv, user=self.user, env={"PATH": os.environ["PATH"]})

        def loaded() -> bool:
            try:
                return bool(connect(sock, timeout=5).ping())
            except redis.RedisError:
                return False

        try:
            server.start(loaded, timeout=600)
        except ProvisionError as exc:
            raise ProvisionError(f"{exc}\n{log.read_text(errors='replace')[-2000:] if log.exists() else ''}") from None
        client = connect(sock)
        try:
            yield client
            if save:
                client.save()
                if appendonly:
                    client.bgrewriteaof()
                    while True:
                        persistence = client.info("persistence")
                        if not persistence["aof_rewrite_in_progress"] and not persistence["aof_rewrite_scheduled"]:
                            break
                        time.sleep(0.05)
        finally:
            with contextlib.suppress(redis.RedisError):
                client.shutdown(nosave=True)
            client.close()
            server.stop(timeout=120)
