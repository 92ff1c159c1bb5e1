"""The `postgresql` plugin: major upgrades with pg_upgrade, logical downgrades, exact restores.

This module is the list of hooks, each the step of PostgreSQL's upgrade procedure it performs;
the mechanics live in the modules they name (imported when a hook runs, so that a read command
such as `status` loads none of them).

Layout. The data is in `data_dir` when it holds a cluster, else in `old_data_dir` (NixOS keeps
one directory per major). An upgrade builds the new cluster in a staging directory and puts it in
place last; a downgrade builds the older cluster the same way. Nothing is ever written into the
cluster the step starts from, except by pg_upgrade's `link` and `swap` methods, which is why those
take a file-level backup. Directories that are mount points or btrfs subvolumes keep their place
and their contents move (layout.py).

Backups. With `copy`, `clone`, `copy-file-range` and `dump` (and for every downgrade) the
untouched source cluster *is* the backup: at the commit it leaves the data path for the backup
directory and is recorded; nothing is copied. With `link` and `swap` the source is copied first
(a snapshot or reflink clone where the filesystem can). Every backup carries the logical
fingerprint of the data (fingerprint.py), which verify compares after the step.
"""

from __future__ import annotations

from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import UsageError
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Direction, Step
from nixos_migrate_postgresql.cluster import current_dir, major_of
from nixos_migrate_postgresql.settings import PostgresSettings


@hookimpl
def settings_model() -> type[PostgresSettings]:
    return PostgresSettings


@hookimpl
def detect_version(service: Service) -> str | None:
    """The major in PG_VERSION of the data, never the installed binary's."""
    found = current_dir(service.settings)
    return major_of(found) if found else None


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    """One hop straight to the target: pg_upgrade and a dump both go direct."""
    from nixos_migrate_postgresql import method as methods

    s: PostgresSettings = service.settings
    if not target.isdigit():
        raise UsageError(f"{service.name}: target {target!r} is not a PostgreSQL major version (like '17')")
    if target not in s.packages:
        raise UsageError(
            f"{service.name}: no binaries for PostgreSQL {target} in settings.packages "
            f"(have {sorted(s.packages) or 'none'})",
            hint=f'add settings.packages."{target}"',
        )
    if current is None or current == target:
        return []
    if current not in s.packages:
        raise UsageError(
            f"{service.name}: the data is PostgreSQL {current}, and settings.packages has no binaries for it",
            hint=f'add settings.packages."{current}"',
        )
    direction: Direction = "up" if int(target) > int(current) else "down"
    method = methods.resolve_method(service, Step(current, target, direction))
    what = f"pg_upgrade --{method}" if direction == "up" and method != "dump" else "dump and reload"
    return [Step(current, target, direction, what, data={"method": method})]


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    """Binaries, the old cluster stopped and clean, the target free, the method and layout
    possible, what the older major cannot hold, room, and `pg_upgrade --check`."""
    from nixos_migrate_postgresql import prechecks

    return prechecks.check(service, step)


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    from nixos_migrate_postgresql import backups

    return backups.size(service, step)


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    """The fingerprint of the data, and the old cluster retained (or copied for link and swap)."""
    from nixos_migrate_postgresql import backups

    return backups.take(service, step, dest)


@hookimpl
def up(service: Service, step: Step) -> bool:
    """initdb and pg_upgrade (or a dump and reload) into a staging cluster, checked and flushed
    before the commit puts it in place; planner statistics are noted for `settle`."""
    from nixos_migrate_postgresql import commit, logical_step, state, statistics, upgrade

    method = str(step.data.get("method", "copy"))
    src, dst = state.source_dir(service, step), state.target_dir(service, step)
    if method == "dump":
        # a dump creates every extension at the new major's default version: nothing to update
        staging, _found = logical_step.copy_into(service, step, src)
    else:
        staging = upgrade.into_staging(service, step, src, method)
    statistics.note(service, step, dst)
    commit.commit(service, step, src, dst, staging, method)
    return True


@hookimpl
def down(service: Service, step: Step) -> bool:
    """A logical copy of the newer cluster into a fresh older one, compared table by table
    before the commit; what was written since the upgrade is kept."""
    from nixos_migrate_postgresql import commit, logical_step, state, statistics

    src, dst = state.source_dir(service, step), state.target_dir(service, step)
    staging, _found = logical_step.copy_into(service, step, src)
    statistics.note(service, step, dst)
    commit.commit(service, step, src, dst, staging, "dump")
    return True


@hookimpl
def settle(service: Service) -> list[Check] | None:
    """The planner statistics a step left, through the running service (or on the stopped one)."""
    from nixos_migrate_postgresql import statistics

    return statistics.settle(service)


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    from nixos_migrate_postgresql import restoring

    return restoring.restore(service, backup)


@hookimpl
def verify(service: Service) -> list[Check]:
    """The content against the fingerprint taken before the step, amcheck, the databases."""
    from nixos_migrate_postgresql import verification

    return verification.verify(service)
