"""OpenLDAP's programs of one version, and a private slapd on a loopback port.

Install layouts differ: Debian has `usr/sbin/slap*` and modules in `usr/lib/ldap`; nixpkgs has
`libexec/slapd`, `bin/slap*` and modules in `lib/modules`. The plugin looks in each.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.runner import stop_process, wait_ready

START_TIMEOUT = 60.0
TOOLS = ("slapd", "slapadd", "slapcat", "slaptest")
_TOOL_DIRS = ("sbin", "bin", "libexec")
_MODULE_DIRS = ("lib/ldap", "lib/openldap", "libexec/openldap", "lib/modules")
_SCHEMA_DIRS = ("etc/ldap/schema", "etc/openldap/schema", "etc/schema", "share/openldap/schema")


def tool(prefix: Path, name: str) -> Path:
    for sub in _TOOL_DIRS:
        candidate = prefix / sub / name
        if candidate.exists():
            return candidate
    raise MigrateError(f"{name} not found in {prefix} ({', '.join(_TOOL_DIRS)})")


def module_dir(prefix: Path) -> Path | None:
    """Where the backend and overlay modules are, or None for a slapd with everything built in."""
    for sub in _MODULE_DIRS:
        candidate = prefix / sub
        if candidate.is_dir() and any(candidate.glob("back_*")):
            return candidate
    return None


def schema_file(prefix: Path, name: str) -> Path | None:
    """A schema file the install ships (ppolicy.ldif up to 2.4), or None."""
    for sub in _SCHEMA_DIRS:
        if (prefix / sub / name).is_file():
            return prefix / sub / name
    return None


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        # a connect to a free port can reach itself (TCP simultaneous open): that is no slapd
        return sock.connect_ex(("127.0.0.1", port)) == 0 and sock.getsockname() != sock.getpeername()


@contextlib.contextmanager
def running(service: Service, prefix: Path, config: list[str | Path], port: int) -> Iterator[str]:
    """slapd with `config` (`-F DIR` or `-f FILE`), listening on 127.0.0.1:`port` only; yields its
    URL; stopped by pid."""
    url = f"ldap://127.0.0.1:{port}/"
    if _port_open(port):
        raise MigrateError(f"port {port} is in use: cannot start a private slapd", hint="set settings.port")
    log = service.state_dir / "logs" / f"slapd-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    process = service.run.spawn([tool(prefix, "slapd"), "-d", "0", *config, "-h", url], log=log)
    try:
        problem = wait_ready(process, lambda: _port_open(port), START_TIMEOUT)
        if problem is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise MigrateError(f"slapd with {' '.join(map(str, config))} did not start ({problem}):\n{tail}")
        yield url
    finally:
        stop_process(process, [(signal.SIGINT, 60.0), (signal.SIGKILL, 10.0)])
