"""The `jupyterhub` plugin: JupyterHub's database, whose schema the hub's alembic migrations move.

The version of the data is the alembic revision in `alembic_version`, mapped to the release that
writes it (versions.py); a revision no known release writes is refused by name. An up step runs
`jupyterhub upgrade-db` of the next release (its venv's bin first on PATH: it calls alembic); a
down step runs alembic's downgrade with the newer release's scripts (which drop what that release
added, so it carries a warning). Before either, `backup` copies the SQLite database through
SQLite's backup API (consistent even if something has it open) and the cookie secret, and takes a
fingerprint of the hub's tables by column; after it, the rows are compared on the columns both
revisions have. `verify` starts the hub of the data's release on a copy of the database on a
loopback port and asks `/hub/api` for its version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from nixos_migrate import appschema, processes
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.fingerprint import file_digest
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step
from nixos_migrate_jupyterhub import hub, store, versions
from nixos_migrate_jupyterhub.settings import JupyterhubSettings

EXPECTED = "expected.json"
COOKIE_SECRET_FILE = "cookie_secret"  # noqa: S105 - a file name, not a secret


@hookimpl
def settings_model() -> type[JupyterhubSettings]:
    return JupyterhubSettings


def _store(service: Service) -> store.Store:
    return store.of(hub.settings_of(service))


@hookimpl
def detect_version(service: Service) -> str | None:
    db = _store(service)
    if not db.exists():
        return None
    revision = db.revision()
    if revision is None:
        raise MigrateError(f"{db.describe()} has no alembic_version table: it is not a JupyterHub database")
    return versions.RELEASES.release_of(revision)


@hookimpl
def plan(service: Service, current: str | None, target: str) -> list[Step]:
    return appschema.plan(
        versions.RELEASES,
        current,
        target,
        describe_up=lambda a, b: f"jupyterhub upgrade-db of {b} (alembic {versions.RELEASES.revisions[b]})",
        reversible=lambda newer, older: True,
        describe_down=lambda newer, older: (
            f"alembic downgrade to {versions.RELEASES.revisions[older]} with {newer}'s migration scripts"
        ),
        down_warning=lambda newer, older: (
            f"the downgrade drops what JupyterHub {newer} added to the schema (its new columns and tables, "
            "with their data)"
        ),
    )


@hookimpl
def check(service: Service, step: Step) -> list[Check]:
    s = hub.settings_of(service)
    needed = [step.to_version] if step.direction == "up" else [step.from_version or "", step.to_version]
    problems = []
    for version in dict.fromkeys(needed):
        try:
            hub.release(s, version)
        except MigrateError as exc:
            problems.append(exc.message)
    checks = [Check(f"jupyterhub of {' and '.join(dict.fromkeys(needed))}", not problems, "; ".join(problems))]
    db = _store(service)
    if db.exists():
        checks.append(db.integrity())
        if isinstance(db, store.SqliteStore):
            need = db.size() * 2 + (16 << 20)
            free = shutil.disk_usage(db.path.parent).free
            checks.append(Check(f"room in {db.path.parent}", free >= need,
                                f"{free >> 20} MiB free, {need >> 20} MiB needed"))  # fmt: skip
        elif isinstance(db, store.PostgresStore):
            checks.append(db.may_copy())
    if step.direction == "down" and not problems:
        checks.append(_rehearse(service, step))
    checks.append(processes.stopped(service, s.data_dir, (b"jupyterhub",), "hub"))
    return checks


def _rehearse(service: Service, step: Step) -> Check:
    """The downgrade run on a copy first: alembic's reversal scripts are the least exercised code
    of a release (and may not run with the libraries it is packaged with). The copy the
    rehearsal of one step leaves is where the rehearsal of the next one starts."""
    newer, older = step.from_version or "", step.to_version
    name = f"alembic downgrade {newer} -> {older} rehearsed on a copy"
    db = _store(service)
    source = db if detect_version(service) == newer else db.scratch(service, f"rehearsal-at-{newer}")
    if not source.exists():
        return Check(name, True, "not rehearsed: an earlier step's rehearsal did not leave a copy")
    copy = source.copy(service, f"rehearsal-at-{older}")
    try:
        hub.downgrade(service, newer, versions.RELEASES.revisions[older], copy)
    except MigrateError as exc:
        copy.drop()
        last = exc.message.strip().splitlines()[-1] if exc.message.strip() else exc.message
        restore = f"restore the backup taken before {older} -> {newer} (`nixos-migrate backups`, `restore`)"
        return Check(name, False, f"JupyterHub {newer}'s downgrade fails on this database ({last}): {restore}")
    found = copy.revision()
    return Check(name, found == versions.RELEASES.revisions[older], f"the copy is at {found}")


@hookimpl
def backup_size(service: Service, step: Step) -> int | None:
    db = _store(service)
    return db.size() if db.exists() else 0


@hookimpl
def backup(service: Service, step: Step, dest: Path) -> BackupInfo:
    s = hub.settings_of(service)
    db = _store(service)
    saved = db.backup(service, dest)
    if s.secret.is_file():
        shutil.copy2(s.secret, dest / COOKIE_SECRET_FILE)
    expected = db.fingerprint(versions.TABLES)
    (dest / EXPECTED).write_text(json.dumps(expected))
    (service.state_dir / EXPECTED).write_text(json.dumps(expected))
    summary = ", ".join(f"{t} {v['count']}" for t, v in expected.items() if v["count"])
    size = sum(p.stat().st_size for p in dest.iterdir())
    kind = "sqlite" if isinstance(db, store.SqliteStore) else "pg_dump"
    return BackupInfo(kind, dest, size, file_digest(saved), {"content": summary})


def _expected(service: Service) -> dict[str, Any]:
    path = service.state_dir / EXPECTED
    if not path.is_file():
        raise MigrateError(f"no fingerprint of the database before the step ({path})", hint="run the step again")
    return dict(json.loads(path.read_text()))


def _after(service: Service, version: str) -> None:
    """The database at `version`'s revision, intact, its rows as before."""
    db = _store(service)
    revision = db.revision()
    wanted = versions.RELEASES.revisions[version]
    checks = [
        Check("schema revision", revision == wanted, f"{revision} (JupyterHub {version}: {wanted})"),
        db.integrity(),
        appschema.compare(_expected(service), db.fingerprint(versions.TABLES), versions.TABLES),
    ]
    failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    if failed:
        raise MigrateError(f"JupyterHub {version}: {'; '.join(failed)}")


@hookimpl
def up(service: Service, step: Step) -> bool:
    db = _store(service)
    # upgrade-db leaves its own copy of an SQLite database beside it: the step's backup is that
    folder, name = (db.path.parent, db.path.name) if isinstance(db, store.SqliteStore) else (None, "")
    beside = set(folder.glob(f"{name}.*")) if folder else set()
    try:
        with service.progress.task(f"jupyterhub upgrade-db of {step.to_version}"):
            hub.upgrade_db(service, step.to_version, db)
    finally:
        for path in (set(folder.glob(f"{name}.*")) - beside) if folder else set():
            path.unlink()
    _after(service, step.to_version)
    return True


@hookimpl
def down(service: Service, step: Step) -> bool:
    newer, older = step.from_version or "", step.to_version
    db = _store(service)
    for version in versions.RELEASES.order:  # the rehearsals' copies are done with
        copy = db.scratch(service, f"rehearsal-at-{version}")
        if copy.exists():
            copy.drop()
    with service.progress.task(f"alembic downgrade with JupyterHub {newer}'s scripts"):
        hub.downgrade(service, newer, versions.RELEASES.revisions[older], db)
    _after(service, older)
    return True


@hookimpl
def restore(service: Service, backup: BackupRecord) -> bool:
    s = hub.settings_of(service)
    db = _store(service)
    db.restore(service, Path(backup.path) / db.file, backup.checksum or "", f"backup {backup.id}")
    if (Path(backup.path) / COOKIE_SECRET_FILE).is_file():
        shutil.copy2(Path(backup.path) / COOKIE_SECRET_FILE, s.secret)
    if (Path(backup.path) / EXPECTED).is_file():
        shutil.copyfile(Path(backup.path) / EXPECTED, service.state_dir / EXPECTED)
    return True


@hookimpl
def verify(service: Service) -> list[Check]:
    version = detect_version(service)
    db = _store(service)
    if version is None:
        return [Check("database present", False, f"no database at {db.describe()}")]
    checks = [db.integrity()]
    try:
        with hub.private_hub(service, version, db) as answer:
            found = str(answer.get("version", ""))
            checks.append(Check(f"JupyterHub {version} starts on the database", versions.series(found) == version,
                                f"/hub/api says version {found}"))  # fmt: skip
    except MigrateError as exc:
        checks.append(Check(f"JupyterHub {version} starts on the database", False, exc.message))
    found_rows = db.fingerprint(versions.TABLES)
    expected = service.state_dir / EXPECTED
    if service.step is not None and expected.is_file():
        checks.append(appschema.compare(json.loads(expected.read_text()), found_rows, versions.TABLES))
    else:
        checks.append(Check("rows", True, ", ".join(f"{t} {v['count']}" for t, v in found_rows.items())))
    return checks
