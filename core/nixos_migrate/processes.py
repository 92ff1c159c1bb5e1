"""Processes of a server working on a directory, found without a pid file (a server changes into
its data directory, or is started in it by its unit)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from nixos_migrate.model import Check

if TYPE_CHECKING:
    from nixos_migrate.context import Service


def working_in(directory: Path, programs: Iterable[bytes]) -> list[int]:
    """Pids of processes whose working directory is `directory` and whose command line names one
    of `programs`."""
    wanted = tuple(programs)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(os.readlink(entry / "cwd")) != directory:
                continue
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(program in argv for program in wanted):
            found.append(int(entry.name))
    return found


def stopped(service: Service, directory: Path, programs: Iterable[bytes], what: str) -> Check:
    """The pre-check that `what` (the service's server) does not run on `directory`: its unit
    is active (the run stops it first), or no process of `programs` works there (without a unit,
    a running one is named by pid and refused)."""
    unit = service.control.unit
    if unit and service.control.is_active():
        return Check(f"{what} stopped before the step", True, f"{unit} runs now; the step stops it first")
    pids = working_in(directory, programs)
    detail = f"pid {', '.join(map(str, pids))} works in {directory}; stop it, or set `unit` so that the step stops it"
    return Check(f"{what} not running", not pids, detail if pids else "")
