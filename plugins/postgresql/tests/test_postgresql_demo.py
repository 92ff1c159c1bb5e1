# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The README's main job, `nixos-migrate demo`: a real upgrade and downgrade of a throwaway
cluster, with progress, a verify report and timings, leaving nothing behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

from nixos_migrate.testing.cli import run_cli


def _demo_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("nixos-migrate-demo-")}


def test_demo_upgrades_verifies_downgrades_and_cleans_up():
    before = _demo_dirs()
    result = run_cli(None, "demo", "--scale", "1", timeout=600)
    assert result.code == 0, result.output
    out = result.stdout
    for expected in ("now at 17", "amcheck of b-tree indexes", "now at 16", "timings", "down 17 -> 16"):
        assert expected in out, out[-3000:]
    assert _demo_dirs() == before  # the throwaway cluster and its manifest are gone
