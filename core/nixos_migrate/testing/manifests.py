"""Building manifests for tests."""

from __future__ import annotations

import json
import pwd
from pathlib import Path
from typing import Any, Protocol

from nixos_migrate.testing.cli import CliResult, run_cli


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


class RigInstance(Protocol):
    """What a plugin's test helpers call an instance: a data directory owned by `user`, and the
    settings of the plugin that name it with the packages of `versions`."""

    @property
    def user(self) -> pwd.struct_passwd: ...

    def settings(self, versions: tuple[str, ...], **extra: Any) -> dict[str, Any]: ...


class ServiceRig:
    """A manifest holding one service of a plugin over `instance`, and the CLI bound to it: each
    `cli(target, *args, **spec)` writes the service (run as the instance's user, with
    `instance.settings(versions, **settings)`) and runs `nixos-migrate` on the manifest.
    Plugins' test helpers subclass it naming `plugin`, `service_name` and the default
    `versions`."""

    plugin = ""
    service_name = ""
    versions: tuple[str, ...] = ()

    def __init__(self, root: Path, instance: RigInstance, versions: tuple[str, ...] | None = None,
                 **settings: Any) -> None:  # fmt: skip
        self.root = root
        self.instance = instance
        self.user = instance.user.pw_name
        self.versions = self.versions if versions is None else versions
        self.extra = settings
        self.builder = ManifestBuilder(root)

    def settings(self) -> dict[str, Any]:
        return self.instance.settings(self.versions, **self.extra)

    def cli(self, target: str, *args: str, env: dict[str, str] | None = None, **spec: Any) -> CliResult:
        self.builder.service(
            self.service_name, plugin=self.plugin, target=target, user=self.user, settings=self.settings(), **spec
        )
        return run_cli(self.builder.write(), *args, env=env, timeout=900)
