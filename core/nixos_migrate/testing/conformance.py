"""The conformance suite every plugin passes, built-in or third-party.

Subclass `PluginConformance` in a test module (the class name must start with `Test`), and give
it:

- `plugin`: the plugin's name;
- `hops`: the `(from_version, to_version)` hops the suite may exercise (each gets every test);
- `create(root, version)`: make a service instance with data at `version` (None: no data) under
  the private directory `root`; return an `Instance` holding its manifest entry. The suite's
  manifests keep their state in `root / "state"`: a plugin whose version lives in the journal
  reaches `version` by running `nixos-migrate up` with a `ManifestBuilder(root)` manifest;
- `fingerprint(instance)`: a string that changes whenever the service's *contents* change (use
  `fingerprint.tree_digest` for files, or a digest of rows for a database).

Everything runs through the real CLI in a subprocess, with the real plugin found through its
entry point, and failures are injected with `NIXOS_MIGRATE_FAULT` (see `nixos_migrate.faults`).
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nixos_migrate.testing.cli import CliResult, run_cli
from nixos_migrate.testing.manifests import ManifestBuilder

Hop = tuple[str, str]


@dataclass
class Instance:
    """A service instance made by `create`: its manifest entry (without `target`)."""

    settings: dict[str, Any]
    spec: dict[str, Any] = field(default_factory=dict)
    """Other manifest keys: user, unit, migrations, accept..."""
    data: dict[str, Any] = field(default_factory=dict)
    """Whatever the plugin's tests need to reach the instance again (paths, ports...)."""


class Rig:
    """One instance, its manifest and the CLI bound to it."""

    def __init__(self, suite: PluginConformance, root: Path, version: str | None) -> None:
        self.suite = suite
        self.root = root
        self.instance = suite.create(root, version)
        suite.created.append(self.instance)
        self.builder = ManifestBuilder(root)

    def target(self, version: str, **extra: Any) -> Path:
        spec = {"plugin": self.suite.plugin, "target": version, "settings": self.instance.settings}
        spec |= self.instance.spec | extra
        spec["accept"] = sorted({*spec.get("accept", []), *self.suite.accept})
        self.builder.data["services"] = {"svc": spec}
        return self.builder.write()

    def cli(self, target: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_cli(self.target(target), *args, env=env, timeout=self.suite.timeout)

    def fingerprint(self) -> str:
        return self.suite.fingerprint(self.instance)

    def status(self, target: str) -> dict[str, Any]:
        result = self.cli(target, "status", "--json")
        if result.code != 0:
            raise AssertionError(f"status failed: {result.output}")
        return result.json[0]  # type: ignore[no-any-return]


class PluginConformance:
    plugin: ClassVar[str]
    hops: ClassVar[list[Hop]]
    accept: ClassVar[list[str]] = []
    """Versions accepted in every manifest (for plugins whose steps all carry warnings)."""
    timeout: ClassVar[float] = 600
    """Seconds one CLI call may take."""

    created: list[Instance]

    @pytest.fixture(autouse=True)
    def _cleanup_instances(self) -> Iterator[None]:
        self.created = []
        yield
        for instance in self.created:
            self.cleanup(instance)

    def create(self, root: Path, version: str | None) -> Instance:
        raise NotImplementedError

    def cleanup(self, instance: Instance) -> None:
        """Release what `create` made outside `root` (servers, sockets); `root` itself goes away."""

    def fingerprint(self, instance: Instance) -> str:
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------

    def rig(self, tmp_path: Path, version: str | None) -> Rig:
        return Rig(self, tmp_path, version)

    def up(self, rig: Rig, hop: Hop, *args: str) -> CliResult:
        result = rig.cli(hop[1], "up", "--json", *args)
        assert result.code == 0, f"up {hop} failed:\n{result.output}"
        return result

    def assert_at(self, rig: Rig, version: str) -> None:
        status = rig.status(version)
        assert status["data_version"] == version, status
        assert status["recorded"] == version, status
        assert status["dirty"] is None, status

    def assert_verified(self, rig: Rig, version: str) -> None:
        result = rig.cli(version, "verify", "--json")
        assert result.code == 0, f"verify failed at {version}:\n{result.output}"

    # -- the suite ---------------------------------------------------------------------------

    def test_conformance_detect_version_without_data(self, tmp_path: Path) -> None:
        rig = self.rig(tmp_path, None)
        target = self.hops[0][0]
        assert rig.status(target)["data_version"] is None

    def test_conformance_detect_version_with_data(self, tmp_path: Path, hop: Hop) -> None:
        rig = self.rig(tmp_path, hop[0])
        assert rig.status(hop[1])["data_version"] == hop[0]

    def test_conformance_plan(self, tmp_path: Path, hop: Hop) -> None:
        rig = self.rig(tmp_path, hop[0])
        before = rig.fingerprint()
        result = rig.cli(hop[1], "plan", "--json")
        assert result.code == 0, result.output
        steps = result.json[0]["steps"]
        assert steps, f"no steps from {hop[0]} to {hop[1]}"
        assert steps[0]["from_version"] == hop[0]
        assert steps[-1]["to_version"] == hop[1]
        for a, b in itertools.pairwise(steps):
            assert a["to_version"] == b["from_version"]
        nothing = rig.cli(hop[0], "plan", "--json")
        assert nothing.code == 0, nothing.output
        assert nothing.json[0]["steps"] == []
        assert rig.fingerprint() == before, "plan changed the data"

    def test_conformance_up_then_verify_then_nothing_to_do(self, tmp_path: Path, hop: Hop) -> None:
        rig = self.rig(tmp_path, hop[0])
        self.up(rig, hop)
        self.assert_at(rig, hop[1])
        self.assert_verified(rig, hop[1])
        backups = rig.cli(hop[1], "backups", "--json").json
        after = rig.fingerprint()
        again = self.up(rig, hop)
        assert again.json[0]["steps"] == [], "a second up did something"
        assert rig.fingerprint() == after
        assert rig.cli(hop[1], "backups", "--json").json == backups

    def test_conformance_backup_restore_round_trip(self, tmp_path: Path, hop: Hop) -> None:
        rig = self.rig(tmp_path, hop[0])
        before = rig.fingerprint()
        self.up(rig, hop)
        backups = rig.cli(hop[1], "backups", "--json").json
        first = next(b for b in backups if b["from_version"] == hop[0] and b["direction"] == "up")
        result = rig.cli(hop[1], "restore", "svc", str(first["id"]), "--accept-data-loss")
        assert result.code == 0, result.output
        assert rig.fingerprint() == before
        self.assert_at(rig, hop[0])
        self.assert_verified(rig, hop[0])

    def test_conformance_down_restores_the_original(self, tmp_path: Path, hop: Hop) -> None:
        rig = self.rig(tmp_path, hop[0])
        before = rig.fingerprint()
        self.up(rig, hop)
        result = rig.cli(hop[1], "down", "svc", "--to", hop[0], "--accept-data-loss", "--accept", hop[0])
        assert result.code == 0, result.output
        assert rig.fingerprint() == before
        self.assert_at(rig, hop[0])
        self.assert_verified(rig, hop[0])

    def test_conformance_failure_in_backup_changes_nothing(self, tmp_path: Path, hop: Hop) -> None:
        self._failure(tmp_path, hop, "backup")

    def test_conformance_failure_after_up_restores(self, tmp_path: Path, hop: Hop) -> None:
        self._failure(tmp_path, hop, "apply")

    def test_conformance_failure_in_verify_restores(self, tmp_path: Path, hop: Hop) -> None:
        self._failure(tmp_path, hop, "verify")

    def _failure(self, tmp_path: Path, hop: Hop, phase: str) -> None:
        rig = self.rig(tmp_path, hop[0])
        before = rig.fingerprint()
        result = rig.cli(hop[1], "up", env={"NIXOS_MIGRATE_FAULT": phase})
        assert result.code == 1, f"expected exit 1 with a fault in {phase}:\n{result.output}"
        assert "fault injected" in result.stderr
        assert rig.fingerprint() == before
        self.assert_at(rig, hop[0])

    def test_conformance_sigkill_after_up_then_rollback(self, tmp_path: Path, hop: Hop) -> None:
        rig = self.rig(tmp_path, hop[0])
        before = rig.fingerprint()
        killed = rig.cli(hop[1], "up", env={"NIXOS_MIGRATE_FAULT": "kill:apply"})
        assert killed.code == -signal.SIGKILL, killed.output
        refused = rig.cli(hop[1], "up")
        assert refused.code == 3, refused.output
        assert "interrupted in phase 'apply'" in refused.stderr
        rolled = rig.cli(hop[1], "up", "--rollback")
        assert rolled.code == 0, rolled.output
        assert rig.fingerprint() == before
        self.assert_at(rig, hop[0])
        self.assert_verified(rig, hop[0])
