"""Private PostgreSQL servers: socket only, our own config and trust rules, stopped by pid.

The plugin starts servers to inspect, fingerprint, verify and downgrade clusters. They listen on
a unix socket in a 0700 directory owned by the service's user (never on TCP), read a config file
of ours instead of the cluster's (whose paths may point into another generation), and trust
local connections there, so no password is needed and none can leak.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.runner import stop_process, wait_ready

if TYPE_CHECKING:
    import psycopg

START_TIMEOUT = 120.0
STOP_TIMEOUT = 120.0


#: sun_path holds 108 bytes with the terminating NUL; ".s.PGSQL.NNNNN.lock" is the longest name
MAX_SOCKET_DIR = 107 - len("/.s.PGSQL.65535.lock")


def private_dir(service: Service, socket_dir: Path | None) -> Path:
    """The socket directory: 0700, owned by the service's user."""
    path = socket_dir or service.state_dir / "run"
    if len(str(path)) > MAX_SOCKET_DIR:
        raise MigrateError(
            f"socket directory {path} is too long for a unix socket ({len(str(path))} > {MAX_SOCKET_DIR} bytes)",
            hint="set settings.socket_dir to a shorter path",
        )
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    if os.geteuid() == 0:
        identity = service.run.identity
        os.chown(path, identity.uid, identity.gid)
    return path


def loading_settings() -> dict[str, str]:
    """Settings of a server that loads a cluster nobody uses yet (a staging cluster): it is flushed
    with one syncfs after the server stops, and thrown away if anything fails before that, so the
    server need not fsync as it goes (a COPY into a table created in its transaction otherwise
    waits at commit for the table's fsync); index builds sort in memory."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    maintenance_mb = max(64, min(2048, memory // 16 // 2**20))
    return {"fsync": "off", "full_page_writes": "off", "maintenance_work_mem": f"{maintenance_mb}MB"}


class PrivateServer:
    def __init__(
        self,
        service: Service,
        prefix: Path,
        data_dir: Path,
        socket_dir: Path,
        port: int,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings or {}
        self.prefix = prefix
        self.data_dir = data_dir
        self.socket_dir = socket_dir
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.superuser: str | None = None
        self.nice = 0  # CPU priority of the backends of our connections (see in_background)
        self.log = service.state_dir / "logs" / f"server-{port}.log"

    def _write_config(self) -> Path:
        hba = self.socket_dir / f"hba-{self.port}.conf"
        hba.write_text("local all all trust\n")
        ident = self.socket_dir / f"ident-{self.port}.conf"
        ident.write_text("")
        conf = self.socket_dir / f"postgresql-{self.port}.conf"
        conf.write_text(
            "listen_addresses = ''\n"
            f"unix_socket_directories = '{self.socket_dir}'\n"
            "unix_socket_permissions = 0700\n"
            f"hba_file = '{hba}'\n"
            f"ident_file = '{ident}'\n"
            "max_connections = 40\n"
            "max_wal_senders = 0\n"
            "wal_level = minimal\n"
            "autovacuum = off\n" + "".join(f"{k} = '{v}'\n" for k, v in self.settings.items())
        )
        if os.geteuid() == 0:
            identity = self.service.run.identity
            for path in (hba, ident, conf):
                os.chown(path, identity.uid, identity.gid)
        return conf

    def start(self) -> PrivateServer:
        conf = self._write_config()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            identity = self.service.run.identity
            os.chown(self.log.parent, identity.uid, identity.gid)
        self.process = self.service.run.spawn(
            [self.prefix / "bin" / "postgres", "-D", self.data_dir, "-p", str(self.port), "-c", f"config_file={conf}"],
            log=self.log,
        )
        _prefetch_psycopg()
        problem = wait_ready(self.process, self._ready, START_TIMEOUT)
        if problem is not None:
            self.stop()
            raise MigrateError(f"PostgreSQL on {self.data_dir} did not start ({problem}):\n{self._log_tail()}")
        return self

    def _ready(self) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and (self.socket_dir / f".s.PGSQL.{self.port}").exists()

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown by pid, then immediate shutdown, then SIGKILL if it does not stop in time."""
        if self.process is not None:
            stop_process(self.process, [(signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 10)])

    def __enter__(self) -> PrivateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connect(self, dbname: str = "postgres", user: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg  # imported when first needed: see _prefetch_psycopg

        conn = psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user=user or self.find_superuser(),
            dbname=dbname,
            autocommit=True,
            connect_timeout=30,
        )
        if self.nice:
            _lower_priority(conn.info.backend_pid, self.nice)
        return conn

    def in_background(self) -> PrivateServer:
        """The same running server for connections whose backends run at the lowest CPU priority
        (work that should only take what the main work leaves idle); never stops it."""
        clone = copy.copy(self)
        clone.process = None
        clone.nice = 19
        return clone

    def find_superuser(self, configured: str | None = None) -> str:
        """The bootstrap superuser (role OID 10), asking as the names it usually has."""
        if self.superuser:
            return self.superuser
        candidates = [c for c in (configured, "postgres", self.service.run.identity.name) if c]
        errors = []
        for name in dict.fromkeys(candidates):
            try:
                self.superuser = str(self.query_json("SELECT to_json(rolname) FROM pg_roles WHERE oid = 10", name))
                return self.superuser
            except MigrateError as exc:
                errors.append(f"{name}: {exc.message}")
        raise MigrateError(
            f"cannot find the superuser of {self.data_dir}: " + "; ".join(errors),
            hint="set settings.superuser",
        )

    def query_json(self, sql: str, user: str | None = None, dbname: str = "template1") -> Any:
        """The one JSON value `sql` returns, asked with psql: a start-up's few questions need no
        driver (importing psycopg takes 0.1 s of CPU, which a step's inspection used to wait for)."""
        result = self.service.run.run(
            [
                self.prefix / "bin" / "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-w",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.socket_dir,
                "-p",
                str(self.port),
                "-U",
                user or self.find_superuser(),
                "-d",
                dbname,
                "-c",
                sql,
            ],
            env={"PGCONNECT_TIMEOUT": "30"},
            check=False,
        )
        # a connection's warnings (a collation version mismatch) come before the value
        lines = result.output.strip().splitlines()
        if result.returncode != 0 or not lines:
            raise MigrateError(result.output.strip() or f"psql exited with {result.returncode}")
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise MigrateError(f"psql returned no JSON: {lines[-1][:200]}") from None


@contextlib.contextmanager
def running(
    service: Service,
    prefix: Path,
    data_dir: Path,
    socket_dir: Path,
    port: int,
    superuser: str | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[PrivateServer]:
    server = PrivateServer(service, prefix, data_dir, socket_dir, port, settings)
    server.superuser = superuser
    try:
        yield server.start()
    finally:
        server.stop()


def _prefetch_psycopg() -> None:
    """Import psycopg in a thread while a private server starts: it takes 0.1-0.2 s of CPU, which
    then fills time this thread spends waiting for the server and for commands (started earlier,
    at `check`, it held the interpreter against the check's own work). It is imported where first
    needed, not when the plugin is loaded (every CLI invocation loads every plugin), and the
    questions a step asks before `initdb` go through psql (`PrivateServer.query_json`), not
    through it. An import error is left to the import that needs it."""
    if "psycopg" not in sys.modules:
        threading.Thread(target=_import_psycopg, name="import-psycopg", daemon=True).start()


def _import_psycopg() -> None:
    with contextlib.suppress(ImportError):
        import psycopg  # noqa: F401


def _lower_priority(pid: int, nice: int) -> None:
    """Give process `pid` the CPU priority `nice` against every other process. A backend is a
    session leader (postgres calls setsid), and with autogroup scheduling every session is a group
    that gets an equal share whatever the nice values inside it: the group's nice is set too.
    Only a wish: unprivileged, a foreign backend keeps its priority."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
