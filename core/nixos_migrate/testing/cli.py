"""Run the `nixos-migrate` CLI as a real process and collect what it said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        """stdout parsed as JSON (the command must have been run with `--json`)."""
        return json.loads(self.stdout)

    @property
    def failure(self) -> str | None:
        """What the CLI printed from its `FAILED: ` line on, or None when it printed none."""
        lines = self.stderr.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("FAILED: "):
                return "\n".join(lines[i:])
        return None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli_command(manifest: Path | None, args: Sequence[str]) -> list[str]:
    base = [sys.executable, "-m", "nixos_migrate.cli"]
    return base + (["-m", str(manifest)] if manifest else []) + list(args)


def run_cli(
    manifest: Path | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> CliResult:
    """Run `nixos-migrate [-m manifest] args...` in a subprocess and return its result."""
    proc = subprocess.run(
        cli_command(manifest, args),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
