"""Processes of a server working on a directory, found without a pid file (a server changes into
its data directory, or is started in it by its unit)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


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
