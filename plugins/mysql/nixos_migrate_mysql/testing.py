"""Real MariaDB servers for tests and benchmarks: 10.5, 10.11 and 11.8 from three Debian releases.

`mariadb(version)` is an install prefix of that version, unpacked from Debian packages of the
release that ships it (`nixos_migrate.testing.provision.debian_prefix`; trixie's through its own
loader), laid out as the plugin expects a package: `bin/` (server, install-db, upgrade, clients),
`share/mysql` (error messages and the bootstrap SQL). On NixOS set
`NIXOS_MIGRATE_MARIADB_<10_11>` to a store path instead.

`Instance` is a private server of one version as an unprivileged user on a loopback port and a
socket in its own directory, made with `mariadb-install-db` and always stopped by pid.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixos_migrate import sockets
from nixos_migrate.testing import provision
from nixos_migrate.testing.provision import ProvisionError, debian_prefix

#: the packages of each version: (suite, server packages, libraries it needs from that suite)
MARIADB: dict[str, tuple[str, list[str]]] = {
    "10.5": (
        "bullseye",
        ["mariadb-server-core-10.5", "mariadb-client-10.5", "mariadb-client-core-10.5",
         "libsnappy1v5", "libaio1", "libssl1.1"],
    ),
    "10.11": (
        "bookworm",
        ["mariadb-server-core", "mariadb-client", "mariadb-client-core", "liburing2", "libaio1"],
    ),
    "11.8": (
        "trixie",
        ["mariadb-server-core", "mariadb-client", "mariadb-client-core", "libc6", "libaio1t64", "liburing2",
         "libnuma1", "libsystemd0", "libssl3t64", "libstdc++6", "libgcc-s1", "libpcre2-8-0", "libcrypt1",
         "zlib1g", "libedit2", "libbsd0", "libmd0", "libncursesw6", "libtinfo6", "libcap2", "libzstd1",
         "liblz4-1", "liblzma5", "libgcrypt20", "libgpg-error0"],
    ),
}  # fmt: skip

SERVER_PROGRAMS = ("mariadbd",)
#: programs of usr/bin that the plugin and mariadb-install-db run
TOOLS = (
    "mariadb", "mariadb-admin", "mariadb-dump", "mariadb-check", "mariadb-upgrade", "my_print_defaults", "resolveip",
)  # fmt: skip


def mariadb(version: str) -> Path:
    """A MariaDB prefix of `version` (10.5, 10.11, 11.8): `bin/mariadbd`, `bin/mariadb-install-db`,
    the clients, `share/mysql`. On NixOS set `NIXOS_MIGRATE_MARIADB_<10_11>` to a store path."""
    entry = provision.catalogued("MariaDB", version, MARIADB)
    if isinstance(entry, Path):
        return entry
    suite, packages = entry
    # mariadb-install-db looks for the server as bin/mysqld (10.5) or sbin/mariadbd (10.11 on, as
    # Debian builds it); trixie moved the share files to mariadb/
    programs = {
        "bin/mariadbd": "usr/sbin/mariadbd",
        "sbin/mariadbd": "usr/sbin/mariadbd",
        "bin/mysqld": "usr/sbin/mariadbd",
        "bin/mariadb-install-db": "usr/bin/mariadb-install-db",
    }
    programs |= {f"bin/{name}": f"usr/bin/{name}" for name in TOOLS}
    share = "usr/share/mariadb" if suite == "trixie" else "usr/share/mysql"
    return debian_prefix(f"mariadb-{version}", suite, packages, programs, {"share/mysql": share})


@dataclass
class Instance:
    """A MariaDB data directory under `root` owned by an unprivileged user, as NixOS's
    `services.mysql` makes one (`mariadb-install-db --user`: root and that user log in through
    the socket by unix_socket authentication)."""

    root: Path
    version: str
    user: pwd.struct_passwd = field(default_factory=provision.server_user)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def settings(self, versions: Sequence[str], **extra: object) -> dict[str, object]:
        return {"data_dir": str(self.data_dir), "packages": {v: str(mariadb(v)) for v in versions}} | extra

    def create(self) -> Instance:
        """A fresh data directory of `version`."""
        self.root.mkdir(parents=True, exist_ok=True)
        provision.traversable(self.root)
        self.run_dir.mkdir(exist_ok=True)
        provision.chown_tree(self.root, self.user)
        prefix = mariadb(self.version)
        provision.run_as(
            self.user,
            [prefix / "bin/mariadb-install-db", "--no-defaults", f"--basedir={prefix}", f"--datadir={self.data_dir}",
             f"--user={self.user.pw_name}", "--skip-test-db", "--skip-name-resolve", f"--tmpdir={self.run_dir}"],
        )  # fmt: skip
        return self

    def server(self, version: str | None = None, *, slow_shutdown: bool = True) -> RunningServer:
        """The server of `version` (default: the instance's) on the data directory, as a context
        manager; stopped with a slow shutdown by default, as the plugin expects to find data."""
        return RunningServer(self, version or self.version, slow_shutdown)


class RunningServer:
    def __init__(self, instance: Instance, version: str, slow_shutdown: bool) -> None:
        self.instance = instance
        self.version = version
        self.slow = slow_shutdown
        self.socket = instance.run_dir / "test.sock"
        self.log = instance.run_dir / "test.err"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RunningServer:
        prefix = mariadb(self.version)
        i = self.instance
        self.log.unlink(missing_ok=True)
        argv = [
            str(prefix / "bin/mariadbd"), "--no-defaults", f"--basedir={prefix}", f"--datadir={i.data_dir}",
            f"--socket={self.socket}", f"--pid-file={i.run_dir / 'test.pid'}", f"--log-error={self.log}",
            "--skip-networking", f"--lc-messages-dir={prefix / 'share/mysql'}", "--event-scheduler=OFF",
            f"--tmpdir={i.run_dir}",
        ]  # fmt: skip
        self.server = provision.Server(argv, user=i.user, env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8"})
        try:
            self.server.start(lambda: sockets.greets(self.socket), timeout=120)
        except ProvisionError as exc:
            raise ProvisionError(
                f"{exc}\n{self.log.read_text(errors='replace')[-2000:] if self.log.exists() else ''}"
            ) from None
        return self

    def connect(self, database: str | None = None) -> Any:
        import mysql.connector

        return mysql.connector.connect(
            unix_socket=str(self.socket), user="root", database=database, autocommit=True, charset="utf8mb4",
            use_pure=True,
        )  # fmt: skip

    def execute(self, sql: str, database: str | None = None) -> None:
        """Run a script of statements separated by `;` lines through the `mariadb` client (it
        knows DELIMITER for routines and triggers)."""
        client = mariadb(self.version) / "bin/mariadb"
        result = subprocess.run(
            [str(client), f"--socket={self.socket}", "-u", "root", "--default-character-set=utf8mb4",
             *([database] if database else [])],
            input=sql.encode(), capture_output=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ProvisionError(f"mariadb client failed: {result.stderr.decode(errors='replace')[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        try:
            if self.slow and exc[0] is None:
                conn = self.connect()
                conn.cursor().execute("SET GLOBAL innodb_fast_shutdown = 0")
                conn.close()
        finally:
            self.server.stop(timeout=120)
