"""The `service` context every hook receives first."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixos_migrate.control import ServiceControl
from nixos_migrate.manifest import Migration
from nixos_migrate.model import Step
from nixos_migrate.progress import Progress
from nixos_migrate.runner import CommandRunner


@dataclass
class Service:
    """Everything a plugin needs to know about one service.

    Attributes:
        name: the service's name in the manifest.
        plugin: the plugin serving it.
        settings: the validated settings (the plugin's settings model instance, or a dict).
        migrations: RFC 155 migrations from the manifest, ordered by version.
        target: the version the manifest asks for.
        user: the OS user commands run as (None: the user running nixos-migrate).
        state_dir: a private directory of the service under the state directory, for the
            plugin's own files (staging areas, fingerprints); kept across runs.
        backup_dir: the service's private backup directory; each backup gets its own `dest`.
        journal_version: the version the journal last recorded, None if never.
        run: runs argv lists as `user` with a clean environment.
        progress: progress reporter for long work.
        control: the systemd unit, if any.
        step: the step being backed up, performed, verified or restored; None outside a step
            (an on-demand `verify`), so `verify` knows whether to compare with a pre-step state.
        applying: True while the pre-checks of a run that goes on to perform the steps run
            (`up`, `down`), False for `plan`.
    """

    name: str
    plugin: str
    settings: Any
    migrations: Sequence[Migration]
    target: str
    user: str | None
    state_dir: Path
    backup_dir: Path
    journal_version: str | None
    run: CommandRunner
    progress: Progress
    control: ServiceControl
    step: Step | None = None
    applying: bool = False

    def private_dir(self, path: Path) -> Path:
        """Create `path` 0700, owned by the service's user (backups, staging and scratch areas are
        private); missing directories above it are made traversable (0711) so the user reaches it."""
        for parent in reversed(path.parents):
            if not parent.exists():
                parent.mkdir(mode=0o711)
        path.mkdir(exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)
        if os.geteuid() == 0:
            os.chown(path, self.run.identity.uid, self.run.identity.gid)
        return path
