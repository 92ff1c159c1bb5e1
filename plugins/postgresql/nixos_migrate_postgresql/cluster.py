"""What can be known about a cluster directory without starting a server."""

from __future__ import annotations

import errno
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from nixos_migrate.errors import MigrateError
from nixos_migrate.runner import CommandRunner
from nixos_migrate_postgresql.settings import PostgresSettings


def major_of(data_dir: Path) -> str | None:
    """The major the cluster in `data_dir` was initialised by (`PG_VERSION`), None without one."""
    try:
        return (data_dir / "PG_VERSION").read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def current_dir(settings: PostgresSettings) -> Path | None:
    """Where the data is now: `data_dir` when it holds a cluster, else `old_data_dir`."""
    for candidate in (settings.data_dir, settings.source_dir):
        if major_of(candidate) is not None:
            return candidate
    return None


def running_pid(data_dir: Path) -> int | None:
    """The pid of a postmaster running on `data_dir`, from postmaster.pid, if it is alive."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return pid if exc.errno == errno.EPERM else None
    return pid


def stop_stray_server(data_dir: Path, timeout: float = 60) -> int | None:
    """Stop a postmaster left running on `data_dir` (a killed pg_upgrade leaves its servers up):
    fast shutdown, then SIGKILL after `timeout`. Returns the pid it stopped, if any."""
    pid = running_pid(data_dir)
    if pid is None:
        return None
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return pid
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if running_pid(data_dir) is None:
                return pid
            time.sleep(0.05)
    return pid


@dataclass(frozen=True)
class Control:
    """The parts of `pg_controldata` output the upgrade needs."""

    state: str
    checksums: bool
    wal_segment_bytes: int
    identity: str
    """System identifier, last checkpoint and when pg_control was last written: a cluster that
    has not run since shows the same."""

    @property
    def shut_down(self) -> bool:
        return self.state in ("shut down", "shut down in recovery")


def control_data(runner: CommandRunner, prefix: Path, data_dir: Path) -> Control:
    out = runner.run([prefix / "bin" / "pg_controldata", "-D", data_dir], env={"LC_ALL": "C"}).output
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines()) if v)
    try:
        return Control(
            state=fields["Database cluster state"],
            checksums=fields.get("Data page checksum version", "0") != "0",
            wal_segment_bytes=int(fields.get("Bytes per WAL segment", str(16 << 20))),
            identity=" / ".join(
                fields.get(k, "?")
                for k in ("Database system identifier", "Latest checkpoint location", "pg_control last modified")
            ),
        )
    except KeyError as exc:
        raise MigrateError(f"pg_controldata of {data_dir} has no {exc}; is it a cluster?") from None


def binary(settings: PostgresSettings, major: str, tool: str) -> Path:
    """The path of `tool` of `major`, or a MigrateError naming the missing package."""
    prefix = settings.packages.get(major)
    if prefix is None:
        raise MigrateError(
            f"no binaries for PostgreSQL {major} (packages has {sorted(settings.packages) or 'none'})",
            hint=f'add settings.packages."{major}" = the install prefix of PostgreSQL {major}',
        )
    path = prefix / "bin" / tool
    if not os.access(path, os.X_OK):
        raise MigrateError(f"{path} is missing or not executable", hint=f'check settings.packages."{major}"')
    return path


def prefix_of(settings: PostgresSettings, major: str) -> Path:
    return binary(settings, major, "postgres").parent.parent


def sibling(path: Path, tag: str) -> Path:
    """A hidden directory beside `path` (same filesystem, so renames are atomic)."""
    return path.parent / f".{path.name}.nixos-migrate-{re.sub(r'[^A-Za-z0-9._-]', '_', tag)}"


def same_filesystem(a: Path, b: Path) -> bool:
    def device(p: Path) -> int:
        while not p.exists():
            p = p.parent
        return p.stat().st_dev

    return device(a) == device(b)
