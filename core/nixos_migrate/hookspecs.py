# mypy: disable-error-code="empty-body"
# (hook specifications have no bodies: pluggy calls the implementations)
"""THE plugin API of nixos-migrate.

A plugin is a module (or object) with functions marked `@hookimpl`, registered under the
entry-point group `nixos_migrate`; the entry-point name is the plugin's name everywhere (manifest
`plugin` value, NixOS option key). A plugin implements the hooks it needs; unknown hook names
are rejected when it is loaded.

Rules every hook follows:

- The core calls a hook only on the plugin serving the service, so implementations never filter
  by service name.
- Arguments are passed by keyword. Implementations may accept a subset of the arguments but must
  not give them defaults (pluggy does not pass defaults).
- `service` is a `nixos_migrate.context.Service`: the service's name, its validated settings,
  its migrations, target, user, private state and backup directories, a command runner that
  runs argv lists as the service's user with a clean environment, a progress reporter, and the
  control of its systemd unit.
- A hook signals failure by raising. `MigrateError` subclasses carry their own message and hint;
  any other exception is reported with its type. Inside a step a failure leads to a restore.
- "May be re-run" says whether the core may call the hook again with the same arguments after a
  crash or on `--resume`, and whether a plugin must make it idempotent.

Commands. A plugin may add subcommands to `nixos-migrate` (the PostgreSQL plugin's `demo`)
through a second entry-point group, `nixos_migrate.commands`: the entry-point name is the
subcommand's name, its object a `click.Command`. They are imported only when that subcommand
runs (and listed by `--help`), so they cost the other commands nothing; a name the core uses
itself is not taken. A command runs other `nixos-migrate` command lines with
`nixos_migrate.cli.main(argv)`, which returns the exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step

#: the entry-point group of plugin-contributed subcommands (see the module's docstring)
COMMANDS_GROUP = "nixos_migrate.commands"

if TYPE_CHECKING:
    from nixos_migrate.context import Service

PROJECT = "nixos_migrate"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(firstresult=True)
def settings_model() -> type[Any] | None:
    """Return the pydantic model class that validates this plugin's `settings` table.

    Called once when a manifest that uses the plugin is loaded, before any other hook, so that a
    bad setting fails at load time with the key's path instead of half-way through a migration.
    The validated model instance becomes `service.settings`.

    Returns: a `pydantic.BaseModel` subclass (use `extra="forbid"` so unknown keys are errors).
    `None` (or no implementation): settings stay the raw `dict` from the manifest.
    May be re-run: yes, it must be side-effect free.
    """


@hookspec(firstresult=True)
def detect_version(service: Service) -> str | None:
    """Read the version the service's *data* is at, from the data itself.

    Args:
        service: the service context.

    Returns: the version string (opaque to the core; only the plugin orders versions), read
    from the data (PG_VERSION, an upgrade-info file, a schema revision...) and never from the
    binaries that happen to be installed. `None` means there is no data yet. A plugin whose data
    carries no version may return `service.journal_version`.
    May be re-run: yes; it must change nothing.
    """


@hookspec(firstresult=True)
def init(service: Service) -> str | None:
    """Create the service's data for the first time (optional hook).

    Called only when `detect_version` returned `None`, before planning.

    Args:
        service: the service context; `service.target` is the version wanted.

    Returns: the version of the data just created; the plan then starts from it. `None` (or no
    implementation): the plugin does not create data, and the plan starts from no version.
    May be re-run: yes; after a crash it runs again on whatever it left, so it must start by
    clearing its own partial output.
    """


@hookspec(firstresult=True)
def plan(service: Service, current: str | None, target: str) -> list[Step] | None:
    """Return the ordered steps that move the data from `current` to `target`.

    Args:
        service: the service context.
        current: the version the data is at, `None` when there is no data.
        target: the version wanted (for `up` the manifest's target, for `down` the `--to`).

    Returns: the steps, first to last, each hop once; an empty list when the data is already at
    `target`. Encode the service's rules here (one major at a time, required stops, which down
    steps must go through a backup). Raise `UsageError` for a target no step reaches.
    `None` (no implementation): the plugin cannot plan, which is an error.
    May be re-run: yes; it must change nothing.
    """


@hookspec
def check(service: Service, step: Step) -> list[Check]:
    """Pre-checks for one step that change nothing.

    Called for every step of the plan before the first step runs; a single failed check refuses
    the whole run (exit 3). Examples: binaries present, `pg_upgrade --check`, the old server not
    running, background migrations finished.

    Args:
        service: the service context. `service.applying` is True when the steps follow in this
            run (`up`, `down`; the service's unit is stopped by then) and False for `plan` (the
            pre-switch check): a dry run that the step itself repeats before it changes anything
            may be left to the step when applying.
        step: the step that will run.

    Returns: a list of `Check(name, ok, detail)`; an empty list when there is nothing to check.
    `None` counts as an empty list (pluggy drops it). Only the serving plugin is called.
    May be re-run: yes; it must change nothing.
    """


@hookspec(firstresult=True)
def backup_size(service: Service, step: Step) -> int | None:
    """Estimate the bytes the backup of `step` will take in `service.backup_dir`.

    The core adds the estimates of all steps and refuses the run when the backup filesystem has
    less room, before anything changes.

    Args:
        service: the service context.
        step: the step about to be backed up.

    Returns: bytes needed (0 for a snapshot that costs no room). `None`: unknown; only
    writability of the backup directory is checked.
    May be re-run: yes; it must change nothing.
    """


@hookspec(firstresult=True)
def backup(service: Service, step: Step, dest: Path) -> BackupInfo | None:
    """Write a backup from which `restore` can put the data back exactly as it is now.

    Called before every step, with the service stopped (when it has a unit). The core records
    the returned description in the journal and never deletes the backup implicitly.

    Args:
        service: the service context.
        step: the step about to run.
        dest: an empty, existing directory private to this backup (0700, owned by the service's
            user) in which to write it.

    Returns: a `BackupInfo` (kind, path, size, checksum, plugin detail). `None` (no
    implementation): the plugin cannot back up, which refuses the step.
    May be re-run: yes; after a crash during backup the core empties `dest` and calls it again.
    """


@hookspec(firstresult=True)
def up(service: Service, step: Step) -> bool | None:
    """Perform an up step: move the data from `step.from_version` to `step.to_version`.

    Args:
        service: the service context (unit stopped when the service has one).
        step: the step, as returned by `plan`.

    Returns: `True` when the hop was performed. `None`: the plugin did not perform it, which
    counts as a failure and restores the backup.
    May be re-run: only when the step says `resumable=True`; otherwise the core restores the
    backup before calling it again on `--resume`.
    """


@hookspec(firstresult=True)
def down(service: Service, step: Step) -> bool | None:
    """Perform a down step: move the data from `step.from_version` back to `step.to_version`.

    Never called for steps planned with `via_backup=True`: the core performs those by restoring
    the backup taken before the matching up step (after `--accept-data-loss`).

    Args:
        service: the service context (unit stopped when the service has one).
        step: the step, as returned by `plan`.

    Returns: `True` when the hop was performed. `None`: the plugin did not perform it, which
    counts as a failure and restores the backup taken before this down step.
    May be re-run: as for `up`.
    """


@hookspec(firstresult=True)
def restore(service: Service, backup: BackupRecord) -> bool | None:
    """Put the data back exactly as it was when `backup` was taken.

    Called after a failed step, on `--rollback`, on `restore SVC ID`, and for down steps planned
    `via_backup`. The backup must not be consumed: it stays usable for a later restore.

    Args:
        service: the service context (unit stopped when the service has one).
        backup: the journal's record of the backup, with the step it was taken before.

    Returns: `True` when the data was restored. `None`: the plugin cannot restore this backup,
    which is reported as a failed restore (exit 4).
    May be re-run: yes; a restore interrupted by a crash is run again from the start.
    """


@hookspec
def verify(service: Service) -> list[Check]:
    """Health checks of the data as it is now.

    Called after every step (a failed check fails the step and restores its backup), after a
    restore, and on `nixos-migrate verify`.

    Args:
        service: the service context.

    Returns: a list of `Check(name, ok, detail)`; an empty list when the plugin has nothing to
    check. `None` counts as an empty list.
    May be re-run: yes; it must not change the data.
    """


@hookspec(firstresult=True)
def settle(service: Service) -> list[Check] | None:
    """Finish earlier steps with work that need not keep the service down (optional hook).

    PostgreSQL's planner statistics are the example: a new cluster serves correct answers without
    them, and `vacuumdb --analyze-in-stages` is made for a server that already serves. A plugin
    notes such work in its state directory during `up`/`down` and does it here.

    Called by the core after a run that changed the data: at once when the service has no `unit`
    (it is still stopped); after the core started the unit again and it is active; not at all
    when something else starts the service (the NixOS module's migration unit runs before the
    service's own) or with `--defer-settle` — then `nixos-migrate settle SVC` (the NixOS module's
    settle unit, ordered after the service's unit) calls it. A failure here never restores a
    backup: the steps are committed; it is reported, the work stays noted, and the next call
    does it again.

    Args:
        service: the service context; `service.step` is `None`. The service may be running (work
            through it, as a client) or stopped (work on the data directly): the plugin looks.

    Returns: a list of `Check(name, ok, detail)`, one per piece of work done (a failed one keeps
    it noted). `None` or an empty list: nothing was left to do.
    May be re-run: yes; work done is no longer noted, and a call with nothing noted changes
    nothing.
    """


#: The hooks of the API, in the order the core calls them. Used by the meta-tests and `plugins`.
HOOK_NAMES = (
    "settings_model",
    "detect_version",
    "init",
    "plan",
    "check",
    "backup_size",
    "backup",
    "up",
    "down",
    "restore",
    "verify",
    "settle",
)

__all__ = ["HOOK_NAMES", "BackupInfo", "BackupRecord", "Check", "Step", "hookimpl", "hookspec"]
