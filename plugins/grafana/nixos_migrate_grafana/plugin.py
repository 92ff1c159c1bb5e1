"""The `grafana` plugin: Grafana's SQLite database, whose schema Grafana's migrator moves when the
server starts.

The version of the data is the release whose migrations are exactly the ids `migration_log`
holds (migrations.py; each release's list is read from its own package). An up step starts the
next release's server privately on the database (loopback, nothing provisioned) and stops it once
it answers `/api/health`: that start is Grafana's migration. Grafana has no down migrations, so
every down step restores the backup taken before the matching up step (`--accept-data-loss`:
what was written since is lost). Before a step, `backup` copies the database through SQLite's
backup API and takes a fingerprint of the tables a deployment keeps its work in, compared by
column after the step. `verify`: integrity, the log equal to the release's list, rows as before,
and the release's server starting on a copy of the database.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from nixos_migrate import appschema, processes
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.fingerprint import file_digest
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate_grafana import migrations, server, versions
from nixos_migrate_grafana.settings import GrafanaSettings

EXPECTED = "expected.json"
DATABASE = "grafana.db"

#: the tables whose rows the fingerprint compares: what users build in Grafana (those a release
#: lacks are left out; `kv_store` and the like are Grafana's own bookkeeping, rewritten on start)
TABLES = (
    "user", "org", "org_user", "team", "team_member", "dashboard", "dashboard_tag", "dashboard_version",
    "folder", "data_source", "api_key", "preferences", "star", "annotation", "alert_rule",
)  # fmt: skip


@hookimpl
def settings_model() -> type[GrafanaSettings]:
    return GrafanaSettings


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\0"


def _lists(service: Service) -> dict[str, list[str]]:
    s = server.settings_of(service)
    if not s.packages:
        raise UsageError("settings.packages is empty", hint="give the Grafana package of each release series")
    return {v: migrations.registered(service, v) for v in sorted(s.packages, key=versions.key)}


def _placement(service: Service) -> migrations.Placement | None:
    db = server.database(server.settings_of(service))
    if not db.is_file():
        return None
    if not _is_sqlite(db):
        raise MigrateError(f"{db} (settings.database_path) is not an SQLite database")
    done = migrations.applied(db)
    if done is None:
        raise MigrateError(f"{db} has no migration_log table: it is not a Grafana database")
    return migrations.place(done, _lists(service))


@hookimpl
def detect_version(service: Service) -> str | None:
    found = _placement(service)
    return None if found is None else found.version


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    s = server.settings_of(service)
    versions.key(target)
    server.prefix(s, target)
    known = {v: v for v in sorted({*s.packages, *([current] if current else [])}, key=versions.key)}
    return appschema.plan(
        appschema.Releases("Grafana", known),
        current,
        target,
        describe_up=lambda a, b: f"Grafana {b} runs its migrations on a private start",
        reversible=lambda newer, older: False,  # Grafana has no down migrations
        describe_down=lambda newer, older: "",
    )


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    s = server.settings_of(service)
    needed = [step.to_version]  # a down step restores, then verify starts the older release
    problems = []
    for version in needed:
        try:
            server.release(s, version)
            server.homepath(s, version)
        except MigrateError as exc:
            problems.append(exc.message)
    checks = [Check(f"grafana of {', '.join(needed)}", not problems, "; ".join(problems))]
    db = server.database(s)
    if db.is_file():
        checks.append(appschema.sqlite_integrity(db))
        need = db.stat().st_size * 2 + (16 << 20)
        free = shutil.disk_usage(db.parent).free
        checks.append(Check(f"room in {db.parent}", free >= need, f"{free >> 20} MiB free, {need >> 20} MiB needed"))
        if step.direction == "up" and not problems:
            checks.append(_runnable(service, step))
    checks.append(processes.stopped(service, s.data_dir, (b"grafana",), "Grafana"))
    return checks


def _runnable(service: Service, step: Step) -> Check:
    """Grafana runs the migrations its log lacks and ignores the ids it does not know: every id
    the database logs must be one the target registers, or the target would start on a schema it
    does not know."""
    db = server.database(server.settings_of(service))
    done = migrations.applied(db) or []
    target = migrations.registered(service, step.to_version)
    foreign = [i for i in done if i not in set(target)]
    name = f"the log is a prefix of Grafana {step.to_version}'s migrations"
    if foreign:
        return Check(name, False, f"{len(foreign)} logged ids {step.to_version} does not run: {foreign[:3]}")
    return Check(name, True, f"{len(target) - len(set(done))} of its {len(target)} migrations to run")


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    db = server.database(server.settings_of(service))
    return db.stat().st_size if db.is_file() else 0


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    db = server.database(server.settings_of(service))
    appschema.sqlite_copy(db, dest / DATABASE)
    expected = appschema.fingerprint(dest / DATABASE, TABLES)
    (dest / EXPECTED).write_text(json.dumps(expected))
    (service.state_dir / EXPECTED).write_text(json.dumps(expected))
    summary = ", ".join(f"{t} {v['count']}" for t, v in expected.items() if v["count"])
    size = sum(p.stat().st_size for p in dest.iterdir())
    return BackupInfo("sqlite", dest, size, file_digest(dest / DATABASE), {"content": summary})


def _log_check(service: Service, version: str) -> Check:
    db = server.database(server.settings_of(service))
    done = migrations.applied(db) or []
    wanted = migrations.registered(service, version)
    missing = [i for i in wanted if i not in set(done)]
    extra = [i for i in done if i not in set(wanted)]
    detail = f"{len(done)} ids, Grafana {version} runs {len(wanted)}"
    if missing:
        detail += f"; not run: {missing[:3]}"
    if extra:
        detail += f"; not Grafana {version}'s: {extra[:3]}"
    return Check(f"migration log is Grafana {version}'s", not missing and not extra, detail)


def _expected(service: Service) -> dict[str, Any]:
    path = service.state_dir / EXPECTED
    if not path.is_file():
        raise MigrateError(f"no fingerprint of the database before the step ({path})", hint="run the step again")
    return dict(json.loads(path.read_text()))


@hookimpl
def up(service: Service, step: Step) -> bool:
    db = server.database(server.settings_of(service))
    with (
        service.progress.task(f"Grafana {step.to_version} migrating the database"),
        server.running(service, step.to_version, db, "migrating the database"),
    ):
        pass
    checks = [
        _log_check(service, step.to_version),
        appschema.sqlite_integrity(db),
        appschema.compare(_expected(service), appschema.fingerprint(db, TABLES), TABLES),
    ]
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    if failed:
        raise MigrateError(f"Grafana {step.to_version}: {'; '.join(failed)}")
    return True


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    db = server.database(server.settings_of(service))
    appschema.sqlite_restore(Path(backup.path) / DATABASE, backup.checksum or "", db, f"backup {backup.id}")
    if (Path(backup.path) / EXPECTED).is_file():
        shutil.copyfile(Path(backup.path) / EXPECTED, service.state_dir / EXPECTED)
    return True


@hookimpl
def verify(service: Service) -> list[Check]:
    s = server.settings_of(service)
    db = server.database(s)
    placed = _placement(service)
    if placed is None:
        return [Check("database present", False, f"no database at {db}")]
    version = placed.version
    checks = [appschema.sqlite_integrity(db), _log_check(service, version)]
    if placed.ahead:
        ran = f"{len(placed.ahead)} migrations of the next release ran: {list(placed.ahead)[:3]}"
        checks.append(Check("no upgrade left part way", False, ran))
    copy = service.private_dir(service.state_dir / "verify") / DATABASE
    try:
        appschema.sqlite_copy(db, copy)
        _chown(service, copy)
        with server.running(service, version, copy, "starting on a copy of the database") as health:
            found = str(health.get("version", ""))
            checks.append(Check(f"Grafana {version} starts on the database", versions.series(found) == version,
                                f"/api/health: database ok, version {found}"))  # fmt: skip
    except MigrateError as exc:
        checks.append(Check(f"Grafana {version} starts on the database", False, exc.message))
    finally:
        shutil.rmtree(copy.parent, ignore_errors=True)
    found_rows = appschema.fingerprint(db, TABLES)
    expected = service.state_dir / EXPECTED
    if service.step is not None and expected.is_file():
        checks.append(appschema.compare(json.loads(expected.read_text()), found_rows, TABLES))
    else:
        checks.append(Check("rows", True, ", ".join(f"{t} {v['count']}" for t, v in found_rows.items())))
    return checks


def _chown(service: Service, path: Path) -> None:
    """The private server runs as the service's user and writes its database."""
    if os.geteuid() == 0:
        os.chown(path, service.run.identity.uid, service.run.identity.gid)
