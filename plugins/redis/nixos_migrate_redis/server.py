"""A private server of one version on a data directory: started as the service's user with no
snapshots of its own (`save ""`), reached through its own socket (TCP only when `port` is set),
ready once it has loaded the data, always stopped by pid.

It takes no configuration file: the data's layout (file names, append-only) comes from the
settings, and nothing else the service's configuration holds (replication, eviction, modules,
passwords) may act on the data while the plugin works on it.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from nixos_migrate import sockets
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.runner import stop_process, wait_ready
from nixos_migrate_redis import installation, versions

T = TypeVar("T")

START_TIMEOUT = 3600.0  # loading a big dataset takes a while
STOP_TIMEOUT = 600.0


class Server:
    """A running private server; `client(db)` is a redis-py client of one database."""

    def __init__(self, version: str, data_dir: Path, sock: Path, log: Path) -> None:
        self.version = version
        self.data_dir = data_dir
        self.socket = sock
        self.log = log
        # redis-py's commands are partly typed: clients are Any here
        self._clients: dict[tuple[int, bool], Any] = {}
        #: whether DEBUG DIGEST-VALUE of a string equals content.string_digest (None: not yet asked)
        self.strings_digested_alike: bool | None = None

    @property
    def modern(self) -> bool:
        """7.0 and later (PEXPIRETIME, XSETID's ENTRIESADDED, multi-part AOF)."""
        return versions.key(self.version) >= versions.key("7.0")

    def client(self, db: int = 0, *, raw: bool = False) -> Any:
        """A client of database `db`; `raw`: replies as the server sends them (redis-py reshapes
        some, XINFO and XPENDING among them, into dicts that differ between its versions)."""
        if (db, raw) not in self._clients:
            client = connect(self.socket, db)
            if raw:
                client.response_callbacks.clear()
            self._clients[db, raw] = client
        return self._clients[db, raw]

    def command(self, *args: Any, db: int = 0) -> Any:
        return self.client(db).execute_command(*args)

    def info(self, section: str) -> dict[str, Any]:
        return dict(self.client().info(section))

    def databases(self) -> dict[int, int]:
        """db number -> key count, of the databases holding keys."""
        return {db: keys for db, (keys, _) in self.keyspace().items()}

    def keyspace(self) -> dict[int, tuple[int, int]]:
        """db number -> (keys, keys with an expiry), of the databases holding keys."""
        found = self.info("keyspace")
        return {
            int(name[2:]): (int(fields["keys"]), int(fields["expires"]))
            for name, fields in found.items()
            if name.startswith("db")
        }

    def save(self) -> None:
        """A snapshot of everything now, and with append-only on a rewritten AOF (the layout of
        this version), both finished before it returns."""
        self.command("SAVE")
        self.rewrite_aof()

    def saved_during(self, work: Callable[[], T]) -> T:
        """`work`'s result, run while a fork writes the snapshot of the data as it is now (BGSAVE;
        `work` must not write); then, with append-only on, the AOF rewritten. A fork that fails
        (no memory for it) falls back to SAVE after `work`."""
        from redis.exceptions import ResponseError

        try:
            self.command("BGSAVE")
        except ResponseError:  # no fork: the server writes it itself, after
            result = work()
            self.save()
            return result
        result = work()
        deadline = time.monotonic() + START_TIMEOUT
        while self.info("persistence").get("rdb_bgsave_in_progress"):
            if time.monotonic() > deadline:
                raise MigrateError(f"{versions.label(self.version)}: the snapshot did not end")
            time.sleep(0.05)
        if self.info("persistence").get("rdb_last_bgsave_status", "ok") != "ok":
            self.command("SAVE")  # the fork failed: the server writes it itself
        self.rewrite_aof()
        return result

    def rewrite_aof(self) -> None:
        """With append-only on, the AOF rewritten from the data as it is (this version's layout)."""
        if self.info("persistence").get("aof_enabled"):
            self.command("BGREWRITEAOF")
            self.wait_rewrite()

    def wait_rewrite(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            p = self.info("persistence")
            if not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled"):
                if p.get("aof_last_bgrewrite_status", "ok") != "ok":
                    raise MigrateError(f"{versions.label(self.version)}: the AOF rewrite failed; see {self.log}")
                return
            if time.monotonic() > deadline:
                raise MigrateError(f"{versions.label(self.version)}: the AOF rewrite did not end")
            time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def close(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()


def connect(sock: Path, db: int = 0, timeout: float = START_TIMEOUT) -> Any:
    """A redis-py client of database `db` through `sock` that never retries: redis-py 6+ retries a
    lost connection three times with a backoff, which made every SHUTDOWN (whose connection the
    server closes as it exits) wait ~4 s, and would hide a server that died."""
    import redis as redis_py  # imported when a server runs: it costs every command otherwise
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis_py.Redis(
        unix_socket_path=str(sock),
        db=db,
        socket_timeout=timeout,
        decode_responses=False,
        protocol=2,  # replies shaped as every version sends them (RESP3 maps differ)
        retry=Retry(NoBackoff(), 0),
    )


def server_args(service: Service, version: str, data_dir: Path, sock: Path, log: Path, appendonly: bool) -> list[str]:
    s = installation.settings_of(service)
    root = installation.prefix(s, version)
    argv = [str(installation.tool(root, "server", version))]
    argv += ["--port", str(s.port or 0), "--bind", "127.0.0.1", "--protected-mode", "yes"]
    argv += ["--unixsocket", str(sock), "--unixsocketperm", "700", "--daemonize", "no", "--logfile", str(log)]
    argv += ["--dir", str(data_dir), "--dbfilename", s.dbfilename, "--save", ""]
    argv += ["--appendonly", "yes" if appendonly else "no", "--appendfilename", s.appendfilename]
    # the data is written by the plugin's own SAVE; nothing else may touch it meanwhile
    argv += ["--stop-writes-on-bgsave-error", "no", "--maxmemory", "0"]
    if versions.key(version) >= versions.key("7.0"):
        argv += ["--appenddirname", s.appenddirname, "--enable-debug-command", "local"]
    return argv


def _loaded(process_sock: Path) -> bool:
    """The server answers PING (it answers LOADING while it reads the data)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(process_sock))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running(
    service: Service, version: str, data_dir: Path, *, appendonly: bool, name: str = "current"
) -> Iterator[Server]:
    """The server of `version` on `data_dir` for the body, once it has loaded the data; stopped
    after it without a save of its own (SHUTDOWN NOSAVE: what the body saved is what is on disk;
    an AOF is flushed). A failure to load names the server's own words."""
    sock = sockets.private_socket(service, installation.settings_of(service).socket, name)
    if sockets.answers(sock):
        raise MigrateError(f"a server already answers on {sock}", hint="stop it, or set settings.socket")
    sock.unlink(missing_ok=True)
    log = sock.with_suffix(".log")
    log.unlink(missing_ok=True)
    process = service.run.spawn(server_args(service, version, data_dir, sock, log, appendonly))
    server = Server(version, data_dir, sock, log)
    clean = False
    try:
        problem = wait_ready(process, lambda: _loaded(sock), START_TIMEOUT)
        if problem is not None:
            raise MigrateError(f"{versions.label(version)} did not load {data_dir} ({problem}):\n{server.log_tail()}")
        yield server
        clean = True
    finally:
        asked = False
        try:
            if process.poll() is None:
                with contextlib.suppress(Exception):
                    server.command("SHUTDOWN", "NOSAVE")
                asked = True
        finally:
            server.close()
            steps = [(0, STOP_TIMEOUT), (signal.SIGTERM, STOP_TIMEOUT)] if asked else [(signal.SIGTERM, STOP_TIMEOUT)]
            stop_process(process, steps)
            sockets.release(sock)
        if clean and process.returncode not in (0, None):
            raise MigrateError(
                f"{versions.label(version)} on {data_dir} exited with {process.returncode}:\n{server.log_tail()}"
            )
