"""Values that cross the plugin API: steps, checks, backups."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class Step:
    """One hop of a plan.

    `from_version` is None when the data does not exist yet (the first migration of a fresh
    service). `data` carries plugin-private, JSON-serialisable details (a method, a script
    index); the core stores the step in the journal and hands it back unchanged on `--resume`.
    """

    from_version: str | None
    to_version: str
    direction: Direction = "up"
    description: str = ""
    warning: str | None = None
    """Shown before the step; the step runs only when `to_version` is accepted."""
    irreversible: bool = False
    """No way back but the backup; must be accepted like a warning."""
    via_backup: bool = False
    """A down step performed by restoring the backup taken before the matching up step.
    Data written since is lost, so it needs `--accept-data-loss`."""
    resumable: bool = False
    """Re-running `up`/`down` after a crash in the middle of it is safe. When False, `--resume`
    first restores the step's backup and then runs the step again."""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_acceptance(self) -> bool:
        return self.warning is not None or self.irreversible

    @property
    def label(self) -> str:
        return f"{self.from_version or '(none)'} -> {self.to_version}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"data": dict(self.data)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Step:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclass(frozen=True)
class Check:
    """One result of a pre-check or a verification."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class BackupInfo:
    """What a plugin's `backup` hook wrote.

    `path` is where the backup lives (normally the `dest` the core passed, or something inside
    it); `kind` names the technique (`copy`, `script`, `snapshot`, `dump`, ...), and `checksum`
    lets `restore` detect a damaged backup. `detail` is plugin-private and JSON-serialisable.
    """

    kind: str
    path: Path
    size: int
    checksum: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupRecord:
    """A backup as the journal knows it; what `restore` receives."""

    id: int
    service: str
    step: Step
    kind: str
    path: Path
    size: int
    checksum: str | None
    created: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "from_version": self.step.from_version,
            "to_version": self.step.to_version,
            "direction": self.step.direction,
            "kind": self.kind,
            "path": str(self.path),
            "size": self.size,
            "checksum": self.checksum,
            "created": self.created,
            "detail": dict(self.detail),
        }
