"""Throwaway PostgreSQL clusters for the demo, the tests and the benchmarks (never for migrations:
the plugin's own servers are in server.py)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from nixos_migrate.testing import provision


def initdb_argv(
    prefix: Path, data: Path, major: str, superuser: str = "postgres", checksums: bool = False
) -> list[str]:
    """A C-locale UTF8 cluster; checksums off unless asked (18 turns them on by default)."""
    argv = [
        str(prefix / "bin" / "initdb"),
        "-D",
        str(data),
        "-U",
        superuser,
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--auth=trust",
    ]
    if checksums:
        argv.append("--data-checksums")
    elif int(major) >= 18:
        argv.append("--no-data-checksums")
    return argv


def server(
    prefix: Path, data: Path, sock: Path, port: int, user: pwd.struct_passwd | None, log: Path | None = None
) -> provision.Server:
    """A server on `data` listening on the unix socket in `sock` only; `start()` waits until it
    accepts connections."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}
    return provision.Server(
        [
            str(prefix / "bin" / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(sock),
            "-c",
            "listen_addresses=",
        ],
        user=user,
        env=env,
        log=log,
    )


def accepts(prefix: Path, sock: Path, port: int) -> bool:
    socket_file = sock / f".s.PGSQL.{port}"
    return (
        socket_file.exists()
        and subprocess.run(
            [prefix / "bin" / "pg_isready", "-h", sock, "-p", str(port)], capture_output=True, check=False
        ).returncode
        == 0
    )
