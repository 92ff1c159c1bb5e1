"""Building manifests for tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ManifestBuilder:
    """Collects services and writes a JSON manifest into a temporary directory.

    `state_dir` and `backup_dir` default to private directories under `root`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data: dict[str, Any] = {
            "state_dir": str(root / "state"),
            "backup_dir": str(root / "backups"),
            "services": {},
        }

    def service(self, name: str, **spec: Any) -> dict[str, Any]:
        """Add (or replace) service `name` with the given manifest keys; returns its dict."""
        self.data["services"][name] = spec
        return self.data["services"][name]  # type: ignore[no-any-return]

    def write(self, path: Path | None = None) -> Path:
        target = path or self.root / "manifest.json"
        target.write_text(json.dumps(self.data, indent=2), encoding="utf-8")
        return target
