"""Fault injection for tests of the runtime and of plugins (the conformance suite uses it).

`NIXOS_MIGRATE_FAULT` holds comma-separated entries `[kill:]PHASE[@SERVICE]`; PHASE is one of
`backup`, `apply`, `verify`, `restore`. At the end of that phase (the plugin's hook has returned,
so the data has really changed), the run either fails with `InjectedFault` or, with `kill:`,
SIGKILLs itself: the harshest crash, with nothing cleaned up. Unset, this module does nothing.
"""

from __future__ import annotations

import os
import signal

from nixos_migrate.errors import MigrateError

ENV = "NIXOS_MIGRATE_FAULT"
PHASES = ("backup", "apply", "verify", "restore")


class InjectedFault(MigrateError):
    """A failure asked for through NIXOS_MIGRATE_FAULT."""

    exit_code = 1


def at_end_of(phase: str, service: str) -> None:
    raw = os.environ.get(ENV)
    if not raw:
        return
    for entry in raw.split(","):
        kill, _, rest = entry.strip().rpartition(":")
        wanted, _, only = rest.partition("@")
        if wanted != phase or (only and only != service):
            continue
        if kill == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedFault(f"fault injected at the end of phase {phase} ({ENV})")
