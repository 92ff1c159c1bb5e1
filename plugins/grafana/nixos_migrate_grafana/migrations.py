"""Which migrations a database has run and which a release runs: the version of Grafana's data.

Grafana logs each migration it runs, by id, in `migration_log` (with `success`); it never runs
one twice and has none that reverse. The ids logged with success say the schema: a database
"is at" release R when they are exactly the ids R registers. R's list is read from R's package
(its server started once on an empty database in a scratch directory), cached per package.

Only the set counts, not the order: a release registers its new migrations among the old ones
(a new `user` column with the user migrations), so a database upgraded from an older release logs
them after everything else, a fresh one in the middle.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate_grafana import server, versions
from nixos_migrate_grafana.settings import GrafanaSettings

LOG_TABLE = "migration_log"


def applied(db: Path) -> list[str] | None:
    """The ids the database logs with success, in the order it ran them; None without a log."""
    with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)).fetchone()
        if found is None:
            return None
        rows = conn.execute(f"SELECT migration_id FROM {LOG_TABLE} WHERE success = 1 ORDER BY id").fetchall()  # noqa: S608
    return [str(r[0]) for r in rows]


def _cache(service: Service, version: str) -> Path:
    return service.state_dir / "migrations" / f"{version}.json"


def _stamp(s: GrafanaSettings, version: str) -> list[object]:
    """What identifies a package's build: the resolved program (a store path) and its size/mtime."""
    program = Path(server.program(s, version)[0]).resolve()
    info = program.stat()
    return [str(program), info.st_size, info.st_mtime_ns]


def registered(service: Service, version: str) -> list[str]:
    """The ids Grafana `version` runs on an empty database, in its order (read once per package)."""
    s = server.settings_of(service)
    stamp = _stamp(s, version)
    cache = _cache(service, version)
    if cache.is_file():
        with contextlib.suppress(ValueError, KeyError):
            saved = json.loads(cache.read_text())
            if saved["stamp"] == stamp:
                return list(saved["ids"])
    found_release = server.release(s, version)
    scratch = service.private_dir(service.state_dir / f"empty-{version}")
    try:
        empty = scratch / "grafana.db"
        with (
            service.progress.task(f"reading the migrations of Grafana {found_release}"),
            server.running(service, version, empty, "on an empty database"),
        ):
            pass
        ids = applied(empty)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not ids:
        raise MigrateError(f"Grafana {found_release} logged no migrations on an empty database")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"stamp": stamp, "release": found_release, "ids": ids}))
    return ids


@dataclass(frozen=True)
class Placement:
    """Where a database's log puts it among the packages' releases."""

    version: str
    #: ids of the next release already run by an upgrade that stopped part way (Grafana goes on
    #: where it stopped: the next up step finishes it)
    ahead: tuple[str, ...] = ()


def place(done: list[str], lists: dict[str, list[str]]) -> Placement:
    """The release whose migrations are exactly `done`, or the one an interrupted upgrade left
    it past; an error naming the ids when no package's release explains the log."""
    have = set(done)
    order = sorted(lists, key=versions.key)
    for version in order:
        if set(lists[version]) == have:
            return Placement(version)
    everything = set().union(*map(set, lists.values()))
    unknown = [i for i in done if i not in everything]
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise MigrateError(
            f"Grafana's database logs {len(unknown)} migration(s) no package's release runs ({shown}): "
            f"a Grafana newer than {order[-1]} wrote it",
            hint="add that release's package to settings.packages, or restore a backup",
        )
    for older, newer in itertools.pairwise(order):
        if set(lists[older]) <= have <= set(lists[newer]):
            return Placement(older, tuple(i for i in lists[newer] if i in have and i not in set(lists[older])))
    lowest = set(lists[order[0]])
    if have < lowest:
        raise MigrateError(
            f"Grafana's database has run {len(have)} of Grafana {order[0]}'s {len(lowest)} migrations: "
            f"it was written by an older release than every package ({', '.join(order)})",
            hint="add the package of the release that wrote it to settings.packages",
        )
    best = min(order, key=lambda v: len(set(lists[v]) ^ have))
    missing = [i for i in lists[best] if i not in have]
    raise MigrateError(
        f"Grafana's database matches no package's release: closest is {best}, which also runs "
        f"{', '.join(repr(i) for i in missing[:3])}{' …' if len(missing) > 3 else ''}",
        hint="its log was edited or written by a build with other migrations; restore a backup",
    )
