"""Settings of the `scripts` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from nixos_migrate.manifest import AbsolutePath


class ScriptsSettings(BaseModel):
    """
    paths: directories (or files) holding the service's data. When a migration has no `backup`
        script, nixos-migrate copies these before the step and puts them back on failure.
    verify: a bash script that exits 0 when the service's data is healthy; run after each step.
    environment: extra variables for every script (no secrets: point to a file instead).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    paths: list[AbsolutePath] = []
    verify: str | None = None
    environment: dict[str, str] = {}
