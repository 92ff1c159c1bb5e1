"""From the version the data is at and a target to a validated plan (DESIGN §5, points 1-3).

Planning changes nothing. It gathers every reason to refuse (a dirty journal, a version
mismatch, an unaccepted warning, an irreversible or data-losing step, a failed pre-check, a
backup directory without room) so the operator sees all of them at once.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.errors import (
    JournalDirty,
    NeedsAcceptance,
    PluginError,
    PrecheckFailed,
    Refused,
    VersionMismatch,
)
from nixos_migrate.journal import InFlight, Journal
from nixos_migrate.model import BackupRecord, Check, Step
from nixos_migrate.plugins import PluginHooks, call_hook

#: Kept free on the backup filesystem on top of the estimates.
BACKUP_MARGIN = 1 << 20


@dataclass(frozen=True)
class Refusal:
    kind: type[Refused]
    message: str
    hint: str | None = None


@dataclass
class ServicePlan:
    service: Service
    recorded: str | None
    current: str | None
    target: str
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    restores: dict[int, BackupRecord] = field(default_factory=dict)
    """For steps performed through a backup: step index -> the backup that will be restored."""
    backup_bytes: int | None = None
    in_flight: InFlight | None = None
    will_init: bool = False

    @property
    def name(self) -> str:
        return self.service.name

    def raise_refusals(self) -> None:
        if not self.refusals:
            return
        kinds = {r.kind for r in self.refusals}
        kind = kinds.pop() if len(kinds) == 1 else Refused
        message = "\n".join(r.message for r in self.refusals)
        hints = [r.hint for r in self.refusals if r.hint]
        raise kind(message, hint="; ".join(dict.fromkeys(hints)) or None)

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.name,
            "plugin": self.service.plugin,
            "recorded": self.recorded,
            "current": self.current,
            "target": self.target,
            "steps": [
                s.to_json() | {"restores_backup": self.restores[i].id if i in self.restores else None}
                for i, s in enumerate(self.steps)
            ],
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "refusals": [{"kind": r.kind.__name__, "message": r.message, "hint": r.hint} for r in self.refusals],
            "backup_bytes": self.backup_bytes,
            "init": self.will_init,
            "in_flight": None
            if self.in_flight is None
            else {
                "step": self.in_flight.step.to_json(),
                "phase": self.in_flight.phase,
                "started": self.in_flight.started,
            },
        }


def dirty_refusal(name: str, flight: InFlight) -> Refusal:
    return Refusal(
        JournalDirty,
        f"{name}: step {flight.step.label} was interrupted in phase '{flight.phase}' (started {flight.started})",
        f"`nixos-migrate up {name} --resume` to finish it or `--rollback` to restore its backup",
    )


def make_plan(
    service: Service,
    hooks: PluginHooks,
    journal: Journal,
    *,
    target: str,
    accepted: set[str],
    accept_data_loss: bool,
    run_checks: bool = True,
) -> ServicePlan:
    name = service.name
    recorded = journal.version(name)
    flight = journal.in_flight(name)
    detected = call_hook(hooks, "detect_version", service=service)
    plan = ServicePlan(service, recorded, detected, target, in_flight=flight)
    if flight is not None:
        plan.refusals.append(dirty_refusal(name, flight))
        return plan
    # a recorded None means "no data then": data the service created itself since is adopted
    if recorded is not None and detected != recorded:
        plan.refusals.append(
            Refusal(
                VersionMismatch,
                f"{name}: the data is at version {detected or '(no data)'} "
                f"but the journal recorded {recorded or '(none)'}",
                f"find out what changed the data; the journal is {journal.path}",
            )
        )
        return plan
    plan.will_init = detected is None and hooks.implements("init")
    steps = call_hook(hooks, "plan", service=service, current=detected, target=target)
    if steps is None:
        raise PluginError(f"plugin {hooks.name!r} does not implement `plan`")
    plan.steps = list(steps)
    _check_chain(hooks.name, plan)
    _check_acceptance(plan, journal, accepted, accept_data_loss)
    if run_checks and plan.steps:
        run_prechecks(plan, hooks)
    return plan


def _check_chain(plugin: str, plan: ServicePlan) -> None:
    position = plan.current
    for step in plan.steps:
        if not isinstance(step, Step) or step.from_version != position:
            raise PluginError(f"plugin {plugin!r} returned a plan that does not chain from {position!r}: {step!r}")
        position = step.to_version
    if plan.steps and position != plan.target:
        raise PluginError(f"plugin {plugin!r} returned a plan ending at {position!r}, not {plan.target!r}")


def _check_acceptance(plan: ServicePlan, journal: Journal, accepted: set[str], accept_data_loss: bool) -> None:
    name = plan.name
    for index, step in enumerate(plan.steps):
        if step.needs_acceptance and step.to_version not in accepted:
            what = step.warning or "this step is irreversible"
            plan.refusals.append(
                Refusal(
                    NeedsAcceptance,
                    f"{name}: step {step.label} needs acceptance: {what}",
                    f"add {step.to_version!r} to services.{name}.accept or pass --accept {step.to_version}",
                )
            )
        if step.via_backup:
            backup = backup_for(journal, name, step)
            if backup is None:
                plan.refusals.append(
                    Refusal(
                        PrecheckFailed,
                        f"{name}: step {step.label} needs the backup taken before {step.to_version} -> "
                        f"{step.from_version}, and the journal has none",
                        "`nixos-migrate backups` lists what there is; `restore` can use one of them",
                    )
                )
                continue
            plan.restores[index] = backup
            if not accept_data_loss:
                plan.refusals.append(
                    Refusal(
                        NeedsAcceptance,
                        f"{name}: step {step.label} restores backup {backup.id} from {backup.created}: "
                        "data written since then is lost",
                        "pass --accept-data-loss",
                    )
                )


def backup_for(journal: Journal, name: str, step: Step) -> BackupRecord | None:
    backup_id = step.data.get("backup_id")
    if isinstance(backup_id, int):
        return journal.backup(backup_id)
    return journal.backup_before(name, step.to_version, step.from_version or "")


def run_prechecks(plan: ServicePlan, hooks: PluginHooks) -> None:
    service = plan.service
    try:
        service.control.precheck()
    except PrecheckFailed as exc:
        plan.refusals.append(Refusal(PrecheckFailed, f"{plan.name}: {exc.message}", exc.hint))
    total: int | None = 0
    for step in plan.steps:
        results = call_hook(hooks, "check", service=service, step=step)
        for group in results:
            plan.checks.extend(group)
        size = call_hook(hooks, "backup_size", service=service, step=step)
        total = None if total is None or size is None else total + int(size)
    plan.backup_bytes = total
    for check in plan.checks:
        if not check.ok:
            plan.refusals.append(
                Refusal(
                    PrecheckFailed,
                    f"{plan.name}: pre-check {check.name} failed" + (f": {check.detail}" if check.detail else ""),
                )
            )
    problem = backup_room_problem(service.backup_dir, total)
    if problem:
        plan.refusals.append(
            Refusal(PrecheckFailed, f"{plan.name}: {problem}", "free space or set backup_dir elsewhere")
        )


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def backup_room_problem(backup_dir: Path, needed: int | None) -> str | None:
    """Why the backup directory cannot take `needed` bytes, or None when it can."""
    base = _existing_ancestor(backup_dir)
    if not base.is_dir():
        return f"backup directory {backup_dir} cannot be created: {base} is not a directory"
    if not os.access(base, os.W_OK | os.X_OK) or _read_only(base):
        return f"backup directory {backup_dir} is not writable ({base})"
    if needed is not None:
        free = shutil.disk_usage(base).free
        if free < needed + BACKUP_MARGIN:
            return (
                f"backup directory {backup_dir} has {free} bytes free; the backups need "
                f"{needed} + {BACKUP_MARGIN} margin"
            )
    return None


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
