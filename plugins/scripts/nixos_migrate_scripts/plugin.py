"""The `scripts` plugin: RFC 155 migrations, ordered by date, each with up/down actions.

Every script is a bash program run as the service's user with `bash -e`, in the clean
environment of `nixos_migrate.runner` plus:

- `NIXOS_MIGRATE_SERVICE`, `NIXOS_MIGRATE_FROM`, `NIXOS_MIGRATE_TO`, `NIXOS_MIGRATE_DIRECTION`;
- `BACKUP` for `backup` and `restore` scripts: the backup's private directory, which the journal
  owns and keeps after success (RFC 155 deletes it; we keep it for `down` and `restore`);
- the `environment` setting.

A migration's `backup` script needs a `restore` script; without one, the `paths` setting is
backed up by copy. In RFC 155 `backup` and `restore` are written once, under `up`: they describe
the service's state, whichever way a step goes, so a down action without scripts of its own
backs up and restores with its migration's `up` scripts. A down action without a script
restores the backup taken before the matching up step (after `--accept-data-loss`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from nixos_migrate import filebackup
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.fingerprint import tree_digest, tree_size
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.manifest import Action, Migration
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate_scripts.settings import ScriptsSettings


@hookimpl
def settings_model() -> type[ScriptsSettings]:
    return ScriptsSettings


@hookimpl
def detect_version(service: Service) -> str | None:
    # the data of a hand-written service carries no version: the journal is the record
    return service.journal_version


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    versions = [m.version for m in service.migrations]
    if target not in versions:
        raise UsageError(
            f"{service.name}: no migration reaches version {target!r}",
            hint=f"the migrations are: {', '.join(versions) or 'none'}",
        )
    if current is not None and current not in versions:
        raise UsageError(f"{service.name}: the data is at {current!r}, which is no migration's version")
    at = versions.index(current) if current is not None else -1
    goal = versions.index(target)
    steps: list[Step] = []
    for i in range(at + 1, goal + 1):
        m = service.migrations[i]
        steps.append(
            Step(
                versions[i - 1] if i else None,
                m.version,
                "up",
                f"migration {m.version}",
                warning=m.up.warn,
                data={"index": i},
            )
        )
    for i in range(at, goal, -1):
        m = service.migrations[i]
        steps.append(
            Step(
                m.version,
                versions[i - 1],
                "down",
                f"undo migration {m.version}",
                warning=m.down.warn,
                via_backup=m.down.script is None,
                data={"index": i},
            )
        )
    return steps


def _migration(service: Service, step: Step) -> Migration:
    return service.migrations[int(step.data["index"])]


def _action(service: Service, step: Step) -> Action:
    """The action of the migration `step` belongs to; an empty one for steps the core made
    (`nixos-migrate restore`), which only need the `paths` backup."""
    if "index" not in step.data:
        return Action()
    m = _migration(service, step)
    return m.up if step.direction == "up" else m.down


def _backup_scripts(service: Service, step: Step) -> tuple[str | None, str | None]:
    """The step's backup and restore scripts: its action's, or for a down action that has none,
    those its migration gives under `up` (the same state is saved and put back)."""
    action = _action(service, step)
    if action.backup is None and action.restore is None and step.direction == "down" and "index" in step.data:
        action = _migration(service, step).up
    return action.backup, action.restore


def _settings(service: Service) -> ScriptsSettings:
    return service.settings  # type: ignore[no-any-return]


@contextlib.contextmanager
def _script_file(service: Service, text: str) -> Iterator[Path]:
    """The script in a private temporary file the service's user can read."""
    identity = service.run.identity
    with tempfile.TemporaryDirectory(prefix="nixos-migrate-") as tmp:
        path = Path(tmp) / "script.sh"
        path.write_text(text, encoding="utf-8")
        if os.geteuid() == 0:
            os.chown(tmp, identity.uid, identity.gid)
            os.chown(path, identity.uid, identity.gid)
        yield path


def _run_script(service: Service, step: Step | None, text: str, extra: Mapping[str, str] | None = None) -> str:
    env = dict(_settings(service).environment)
    env["NIXOS_MIGRATE_SERVICE"] = service.name
    if step is not None:
        env |= {
            "NIXOS_MIGRATE_FROM": step.from_version or "",
            "NIXOS_MIGRATE_TO": step.to_version,
            "NIXOS_MIGRATE_DIRECTION": step.direction,
        }
    env |= dict(extra or {})
    with _script_file(service, text) as path:
        return service.run.run(["bash", "-e", str(path)], env=env).output


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    action = _action(service, step)
    settings = _settings(service)
    checks: list[Check] = []
    backup_script, restore_script = _backup_scripts(service, step)
    scripts = {
        "script": None if step.via_backup else action.script,
        "backup": backup_script,
        "restore": restore_script,
        "verify": settings.verify,
    }
    for role, text in scripts.items():
        if text is None:
            continue
        result = service.run.run(["bash", "-n"], input=text.encode(), check=False)
        checks.append(Check(f"{role} script parses", result.returncode == 0, result.output.strip()))
    if backup_script and not restore_script:
        checks.append(
            Check(
                "backup has a restore script",
                False,
                f"migration {_migration(service, step).version}: a backup script needs a restore script",
            )
        )
    elif not backup_script and not settings.paths:
        checks.append(
            Check(
                "something to back up",
                False,
                "set settings.paths or give the migration backup and restore scripts (under up, or under down)",
            )
        )
    elif not backup_script:
        for choice in map(filebackup.choose, settings.paths):
            checks.append(Check(f"backup of {choice.path}", True, f"{choice.kind}: {choice.why}"))
    return checks


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    if _backup_scripts(service, step)[0]:
        return None  # what a script writes is unknown
    return filebackup.estimate(_settings(service).paths)


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    backup_script, restore_script = _backup_scripts(service, step)
    if backup_script is None:
        return filebackup.backup_paths(_settings(service).paths, dest, service.run, service.progress)
    _run_script(service, step, backup_script, {"BACKUP": str(dest)})
    # the restore script travels with the backup: the manifest may change before it is needed
    return BackupInfo("script", dest, tree_size(dest), tree_digest(dest), {"restore": restore_script})


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    if filebackup.owns(backup):
        filebackup.restore_paths(backup, service.run, service.progress)
        return True
    if backup.checksum is not None and tree_digest(backup.path) != backup.checksum:
        raise MigrateError(f"backup {backup.id} at {backup.path} does not match its checksum; not used")
    script = backup.detail.get("restore")
    if not isinstance(script, str):
        raise MigrateError(f"backup {backup.id} has no restore script")
    _run_script(service, backup.step, script, {"BACKUP": str(backup.path)})
    return True


@hookimpl
def up(service: Service, step: Step) -> bool:
    script = _action(service, step).script
    if script is not None:
        _run_script(service, step, script)
    return True


@hookimpl
def down(service: Service, step: Step) -> bool:
    script = _action(service, step).script
    if script is None:
        raise MigrateError(f"migration {_migration(service, step).version} has no down script")
    _run_script(service, step, script)
    return True


@hookimpl
def verify(service: Service) -> list[Check]:
    script = _settings(service).verify
    if script is None:
        return []
    with _script_file(service, script) as path:
        env = dict(_settings(service).environment) | {"NIXOS_MIGRATE_SERVICE": service.name}
        result = service.run.run(["bash", "-e", str(path)], env=env, check=False)
    tail = "\n".join(result.output.strip().splitlines()[-5:])
    return [Check("verify script", result.returncode == 0, tail if result.returncode else "exit 0")]
