"""pytest plugin `nixos_migrate` (entry point `pytest11`): fixtures for plugin tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from nixos_migrate.testing.manifests import ManifestBuilder


@pytest.fixture
def migrate_root(tmp_path: Path) -> Path:
    """A fresh directory for state, backups and manifest of one test."""
    root = tmp_path / "nixos-migrate"
    root.mkdir()
    return root


@pytest.fixture
def manifest_builder(migrate_root: Path) -> ManifestBuilder:
    """A `ManifestBuilder` whose state and backup directories live in `migrate_root`."""
    return ManifestBuilder(migrate_root)
