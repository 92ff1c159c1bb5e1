"""A private server of one version on a data directory: started as the service's user, reached
only through its own socket (TCP only when `port` is set), always stopped by pid.

It runs without the event scheduler, replication, the binary log or Galera, so that nothing
but the plugin changes the data while it is up; with the service's option file (`config_file`) first, so that
settings the data depends on (page size, file paths, lower_case_table_names) hold, and the
plugin's own options after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixos_migrate import sockets
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.runner import stop_process, wait_ready
from nixos_migrate_mysql import installation, versions
from nixos_migrate_mysql.settings import MysqlSettings

if TYPE_CHECKING:
    from mysql.connector.abstracts import MySQLConnectionAbstract

START_TIMEOUT = 600.0  # crash recovery or a change-buffer merge of a big instance takes a while
STOP_TIMEOUT = 3600.0  # a slow shutdown purges and merges everything first


class Server:
    """A running private server; `query` runs SQL as `admin_user` through its socket."""

    def __init__(self, service: Service, version: str, root: Path, data_dir: Path, sock: Path, log: Path) -> None:
        self.service = service
        self.version = version
        self.root = root
        self.data_dir = data_dir
        self.socket = sock
        self.log = log
        self.skip_grants = False
        self._connection: MySQLConnectionAbstract | None = None

    @property
    def settings(self) -> MysqlSettings:
        return installation.settings_of(self.service)

    def new_connection(self) -> MySQLConnectionAbstract:
        """A connection of its own (for work in parallel); the caller closes it."""
        import mysql.connector  # imported when a server runs: it costs every command otherwise

        s = self.settings
        password = s.password_file.read_text().rstrip("\n") if s.password_file else ""
        connection = mysql.connector.connect(
            unix_socket=str(self.socket), user=s.admin_user, password=password, autocommit=True,
            charset="utf8mb4", use_pure=True, connection_timeout=60,
        )  # fmt: skip
        # values read as text (fingerprints) must not depend on the server's zone
        cursor = connection.cursor()
        cursor.execute("SET time_zone = '+00:00'")
        cursor.close()
        return connection  # type: ignore[return-value]

    def connection(self) -> MySQLConnectionAbstract:
        if self._connection is None:
            self._connection = self.new_connection()
        return self._connection

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.connection().cursor()
        try:
            cursor.execute(sql, tuple(params))
            rows = cursor.fetchall() if cursor.description is not None else []
        finally:
            cursor.close()
        return [tuple(row) for row in rows]

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def twin(self) -> Server:
        """The same server through a connection of its own, for work in another thread (`query`
        shares one connection); the caller closes it."""
        other = Server(self.service, self.version, self.root, self.data_dir, self.socket, self.log)
        other.skip_grants = self.skip_grants
        return other

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    @contextlib.contextmanager
    def client_options(self) -> Iterator[Path]:
        """An option file for the command-line clients (user, password, socket), 0600 and removed
        after: the password never appears in argv. A server without grant tables takes no
        password."""
        s = self.settings
        fd, name = tempfile.mkstemp(prefix="client-", suffix=".cnf", dir=self.service.state_dir)
        try:
            lines = ["[client]", f"user={s.admin_user}", f"socket={self.socket}"]
            if s.password_file is not None and not self.skip_grants:
                secret = s.password_file.read_text().rstrip("\n").replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'password="{secret}"')
            with os.fdopen(fd, "w") as handle:
                handle.write("\n".join(lines) + "\n")
            yield Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""


#: what a read-only server still writes: Aria's control file and log (a start stamp); put back as
#: they were when it stops, so that looking at the data leaves every byte of it as it was
ARIA_FILES = ("aria_log_control", "aria_log.*")
READ_ONLY = (
    "--innodb-read-only=1",
    "--read-only",
    "--innodb-buffer-pool-load-at-startup=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
)

#: a load into a fresh data directory needs no durability until the server stops: a crash before
#: that throws the directory away, and a clean shutdown writes and syncs every page (the service,
#: started later with its own options, keeps the doublewrite buffer and flushes as it is told)
BULK_LOAD = ("--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0")


def server_args(service: Service, version: str, root: Path, data_dir: Path, sock: Path, run: Path) -> list[str]:
    s = installation.settings_of(service)
    argv = [str(installation.tool(root, "server"))]
    argv.append(f"--defaults-file={s.config_file}" if s.config_file else "--no-defaults")
    argv += [
        f"--basedir={root}",
        f"--datadir={data_dir}",
        f"--socket={sock}",
        f"--pid-file={run / (sock.stem + '.pid')}",
        f"--log-error={run / (sock.stem + '.err')}",
        f"--tmpdir={run}",  # private: servers of parallel runs name their temporary files alike
        "--event-scheduler=OFF",
        # MySQL renamed replication's options in 8.0.26 and dropped the old names in 8.4
        "--skip-replica-start"
        if versions.key(version) >= (8, 4) and not versions.is_mariadb(version)
        else "--skip-slave-start",
        "--skip-log-bin",
        # a Galera node's option file must not make a private server join the cluster
        "--loose-wsrep-on=OFF",
        # table sizes from the index pages as they are, not from saved statistics, which a bulk
        # load shut down soon after leaves at a few pages: the fingerprint chooses the tables it
        # splits and samples by size; and no write of statistics into the data
        "--innodb-stats-persistent=0",
    ]
    share = installation.share_dir(root)
    if share is not None:
        argv.append(f"--lc-messages-dir={share}")
    if s.port is None:
        argv.append("--skip-networking")
    else:
        argv += [f"--port={s.port}", "--bind-address=127.0.0.1"]
    return argv


@contextlib.contextmanager
def running(
    service: Service,
    version: str,
    data_dir: Path,
    *,
    name: str = "current",
    slow_shutdown: bool = False,
    read_only: bool = False,
    skip_grants: bool = False,
    bulk_load: bool = False,
    files: Path | None = None,
) -> Iterator[Server]:
    """The server of `version` on `data_dir` for the body; stopped after it (with
    `innodb_fast_shutdown=0` when `slow_shutdown`: purge and change-buffer merge first, the state
    an upgrade of the files wants). A failure inside the body stops it the fast way. With
    `read_only`, every file of `data_dir` is as it was once it stopped (for looking before
    anything may change). With `skip_grants`, the server checks no password (it is reached only
    through its private socket): for tools that cannot carry any password (`mariadb-upgrade`
    hands it to its child client in a way that breaks on spaces and quotes). With `bulk_load`, no
    flush of the redo log at each commit and no doublewrite buffer (BULK_LOAD): only for a fresh
    data directory that is thrown away unless the server stops cleanly. `files`: the only
    directory the server may write files into and read them from (`secure_file_priv`), for
    rowfiles.py; without it, the server's own setting."""
    s = installation.settings_of(service)
    root = installation.prefix(s, version)
    sock = sockets.private_socket(service, s.socket, name)
    run = sock.parent
    if sockets.answers(sock):
        raise MigrateError(f"a server already answers on {sock}", hint="stop it, or set settings.socket")
    sock.unlink(missing_ok=True)
    log = run / f"{sock.stem}.err"
    log.unlink(missing_ok=True)
    (run / f"{sock.stem}.pid").unlink(missing_ok=True)  # ours, left by a server that did not stop
    kept = {p: p.read_bytes() for pattern in ARIA_FILES for p in data_dir.glob(pattern)} if read_only else {}
    argv = server_args(service, version, root, data_dir, sock, run) + (list(READ_ONLY) if read_only else [])
    argv += ["--skip-grant-tables"] if skip_grants else []
    argv += list(BULK_LOAD) if bulk_load else []
    argv += [f"--secure-file-priv={files}"] if files is not None else []
    process = service.run.spawn(argv)
    server = Server(service, version, root, data_dir, sock, log)
    server.skip_grants = skip_grants
    clean = False
    try:
        # greeting, not only listening: a server stopped before its accept loop runs hangs
        problem = wait_ready(process, lambda: sockets.greets(sock), START_TIMEOUT)
        if problem is not None:
            tail = "\n".join(server.log_text().splitlines()[-15:])
            raise MigrateError(f"{versions.label(version)} on {data_dir} did not start ({problem}):\n{tail}")
        yield server
        clean = True
    finally:
        try:
            if clean and slow_shutdown:
                server.query("SET GLOBAL innodb_fast_shutdown = 0")
        finally:
            server.close()
            # SIGTERM is the server's normal shutdown (the slow one when set above), and needs no
            # login; SQL SHUTDOWN does the same a tenth of a second later, at every stop
            stop_process(process, [(signal.SIGTERM, STOP_TIMEOUT)])
            sockets.release(sock)
        if read_only and process.returncode == 0:
            for path, data in kept.items():
                path.write_bytes(data)
        if clean and process.returncode not in (0, None):
            tail = "\n".join(server.log_text().splitlines()[-15:])
            raise MigrateError(f"{versions.label(version)} on {data_dir} exited with {process.returncode}:\n{tail}")


def stop_leftovers(service: Service) -> list[int]:
    """Stop private servers a crashed run left (their pid files in the run directory) before
    anything touches the files they hold open; returns their pids."""
    stopped = []
    run = service.state_dir / "run"
    for pid_file in sorted(run.glob("*.pid")) if run.is_dir() else []:
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        if f"--pid-file={pid_file}".encode() not in cmdline:
            pid_file.unlink(missing_ok=True)
            continue
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 30.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _gone(pid, wait):
                break
        stopped.append(pid)
        pid_file.unlink(missing_ok=True)
    return stopped


def _gone(pid: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text(errors="replace") if Path(f"/proc/{pid}/stat").exists() else ""
        if ") Z " in stat:  # a zombie: exited, not reaped by us
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
