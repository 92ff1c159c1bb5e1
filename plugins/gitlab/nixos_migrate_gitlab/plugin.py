"""The `gitlab` plugin: GitLab through its required upgrade stops.

Each hop lands on the next required stop (GitLab's `config/upgrade_path.yml`, versions.py),
runs the stop's database migrations (pre-deployment, then post-deployment) with its own
`gitlab-rake`, and runs the batched background migrations they queued to their end
(background.py): the next stop's migrations refuse to run before. Before each hop: no
unfinished background migration, the PostgreSQL major the target needs, the binaries; and a
backup of GitLab's own archive with the secrets it leaves out (backups.py). GitLab has no down
migrations: a downgrade restores the backup taken before the hop, with that version's tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.lazy import lazy_module
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate_gitlab import versions
from nixos_migrate_gitlab.settings import GitlabSettings

# every command loads every installed plugin: what only a GitLab service uses loads when it runs
if TYPE_CHECKING:
    from nixos_migrate_gitlab import background, backups, database, tools
else:
    background = lazy_module("nixos_migrate_gitlab.background")
    backups = lazy_module("nixos_migrate_gitlab.backups")
    database = lazy_module("nixos_migrate_gitlab.database")
    tools = lazy_module("nixos_migrate_gitlab.tools")

VERSION_FILE = "VERSION"


@hookimpl
def settings_model() -> type[GitlabSettings]:
    return GitlabSettings


def _recorded(s: GitlabSettings) -> str | None:
    path = s.state_dir / VERSION_FILE
    if not path.is_file():
        return None
    text = path.read_text().strip()
    try:
        return versions.series(text)
    except UsageError:
        raise MigrateError(f"{path} holds {text[:40]!r}, not a GitLab version") from None


def _fully_applied(s: GitlabSettings, applied: set[str]) -> str | None:
    """The newest packaged version whose every schema migration the database has."""
    found = []
    for version, root in tools.packages(s).items():
        expected = tools.package_migrations(root)
        if expected and expected <= applied:
            found.append(versions.key(version))
    return versions.label(max(found)) if found else None


@hookimpl
def detect_version(service: Service) -> str | None:
    """The version that last migrated the database: the state dir's VERSION file, unless the
    database lacks migrations of that version's package (the file is newer than the data);
    else the newest package whose migrations are all applied; else settings.initial_version."""
    s = database.settings_of(service)
    if not database.has_schema(service):
        return None
    applied = database.applied(service)
    if not applied:
        return None
    recorded = _recorded(s)
    if recorded is not None:
        root = tools.packages(s).get(recorded)
        expected = tools.package_migrations(root) if root else None
        if expected is None or expected <= applied:
            return recorded
        behind = _fully_applied(s, applied)
        if behind is None:
            raise MigrateError(
                f"{s.state_dir / VERSION_FILE} says GitLab {recorded}, but the database lacks "
                f"{len(expected - applied)} of its migrations, and no package matches it",
                hint="set settings.initial_version to the version that last ran the migrations",
            )
        return behind
    return _fully_applied(s, applied) or s.initial_version or service.journal_version


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    """A step per required stop between the data's version and the target (conditional stops
    with a warning); down: the hops back, each by the backup taken before it."""
    s = database.settings_of(service)
    goal = versions.series(target)
    if current is None or versions.key(current) == versions.key(goal):
        return []  # no data: GitLab's first start creates its database itself
    target_root = tools.packages(s).get(goal)
    stops, source = versions.stops_for(tools.tree(target_root) if target_root else None)
    up = versions.key(goal) > versions.key(current)
    hops = versions.path(current, goal, stops) if up else versions.path(goal, current, stops)
    needed = [current, *(b for _a, b, _stop in hops)] if up else [a for a, _b, _stop in hops]
    missing = [v for v in dict.fromkeys(versions.series(n) for n in needed) if v not in tools.packages(s)]
    if missing:
        raise UsageError(
            f"{service.name}: GitLab {current} -> {goal} goes through {', '.join(b for _a, b, _s in hops)} "
            f"({source}); settings.packages lacks {', '.join(missing)}",
            hint="add a package for every stop: GitLab's migrations of a stop need that stop's code",
        )
    if not up:
        return [
            Step(
                b,
                a,
                "down",
                f"restore the backup taken before {a} -> {b} (GitLab has no down migrations)",
                via_backup=True,
            )
            for a, b, _stop in reversed(hops)
        ]
    steps = []
    for a, b, stop in hops:
        warning = None
        if stop is not None and stop.conditional:
            warning = f"GitLab {b} is a conditional stop: {stop.comment}"
        steps.append(
            Step(
                a,
                b,
                "up",
                f"GitLab {b}: database migrations, then the batched background migrations they queue",
                warning=warning,
                data={"stops": source},
            )
        )
    return steps


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    """The tools of both versions, the database reachable, no unfinished background
    migration, the PostgreSQL major the target needs, the secrets a restore needs."""
    s = database.settings_of(service)
    checks = []
    old_root, new_root = tools.prefix(s, step.from_version or ""), tools.prefix(s, step.to_version)
    for label, root, names in (
        ("current", old_root, ["gitlab-rake"]),
        ("target", new_root, ["gitlab-rake"]),
    ):
        absent = [n for n in names if not tools.has_tool(root, n)]
        checks.append(
            Check(f"{label} GitLab's tools", not absent, f"missing {root}/bin/{absent[0]}" if absent else str(root))
        )
    try:
        major = database.postgres_major(service)
    except MigrateError as exc:
        return [*checks, Check("GitLab's database reachable", False, exc.message)]
    checks.append(Check("GitLab's database reachable", True, f"PostgreSQL {major}, database {s.database.dbname}"))
    if step.direction == "up":
        needed = versions.min_postgres(step.to_version)
        if needed is not None:
            checks.append(
                Check(
                    "PostgreSQL major for the target",
                    major >= needed,
                    f"GitLab {step.to_version} needs PostgreSQL {needed} or newer, the database runs {major}"
                    + ("" if major >= needed else ": migrate the postgresql service first (after = [...])"),
                )
            )
        checks.append(background.pending_check(service))
        checks.append(background.legacy_check(service, old_root, step.from_version or ""))
        secrets = s.secrets[0]
        checks.append(
            Check(
                "GitLab's secrets present",
                secrets.is_file(),
                f"{secrets}: without it a restore cannot read the database's encrypted columns"
                if not secrets.is_file()
                else f"{secrets} and the other files the GitLab backup leaves out",
            )
        )
    return checks


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    from nixos_migrate.fingerprint import tree_size

    s = database.settings_of(service)
    # the archive is about the database's size plus the repositories and uploads it holds
    return database.size(service) + tree_size(s.state_dir) - tree_size(s.archive_dir)


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    return backups.take(service, step, dest)


@hookimpl
def up(service: Service, step: Step) -> bool:
    s = database.settings_of(service)
    root = tools.prefix(s, step.to_version)
    with service.progress.task(f"GitLab {step.to_version}: pre-deployment migrations"):
        tools.rake(service, root, "db:migrate", env={"SKIP_POST_DEPLOYMENT_MIGRATIONS": "true"})
    with service.progress.task(f"GitLab {step.to_version}: post-deployment migrations"):
        tools.rake(service, root, "db:migrate")
    background.finish(service, root, s.background_timeout)
    release = tools.package_release(root) or step.to_version
    (s.state_dir / VERSION_FILE).write_text(release + "\n")
    return True


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    backups.restore(service, backup)
    return True


@hookimpl
def verify(service: Service) -> list[Check]:
    """Every migration of the version's package up (`db:migrate:status`), no background
    migration failed or left unfinished, the version recorded."""
    s = database.settings_of(service)
    version = detect_version(service)
    if version is None:
        return [Check("GitLab's database has its schema", False, f"no schema_migrations in {s.database.dbname}")]
    checks = []
    root = tools.packages(s).get(version)
    if root is None:
        checks.append(Check("migrations all up", False, f"no package for {version} to ask db:migrate:status"))
    else:
        lines = tools.rake(service, root, "db:migrate:status").output.splitlines()
        rows = [line.split() for line in lines if line.strip().startswith(("up ", "down "))]
        down = [r[1] for r in rows if r[0] == "down" and len(r) > 1]
        detail = f"{len(rows)} migrations up" if not down else f"{len(down)} down: {', '.join(down[:10])}"
        checks.append(Check("migrations all up", bool(rows) and not down, detail if rows else "no status rows"))
    left = database.unfinished(service)
    failed = [b for b in left if b.status == database.FAILED]
    checks.append(
        Check(
            "no background migration failed or unfinished",
            not left,
            "; ".join(b.describe() for b in left[:10]) if left else f"{len(database.batched(service))} finished",
        )
    )
    recorded = _recorded(s)
    checks.append(
        Check(
            "version recorded",
            recorded == version,
            f"{s.state_dir / VERSION_FILE}: {recorded or 'none'}" + ("" if not failed else f"; {len(failed)} failed"),
        )
    )
    return checks
