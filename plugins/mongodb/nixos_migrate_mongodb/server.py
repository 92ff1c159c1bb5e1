"""A private mongod of one major on a dbpath: started as the service's user without access
control, replication or a configuration file (its log goes beside its socket), reached through
its own 0700 unix socket (TCP on loopback only when `port` is set), stopped with `shutdown` and
waited for.

Nothing of the service's configuration (replica set, keyFile, auth) acts on the data while the
plugin works on it; a replica-set member is refused before this is reached.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nixos_migrate import sockets
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.runner import stop_process, wait_ready
from nixos_migrate_mongodb import installation

START_TIMEOUT = 3600.0  # a mongod after an unclean stop replays its journal first
STOP_TIMEOUT = 600.0


class Server:
    """A running private mongod; `client` is a pymongo client of it."""

    def __init__(self, version: str, db_path: Path, sock: Path, log: Path) -> None:
        self.version = version
        self.db_path = db_path
        self.socket = sock
        self.log = log
        self._client: Any = None

    @property
    def uri(self) -> str:
        return f"mongodb://{quote(str(self.socket), safe='')}/?directConnection=true"

    @property
    def client(self) -> Any:
        import pymongo  # imported when a server runs: every command would pay for it otherwise

        if self._client is None:
            self._client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=None)
        return self._client

    def command(self, command: dict[str, Any], db: str = "admin") -> dict[str, Any]:
        return dict(self.client[db].command(command))

    def fcv(self) -> dict[str, str]:
        """The featureCompatibilityVersion document (`version`, and during a change of it
        `targetVersion` and `previousVersion`)."""
        found = self.command({"getParameter": 1, "featureCompatibilityVersion": 1})
        return {k: str(v) for k, v in found["featureCompatibilityVersion"].items()}

    def set_fcv(self, version: str, *, confirm: bool) -> None:
        command: dict[str, Any] = {"setFeatureCompatibilityVersion": version}
        if confirm:
            command["confirm"] = True
        self.command(command)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def server_args(service: Service, version: str, db_path: Path, sock: Path) -> list[str]:
    s = installation.settings_of(service)
    bind = [str(sock), "127.0.0.1"] if s.port else [str(sock)]
    argv = [str(installation.mongod(s, version)), "--dbpath", str(db_path), "--port", str(s.port or 27017)]
    argv += ["--bind_ip", ",".join(bind), "--nounixsocket", "--filePermissions", "0700"]
    return argv


def _answers(server: Server) -> bool:
    if not sockets.answers(server.socket):
        return False
    try:
        server.command({"ping": 1})
    except Exception:
        server.close()
        return False
    return True


@contextlib.contextmanager
def running(service: Service, version: str, db_path: Path, *, name: str = "current") -> Iterator[Server]:
    """mongod `version` on `db_path` for the body, stopped cleanly after it (`shutdown`, which
    checkpoints and empties mongod.lock). A failure to start names mongod's own words."""
    s = installation.settings_of(service)
    sock = sockets.private_socket(service, s.socket, name)
    if sockets.answers(sock):
        raise MigrateError(f"a server already answers on {sock}", hint="stop it, or set settings.socket")
    sock.unlink(missing_ok=True)
    log = sock.with_suffix(".log")
    log.unlink(missing_ok=True)
    process = service.run.spawn(server_args(service, version, db_path, sock), log=log)
    server = Server(version, db_path, sock, log)
    clean = False
    try:
        problem = wait_ready(process, lambda: _answers(server), START_TIMEOUT)
        if problem is not None:
            raise MigrateError(f"mongod {version} did not start on {db_path} ({problem}):\n{server.log_tail()}")
        yield server
        clean = True
    finally:
        try:
            if process.poll() is None:
                with contextlib.suppress(Exception):
                    server.command({"shutdown": 1})
        finally:
            server.close()
            stop_process(process, [(0, STOP_TIMEOUT), (signal.SIGTERM, STOP_TIMEOUT)])
            sockets.release(sock)
        if clean and process.returncode not in (0, None):
            raise MigrateError(f"mongod {version} on {db_path} exited with {process.returncode}:\n{server.log_tail()}")
