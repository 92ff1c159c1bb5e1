"""The engine's read-only side: one manifest, its plugins and its journal; the services' context,
their plans, status and verification, and the pruning of backups. Running steps is executor.py's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.control import ServiceControl
from nixos_migrate.errors import (
    ManifestError,
    MigrateError,
    PluginError,
    UsageError,
)
from nixos_migrate.journal import Journal
from nixos_migrate.locking import read_holder, service_locks
from nixos_migrate.manifest import Manifest, format_validation_error, service_order
from nixos_migrate.model import BackupRecord, Check
from nixos_migrate.planner import (
    ServicePlan,
    make_plan,
)
from nixos_migrate.plugins import PluginHooks, PluginRegistry, call_hook
from nixos_migrate.progress import NullProgress, Progress
from nixos_migrate.runner import CommandRunner, Identity


class Queries:
    """One manifest, its plugins and its journal; every CLI command goes through here."""

    def __init__(
        self,
        manifest: Manifest,
        registry: PluginRegistry,
        *,
        source: str = "manifest",
        progress: Progress | None = None,
        command: str = "",
    ) -> None:
        self.manifest = manifest
        self.registry = registry
        self.source = source
        self.progress: Progress = progress or NullProgress()
        self.command = command
        #: leave the `settle` hook to `nixos-migrate settle` (`--defer-settle`)
        self.defer_settle = False
        self._journal: Journal | None = None
        self._services: dict[str, Service] = {}

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = Journal.open(self.manifest.state_dir)
        return self._journal

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()

    def names(self, requested: Sequence[str] | None) -> list[str]:
        """`requested` (default all) in dependency order; unknown names are usage errors."""
        for name in requested or []:
            if name not in self.manifest.services:
                known = ", ".join(sorted(self.manifest.services)) or "none"
                raise UsageError(f"unknown service {name!r} (the manifest has: {known})")
        if requested:
            return [n for n in service_order(self.manifest, list(requested)) if n in requested]
        return service_order(self.manifest)

    def hooks(self, name: str) -> PluginHooks:
        plugin = self.manifest.plugin_of(name)
        try:
            return self.registry.hooks(plugin)
        except PluginError as exc:
            raise ManifestError(f"{self.source}: services.{name}.plugin: {exc.message}", hint=exc.hint) from None

    def service(self, name: str) -> Service:
        """The hook context of `name`, with settings validated by the plugin's model."""
        if name in self._services:
            return self._services[name]
        spec = self.manifest.services[name]
        hooks = self.hooks(name)
        settings: Any = dict(spec.settings)
        model = call_hook(hooks, "settings_model")
        if model is not None:
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise PluginError(f"plugin {hooks.name!r}: settings_model must return a pydantic model class")
            try:
                settings = model.model_validate(spec.settings)
            except ValidationError as exc:
                raise ManifestError(format_validation_error(self.source, exc, f"services.{name}.settings")) from None
        identity = Identity.lookup(spec.user)
        runner = CommandRunner(identity)
        service = Service(
            name=name,
            plugin=hooks.name,
            settings=settings,
            migrations=spec.migrations,
            target=spec.target,
            user=spec.user,
            state_dir=self.manifest.state_dir / "services" / name,
            backup_dir=self.manifest.backups_root / name,
            journal_version=self.journal.version(name),
            run=runner,
            progress=self.progress,
            control=ServiceControl(spec.unit, runner),
        )
        self._services[name] = service
        return service

    def accepted(self, name: str, extra: Sequence[str]) -> set[str]:
        return set(self.manifest.services[name].accept) | set(extra)

    def plan(
        self,
        requested: Sequence[str] | None,
        *,
        accept: Sequence[str] = (),
        accept_data_loss: bool = False,
        run_checks: bool = True,
    ) -> list[ServicePlan]:
        plans = []
        for name in self.names(requested):
            service = self.service(name)
            plans.append(
                make_plan(
                    service,
                    self.hooks(name),
                    self.journal,
                    target=service.target,
                    accepted=self.accepted(name, accept),
                    accept_data_loss=accept_data_loss,
                    run_checks=run_checks,
                )
            )
        return plans

    def status(self, requested: Sequence[str] | None) -> list[dict[str, Any]]:
        rows = []
        for name in self.names(requested):
            row: dict[str, Any] = {
                "service": name,
                "plugin": self.manifest.plugin_of(name),
                "target": self.manifest.services[name].target,
                "recorded": None,
                "data_version": None,
                "pending": [],
                "dirty": None,
                "lock_holder": read_holder(self.manifest.state_dir, name),
                "error": None,
            }
            try:
                row["recorded"] = self.journal.version(name)
                flight = self.journal.in_flight(name)
                if flight is not None and row["lock_holder"] is None:
                    row["dirty"] = {"step": flight.step.label, "phase": flight.phase, "started": flight.started}
                plan = self.plan([name], run_checks=False)[0]
                row["data_version"] = plan.current
                row["pending"] = [s.label for s in plan.steps]
                row["refusals"] = [r.message for r in plan.refusals]
            except MigrateError as exc:
                row["error"] = exc.message
            rows.append(row)
        return rows

    def verify(self, requested: Sequence[str] | None) -> dict[str, list[Check]]:
        names = self.names(requested)
        results = {}
        with service_locks(self.manifest.state_dir, names, self.command):
            for name in names:
                results[name] = self._verify(self.service(name))
        return results

    def _verify(self, service: Service) -> list[Check]:
        with self.progress.task(f"{service.name}: verify"):
            groups = call_hook(self.hooks(service.name), "verify", service=service)
        return [c for group in groups for c in group]

    def prune(self, name: str, keep: int) -> list[BackupRecord]:
        """Delete all but the newest `keep` backups of `name`; returns the removed ones."""
        if keep < 0:
            raise UsageError("--keep must be 0 or more")
        [name] = self.names([name])
        with service_locks(self.manifest.state_dir, [name], self.command):
            records = self.journal.backups(name)
            flight = self.journal.in_flight(name)
            protected = {flight.backup.id} if flight and flight.backup else set()
            doomed = [r for r in records[: max(len(records) - keep, 0)] if r.id not in protected]
            runner = self.service(name).run
            for record in doomed:
                filebackup.remove_backup(record, runner)
                self.journal.mark_pruned(record.id)
            return doomed
