"""pytest plugin `nixos_migrate` (entry point `pytest11`): fixtures for plugin tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nixos_migrate.fingerprint import tree_digest
from nixos_migrate.testing.cli import CliResult, run_cli
from nixos_migrate.testing.conformance import PluginConformance
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


@pytest.fixture
def migrate_cli(migrate_root: Path) -> Callable[..., CliResult]:
    """Run `nixos-migrate -m MANIFEST ARGS...` in a subprocess; returns code, output, parsed `--json`."""

    def run(manifest: Path | None, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_cli(manifest, *args, env=env)

    return run


@pytest.fixture
def tree_fingerprint() -> Callable[[Path], str]:
    """The content fingerprint of a directory tree (paths, types, modes, owners, bytes)."""
    return tree_digest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give conformance tests one run per hop the plugin declares (`hops` on the test class)."""
    cls = metafunc.cls
    if "hop" in metafunc.fixturenames and cls is not None and issubclass(cls, PluginConformance):
        metafunc.parametrize("hop", cls.hops, ids=[f"{a}-to-{b}" for a, b in cls.hops])
