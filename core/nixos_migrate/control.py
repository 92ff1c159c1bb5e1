"""Stopping and starting the systemd unit of a service around a step."""

from __future__ import annotations

import os
import shutil

from nixos_migrate.errors import PrecheckFailed
from nixos_migrate.runner import CommandRunner


class ServiceControl:
    """The unit of a service, or nothing when the manifest names none."""

    def __init__(self, unit: str | None, runner: CommandRunner) -> None:
        self.unit = unit
        self._runner = runner
        self.stopped_by_us = False

    def precheck(self) -> None:
        if self.unit and shutil.which("systemctl") is None:
            raise PrecheckFailed(
                f"unit {self.unit} is set but systemctl is not on PATH",
                hint="run on a systemd host or remove `unit` from the manifest",
            )

    def is_active(self) -> bool:
        if not self.unit:
            return False
        result = self._runner.run(["systemctl", "is-active", "--quiet", self.unit], as_root=True, check=False)
        return result.returncode == 0

    def stop(self) -> None:
        """Stop the unit if it runs; remember that we did, so that `restart_if_stopped` starts it."""
        if self.unit and self.is_active():
            self._runner.run(["systemctl", "stop", self.unit], as_root=True)
            self.stopped_by_us = True

    def restart_if_stopped(self) -> bool:
        """Start the unit again if we stopped it; whether it is active now (started and waited for)."""
        if self.unit and self.stopped_by_us:
            # inside a unit ordered before the service (the NixOS module's oneshot), a blocking start
            # would wait for the service, which waits for us: queue the job and let systemd run it
            no_block = bool(os.environ.get("INVOCATION_ID"))
            self._runner.run(["systemctl", "start", *(["--no-block"] if no_block else []), self.unit], as_root=True)
            self.stopped_by_us = False
            return not no_block
        return False
