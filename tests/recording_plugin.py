"""A small, real file-based plugin for engine tests: data is a directory with a VERSION file.

Versions are integers as strings; `up` and `down` rewrite VERSION and a data file; backups are
copies made with the core's file backup primitive. Every hook call is recorded, and tests switch
individual behaviours (`fail`, `returns`) to break the contract on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step


class RecSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_dir: Path
    max_version: int = 3


@dataclass(eq=False)
class RecordingPlugin:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    """Hooks that raise RuntimeError."""
    returns: dict[str, Any] = field(default_factory=dict)
    """Hooks that return this value instead of doing their work."""
    checks_fail: bool = False
    estimate: int | None = 0
    creates: str | None = None
    """What `init` creates (None: it does not)."""
    bad_verifies: int = 0
    """How many of the next `verify` calls report a failed check."""

    def _enter(self, hook: str, arg: Any = None) -> bool:
        self.calls.append((hook, arg))
        if hook in self.fail:
            raise RuntimeError(f"injected failure in {hook}")
        return hook in self.returns

    def called(self, hook: str) -> list[Any]:
        return [arg for name, arg in self.calls if name == hook]

    @staticmethod
    def _dir(service: Service) -> Path:
        return service.settings.data_dir  # type: ignore[no-any-return]

    @hookimpl
    def settings_model(self) -> type[RecSettings]:
        return RecSettings

    @hookimpl
    def detect_version(self, service: Service) -> str | None:
        if self._enter("detect_version"):
            return self.returns["detect_version"]  # type: ignore[no-any-return]
        version = self._dir(service) / "VERSION"
        return version.read_text().strip() if version.exists() else None

    @hookimpl
    def init(self, service: Service) -> str | None:
        if self._enter("init") or self.creates is None:
            return None
        self._dir(service).mkdir(parents=True, exist_ok=True)
        (self._dir(service) / "VERSION").write_text(self.creates)
        return self.creates

    @hookimpl
    def plan(self, service: Service, current: str | None, target: str) -> list[Step] | None:
        if self._enter("plan", (current, target)):
            return self.returns["plan"]  # type: ignore[no-any-return]
        at, goal = int(current or 0), int(target)
        if at <= goal:
            return [Step(str(v) if v else None, str(v + 1), "up") for v in range(at, goal)]
        return [Step(str(v), str(v - 1), "down", via_backup=(v == 3)) for v in range(at, goal, -1)]

    @hookimpl
    def check(self, service: Service, step: Step) -> list[Check]:
        self._enter("check", step)
        return [Check("always", not self.checks_fail, "injected" if self.checks_fail else "")]

    @hookimpl
    def backup_size(self, service: Service, step: Step) -> int | None:
        self._enter("backup_size", step)
        return self.estimate

    @hookimpl
    def backup(self, service: Service, step: Step, dest: Path) -> BackupInfo | None:
        if self._enter("backup", (step, dest, sorted(dest.iterdir()), oct(dest.stat().st_mode & 0o777))):
            return self.returns["backup"]  # type: ignore[no-any-return]
        return filebackup.backup_paths([self._dir(service)], dest, service.run, service.progress)

    def _move(self, service: Service, step: Step) -> None:
        (self._dir(service) / "VERSION").write_text(step.to_version)
        (self._dir(service) / f"data-{step.to_version}").write_text(f"written by {step.direction}")
        # work for `settle`, as a real plugin notes it: in its state directory
        (service.state_dir / "settle-noted").write_text(step.to_version)

    @hookimpl
    def up(self, service: Service, step: Step) -> bool | None:
        if self._enter("up", step):
            (self._dir(service) / "half-done").write_text("x")
            return self.returns["up"]  # type: ignore[no-any-return]
        self._move(service, step)
        return True

    @hookimpl
    def down(self, service: Service, step: Step) -> bool | None:
        if self._enter("down", step):
            return self.returns["down"]  # type: ignore[no-any-return]
        self._move(service, step)
        return True

    @hookimpl
    def restore(self, service: Service, backup: BackupRecord) -> bool | None:
        if self._enter("restore", backup):
            return self.returns["restore"]  # type: ignore[no-any-return]
        filebackup.restore_paths(backup, service.run, service.progress)
        return True

    @hookimpl
    def verify(self, service: Service) -> list[Check]:
        if self._enter("verify"):
            return self.returns["verify"]  # type: ignore[no-any-return]
        if self.bad_verifies > 0:
            self.bad_verifies -= 1
            return [Check("tables", False, "row count differs")]
        return [Check("version file", (self._dir(service) / "VERSION").exists())]

    @hookimpl
    def settle(self, service: Service) -> list[Check] | None:
        if self._enter("settle", service.step):
            return self.returns["settle"]  # type: ignore[no-any-return]
        noted = service.state_dir / "settle-noted"
        if not noted.exists():
            return None
        version = noted.read_text()
        noted.unlink()
        return [Check("after-start work", True, f"for {version}")]
