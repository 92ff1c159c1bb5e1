"""Unix sockets of the private servers plugins start: where they go, and whether one answers.

A private server listens on a socket in a 0700 directory of the service's state directory,
owned by the service's user, so that only the plugin reaches it. A socket path must fit in
sun_path (108 bytes): a state directory too deep for that gets a private temporary directory
instead, removed with `release` when the server has stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from nixos_migrate.context import Service

SOCKET_MAX = 100  # sun_path holds 108 bytes, with room for the server's own suffixes
_SHORT_PREFIX = "nixos-migrate-sock-"


def private_socket(service: Service, configured: Path | None, name: str) -> Path:
    """The socket of the private server `name`: `configured` (a setting) itself for the server
    named "current", beside it with `.name` appended for the others; by default `name.sock` in
    the service's private run directory."""
    if configured is not None:
        return configured if name == "current" else configured.with_name(f"{configured.name}.{name}")
    run = service.private_dir(service.state_dir / "run")
    path = run / f"{name}.sock"
    if len(str(path)) <= SOCKET_MAX:
        return path
    short = Path(tempfile.mkdtemp(prefix=_SHORT_PREFIX))
    if os.geteuid() == 0:
        os.chown(short, service.run.identity.uid, service.run.identity.gid)
    return short / f"{name}.sock"


def release(path: Path) -> None:
    """Remove the temporary directory `private_socket` made for `path`, if it made one."""
    if path.parent.name.startswith(_SHORT_PREFIX):
        shutil.rmtree(path.parent, ignore_errors=True)


def answers(path: Path) -> bool:
    """Whether a server accepts connections on the unix socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(str(path)) == 0


def greets(path: Path) -> bool:
    """Whether a server on the unix socket `path` accepts a connection and speaks first (MySQL's
    handshake). A socket listens before the server's accept loop runs, and a server stopped in
    between can miss the signal (MariaDB 11.8 then hangs, never ready, never stopping): for
    servers that speak first, ready means greeting."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            return bool(sock.recv(1))
        except OSError:
            return False
