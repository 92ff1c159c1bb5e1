"""Runs plans: lock, back up, up/down, verify, restore on failure (DESIGN §5, points 4-5)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nixos_migrate import faults, filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import (
    MigrateError,
    NeedsAcceptance,
    PluginError,
    RestoreFailed,
    StepFailed,
    UsageError,
)
from nixos_migrate.journal import InFlight
from nixos_migrate.locking import service_locks
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate.planner import (
    Refusal,
    ServicePlan,
    backup_for,
    dirty_refusal,
    make_plan,
    run_prechecks,
)
from nixos_migrate.plugins import PluginHooks, call_hook
from nixos_migrate.queries import Queries


@dataclass
class StepReport:
    step: Step
    outcome: str
    backup_id: int | None = None
    checks: list[Check] = field(default_factory=list)


@dataclass
class Settled:
    """What became of the work a run left for after the service runs (the `settle` hook): `done`,
    `failed`, `nothing` (nothing was noted), or `deferred` to `nixos-migrate settle`."""

    state: Literal["done", "failed", "nothing", "deferred"]
    checks: list[Check] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]}


@dataclass
class RunReport:
    service: str
    start_version: str | None
    end_version: str | None
    steps: list[StepReport] = field(default_factory=list)
    settled: Settled | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "from": self.start_version,
            "to": self.end_version,
            "steps": [
                {
                    "step": r.step.to_json(),
                    "outcome": r.outcome,
                    "backup_id": r.backup_id,
                    "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in r.checks],
                }
                for r in self.steps
            ],
            "settle": self.settled.to_json() if self.settled else None,
        }


def _safe(text: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text or "none")


def _failed(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


class Engine(Queries):
    """The commands that run steps (up, down, restore, settle) on top of the read-only ones."""

    # -- set-up ------------------------------------------------------------------------------

    # -- read-only commands ------------------------------------------------------------------

    # -- migrating ---------------------------------------------------------------------------

    def up(
        self,
        requested: Sequence[str] | None,
        *,
        accept: Sequence[str] = (),
        accept_data_loss: bool = False,
        resume: bool = False,
        rollback: bool = False,
    ) -> list[RunReport]:
        """Migrate every requested service to its manifest target."""
        names = self.names(requested)
        with service_locks(self.manifest.state_dir, names, self.command):
            return self._migrate(
                names, {n: self.service(n).target for n in names}, accept, accept_data_loss, resume, rollback
            )

    def down(self, name: str, to: str, *, accept: Sequence[str] = (), accept_data_loss: bool = False) -> RunReport:
        """Migrate `name` back to `to`, a version its data has been at before."""
        [name] = self.names([name])
        with service_locks(self.manifest.state_dir, [name], self.command):
            seen = self.journal.versions_seen(name)
            if to not in seen:
                raise UsageError(
                    f"{name}: version {to!r} was never recorded for this service",
                    hint=f"versions the journal knows: {', '.join(sorted(seen)) or 'none'}",
                )
            return self._migrate([name], {name: to}, accept, accept_data_loss, False, False)[0]

    def restore(self, name: str, backup_id: int, *, accept_data_loss: bool = False) -> RunReport:
        """Put the data of `name` back to a recorded backup, itself backed up first."""
        [name] = self.names([name])
        with service_locks(self.manifest.state_dir, [name], self.command):
            backup = self.journal.backup(backup_id)
            if backup is None or backup.service != name:
                raise UsageError(f"{name}: no backup with id {backup_id}", hint=f"`nixos-migrate backups {name}`")
            version = backup.step.from_version
            if version is None:
                raise UsageError(f"backup {backup_id} was taken before {name} had any data; nothing to restore")
            service = self.service(name)
            flight = self.journal.in_flight(name)
            current = call_hook(self.hooks(name), "detect_version", service=service)
            step = Step(
                current, version, "down", f"restore backup {backup_id}", via_backup=True, data={"backup_id": backup_id}
            )
            plan = ServicePlan(service, self.journal.version(name), current, version, steps=[step])
            plan.restores[0] = backup
            if flight is not None:
                plan.refusals.append(dirty_refusal(name, flight))
            if not accept_data_loss:
                plan.refusals.append(
                    Refusal(
                        NeedsAcceptance,
                        f"{name}: restoring backup {backup_id} replaces the data as it is now",
                        "pass --accept-data-loss (the current data is backed up first)",
                    )
                )
            plan.raise_refusals()
            return self._execute(plan)

    def _migrate(
        self,
        names: list[str],
        targets: dict[str, str],
        accept: Sequence[str],
        accept_data_loss: bool,
        resume: bool,
        rollback: bool,
    ) -> list[RunReport]:
        reports: list[RunReport] = []
        if rollback:
            flights = {n: f for n in names if (f := self.journal.in_flight(n)) is not None}
            if not flights:
                raise UsageError("nothing to roll back: no step is in flight")
            for name, flight in flights.items():
                reports.append(self._rollback_in_flight(self.service(name), flight))
            return reports
        if resume:
            for name in names:
                if (interrupted := self.journal.in_flight(name)) is not None:
                    reports.append(self._resume_in_flight(self.service(name), interrupted))
        plans: list[ServicePlan] = []
        try:
            for name in names:
                service = self.service(name)
                plan = make_plan(
                    service,
                    self.hooks(name),
                    self.journal,
                    target=targets[name],
                    accepted=self.accepted(name, accept),
                    accept_data_loss=accept_data_loss,
                    run_checks=False,
                )
                plans.append(plan)
                plan.raise_refusals()  # missing acceptances refuse before any downtime
                if plan.steps:
                    # the data is checked as the step will find it: with its service stopped
                    service.control.precheck()
                    service.control.stop()
                    service.applying = True
                    run_prechecks(plan, self.hooks(name))
                    plan.raise_refusals()
        except BaseException:
            for plan in plans:
                plan.service.control.restart_if_stopped()
            raise
        for plan in plans:
            reports.append(self._execute(plan))
        return reports

    def _execute(self, plan: ServicePlan) -> RunReport:
        service = plan.service
        name = service.name
        hooks = self.hooks(name)
        report = RunReport(name, plan.current, plan.current)
        if plan.recorded is None and (plan.current is not None or not self.journal.knows(name)):
            self.journal.set_version(name, plan.current, self.manifest.generation)
        if not plan.steps and not plan.will_init:
            return report
        run_id = self.journal.start_run(name, self.command or "up", self.manifest.generation)
        try:
            if plan.will_init:
                plan = self._init(plan, hooks)
                report.start_version = report.end_version = plan.current
            for index, step in enumerate(plan.steps):
                report.steps.append(self._run_step(service, hooks, run_id, step, plan.restores.get(index)))
                report.end_version = step.to_version
        except MigrateError as exc:
            self.journal.finish_run(run_id, type(exc).__name__, exc.message)
            raise
        finally:
            active = service.control.restart_if_stopped()
        self.journal.finish_run(run_id, "done")
        # the service's downtime ends before this: what may wait for a running service waits
        if self.defer_settle or (service.control.unit is not None and not active):
            report.settled = Settled("deferred")
        else:
            report.settled = self._settle(service)
        return report

    def settle(self, requested: Sequence[str] | None) -> dict[str, Settled]:
        """Do what earlier runs left for after the service runs (`nixos-migrate settle`)."""
        names = self.names(requested)
        with service_locks(self.manifest.state_dir, names, self.command):
            for name in names:
                if (flight := self.journal.in_flight(name)) is not None:
                    refusal = dirty_refusal(name, flight)
                    raise refusal.kind(refusal.message, hint=refusal.hint)
            return {name: self._settle(self.service(name)) for name in names}

    def _settle(self, service: Service) -> Settled:
        """Call `settle`; a failure is reported, never restored (the steps are committed)."""
        try:
            with self.progress.task(f"{service.name}: settle"):
                checks = call_hook(self.hooks(service.name), "settle", service=service) or []
        except MigrateError as exc:
            return Settled("failed", [Check("settle", False, exc.message)])
        if not checks:
            return Settled("nothing")
        return Settled("failed" if _failed(checks) else "done", list(checks))

    def _init(self, plan: ServicePlan, hooks: PluginHooks) -> ServicePlan:
        service = plan.service
        with self.progress.task(f"{service.name}: create data"):
            version = call_hook(hooks, "init", service=service)
        if version is None:
            return plan
        self.journal.set_version(service.name, version, self.manifest.generation)
        service.journal_version = version
        new = make_plan(
            service,
            hooks,
            self.journal,
            target=plan.target,
            accepted=self.accepted(service.name, ()),
            accept_data_loss=False,
        )
        new.raise_refusals()
        return new

    # -- one step ----------------------------------------------------------------------------

    def _backup_dest(self, service: Service, step_id: int, step: Step) -> Path:
        return service.backup_dir / f"step-{step_id}-{_safe(step.from_version)}-to-{_safe(step.to_version)}"

    def _run_step(
        self, service: Service, hooks: PluginHooks, run_id: int, step: Step, restores: BackupRecord | None
    ) -> StepReport:
        name = service.name
        step_id = self.journal.begin_step(run_id, name, step)
        service.control.stop()
        service.step = step
        try:
            record = self._take_backup(service, hooks, step_id, step)
            return self._apply(service, hooks, step_id, step, record, restores)
        finally:
            service.step = None

    def _take_backup(self, service: Service, hooks: PluginHooks, step_id: int, step: Step) -> BackupRecord:
        dest = self._backup_dest(service, step_id, step)
        service.private_dir(service.backup_dir)
        service.private_dir(service.state_dir)
        filebackup.discard(dest, service.run)  # a partial backup of this very step, never recorded
        service.private_dir(dest)
        try:
            with self.progress.task(f"{service.name}: back up before {step.label}"):
                info = call_hook(hooks, "backup", service=service, step=step, dest=dest)
            if not isinstance(info, BackupInfo):
                raise PluginError(f"plugin {hooks.name!r} did not write a backup for {step.label}")
            faults.at_end_of("backup", service.name)
        except BaseException as exc:
            with contextlib.suppress(OSError, MigrateError):
                filebackup.discard(dest, service.run)
            self.journal.end_step(step_id, "restored", f"backup failed: {exc}")
            if isinstance(exc, Exception):
                raise StepFailed(
                    f"{service.name}: the backup before step {step.label} failed; the data was not touched\n{exc}",
                    hint="fix the cause and run again",
                ) from exc
            raise
        return self.journal.record_backup(service.name, step_id, step, info)

    def _apply(
        self,
        service: Service,
        hooks: PluginHooks,
        step_id: int,
        step: Step,
        record: BackupRecord,
        restores: BackupRecord | None,
        *,
        skip_apply: bool = False,
    ) -> StepReport:
        phase = "apply"
        try:
            if not skip_apply:
                self.journal.set_phase(step_id, "apply")
                with self.progress.task(f"{service.name}: {step.direction} {step.label}"):
                    self._perform(service, hooks, step, restores)
                faults.at_end_of("apply", service.name)
            phase = "verify"
            self.journal.set_phase(step_id, "verify")
            checks = self._verify(service)
            faults.at_end_of("verify", service.name)
            if failed := _failed(checks):
                raise MigrateError("verify failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))
        except BaseException as exc:
            self._restore_after_failure(service, hooks, step_id, step, record, phase, exc)
            raise  # unreachable: _restore_after_failure raises
        self.journal.commit_step(step_id, service.name, step.to_version, self.manifest.generation)
        service.journal_version = step.to_version
        return StepReport(step, "done", record.id, checks)

    def _perform(self, service: Service, hooks: PluginHooks, step: Step, restores: BackupRecord | None) -> None:
        if step.via_backup:
            if restores is None:
                raise MigrateError(f"no backup to restore for {step.label}")
            self._restore_backup(service, hooks, restores)
            return
        done = call_hook(hooks, step.direction, service=service, step=step)
        if done is not True:
            raise PluginError(f"plugin {hooks.name!r} did not perform {step.direction} {step.label}")

    def _restore_backup(self, service: Service, hooks: PluginHooks, backup: BackupRecord) -> None:
        with self.progress.task(f"{service.name}: restore backup {backup.id}"):
            done = call_hook(hooks, "restore", service=service, backup=backup)
        if done is not True:
            raise PluginError(f"plugin {hooks.name!r} did not restore backup {backup.id}")
        faults.at_end_of("restore", service.name)

    def _restore_and_verify(self, service: Service, hooks: PluginHooks, backup: BackupRecord) -> list[Check]:
        """Put `backup` back and check the result; a failed check is a failed restore."""
        self._restore_backup(service, hooks, backup)
        checks = self._verify(service)
        if failed := _failed(checks):
            raise MigrateError("verify after restore failed: " + "; ".join(c.name for c in failed))
        return checks

    def _restore_after_failure(
        self,
        service: Service,
        hooks: PluginHooks,
        step_id: int,
        step: Step,
        record: BackupRecord,
        phase: str,
        cause: BaseException,
    ) -> None:
        """Restore `record` after `cause`; always raises (StepFailed, RestoreFailed, or `cause`)."""
        reason = str(cause) if isinstance(cause, Exception) else type(cause).__name__
        self.journal.set_phase(step_id, "restore")
        try:
            self._restore_and_verify(service, hooks, record)
        except Exception as exc:
            # the step stays in flight (phase restore): every later run refuses until it is resolved
            raise RestoreFailed(
                f"{service.name}: step {step.label} failed in phase {phase}, and restoring "
                f"backup {record.id} ({record.path}) failed too\nstep: {reason}\nrestore: {exc}",
                hint=f"fix the cause, then `nixos-migrate up {service.name} --rollback`; the backup is kept",
            ) from exc
        self.journal.end_step(step_id, "restored", f"{phase}: {reason}")
        if not isinstance(cause, Exception):
            raise cause
        raise StepFailed(
            f"{service.name}: step {step.label} failed in phase {phase}; "
            f"the data was restored from backup {record.id} ({record.path}) and verified\n{reason}",
            hint=f"fix the cause and run again; `nixos-migrate history {service.name}` shows the attempt",
        ) from cause

    # -- after a crash -----------------------------------------------------------------------

    def _rollback_in_flight(self, service: Service, flight: InFlight) -> RunReport:
        hooks = self.hooks(service.name)
        report = RunReport(service.name, flight.step.from_version, flight.step.from_version)
        if flight.phase == "backup" or flight.backup is None:
            # the data was not touched yet; drop what the interrupted backup wrote
            with contextlib.suppress(OSError, MigrateError):
                filebackup.discard(self._backup_dest(service, flight.step_id, flight.step), service.run)
            self.journal.end_step(flight.step_id, "rolled-back", "interrupted during backup")
            report.steps.append(StepReport(flight.step, "rolled-back"))
            return report
        self.journal.set_phase(flight.step_id, "restore")
        service.control.stop()
        service.step = flight.step
        try:
            checks = self._restore_and_verify(service, hooks, flight.backup)
        except MigrateError as exc:
            raise RestoreFailed(
                f"{service.name}: restoring backup {flight.backup.id} ({flight.backup.path}) failed: {exc.message}",
                hint=f"fix the cause and run `nixos-migrate up {service.name} --rollback` again",
            ) from exc
        finally:
            service.step = None
            service.control.restart_if_stopped()
        self.journal.end_step(flight.step_id, "rolled-back", f"interrupted in phase {flight.phase}")
        service.journal_version = self.journal.version(service.name)
        report.steps.append(StepReport(flight.step, "rolled-back", flight.backup.id, checks))
        return report

    def _resume_in_flight(self, service: Service, flight: InFlight) -> RunReport:
        hooks = self.hooks(service.name)
        step = flight.step
        report = RunReport(service.name, step.from_version, step.from_version)
        if flight.phase == "backup" or flight.backup is None:
            # start the step again from its backup; the plan below re-creates it
            return self._rollback_in_flight(service, flight)
        if flight.phase == "restore":
            return self._rollback_in_flight(service, flight)
        restores = backup_for(self.journal, service.name, step) if step.via_backup else None
        service.control.stop()
        service.step = step
        try:
            if flight.phase == "apply" and not step.resumable:
                # not safe to run twice: back to the state the backup holds, then run it again
                self._restore_backup(service, hooks, flight.backup)
            result = self._apply(
                service, hooks, flight.step_id, step, flight.backup, restores, skip_apply=flight.phase == "verify"
            )
        finally:
            service.step = None
            service.control.restart_if_stopped()
        report.steps.append(result)
        report.end_version = step.to_version
        return report

    # -- backups -----------------------------------------------------------------------------
