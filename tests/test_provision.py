"""The provisioning layer: cached downloads, real servers as an unprivileged user, stopped by pid."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nixos_migrate.testing import provision


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "locks" not in p.parts}


def test_debian_package_of_another_release_unpacks_and_runs():
    root = provision.debian_package("hello", "bullseye")
    out = subprocess.run([root / "usr" / "bin" / "hello", "--version"], capture_output=True, text=True, check=True)
    assert "GNU Hello) 2.10" in out.stdout  # bullseye's version, not this machine's
