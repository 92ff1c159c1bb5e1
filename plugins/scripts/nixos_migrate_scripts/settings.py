"""Settings of the `scripts` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator


class ScriptsSettings(BaseModel):
    """
    paths: directories (or files) holding the service's data. When a migration has no `backup`
        script, nixos-migrate copies these before the step and puts them back on failure.
    verify: a bash script that exits 0 when the service's data is healthy; run after each step.
    environment: extra variables for every script (no secrets: point to a file instead).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    paths: list[Path] = []
    verify: str | None = None
    environment: dict[str, str] = {}

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[Path]) -> list[Path]:
        for path in paths:
            if not path.is_absolute():
                raise ValueError(f"{str(path)!r} is not an absolute path")
        return paths
