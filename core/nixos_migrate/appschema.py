"""For plugins of applications whose database schema has revisions the application migrates itself
(alembic, Django, Rails, Grafana's migrator): what they share.

- `Releases`: the ordered map release -> schema revision (the revision table's value a release
  writes), which names an unknown revision or release instead of guessing;
- `plan`: one step per release on the way up; a down step runs the application's own reversal
  where it has one (`reversible`), else restores the backup taken before the matching up step;
- SQLite: the revision in a table, a consistent copy through SQLite's backup API (never a file
  copy of a database that may be open), `PRAGMA integrity_check`;
- `fingerprint`/`compare` of tables by column, so that a step that adds or drops columns still
  compares everything the two revisions have in common.

docs/writing-a-plugin.md shows a plugin built on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.fingerprint import file_digest
from nixos_migrate.model import Check, Step


@dataclass(frozen=True)
class Releases:
    """`product`'s releases, oldest first, each with the schema revision it writes."""

    product: str
    revisions: Mapping[str, str]

    @property
    def order(self) -> list[str]:
        return list(self.revisions)

    def key(self, release: str) -> int:
        try:
            return self.order.index(release)
        except ValueError:
            raise UsageError(
                f"unknown {self.product} version {release!r}", hint=f"known: {', '.join(self.order)}"
            ) from None

    def release_of(self, revision: str) -> str:
        """The release whose schema is at `revision`."""
        for release, known in self.revisions.items():
            if known == revision:
                return release
        raise MigrateError(
            f"the {self.product} database is at schema revision {revision!r}, which no known release writes "
            f"({', '.join(f'{r} = {v}' for r, v in self.revisions.items())})",
            hint="it was written by a release this plugin does not know: upgrade the plugin, or restore a backup",
        )

    def between(self, current: str, target: str) -> list[str]:
        a, b = self.key(current), self.key(target)
        step = 1 if b >= a else -1
        return [self.order[i] for i in range(a, b + step, step)]


def plan(
    releases: Releases,
    current: str | None,
    target: str,
    *,
    describe_up: Callable[[str, str], str],
    reversible: Callable[[str, str], bool],
    describe_down: Callable[[str, str], str],
    down_warning: Callable[[str, str], str | None] = lambda a, b: None,
) -> list[Step]:
    """One step per release on the way; a down step is the application's reversal where
    `reversible(newer, older)`, else the backup taken before the matching up step."""
    releases.key(target)
    if current is None or current == target:
        return []
    steps = []
    for a, b in itertools.pairwise(releases.between(current, target)):
        if releases.key(b) > releases.key(a):
            steps.append(Step(a, b, "up", describe_up(a, b)))
        elif reversible(a, b):
            steps.append(Step(a, b, "down", describe_down(a, b), warning=down_warning(a, b)))
        else:
            what = f"restore the backup taken before {b} -> {a}: {releases.product} {a} cannot reverse its migrations"
            steps.append(Step(a, b, "down", what, via_backup=True))
    return steps


# -- SQLite ------------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    """Read-only: inspecting a database never changes it (nor creates it)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def sqlite_revision(path: Path, table: str, column: str) -> str | None:
    """The revision the table holds (one row), None when the database has no such table."""
    with contextlib.closing(_connect(path)) as db:
        found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if found is None:
            return None
        rows = db.execute(f'SELECT "{column}" FROM "{table}"').fetchall()  # noqa: S608 - the plugin's names
    if len(rows) != 1:
        raise MigrateError(f"{path}: {table} holds {len(rows)} revisions, not one")
    return str(rows[0][0])


def sqlite_copy(source: Path, dest: Path) -> None:
    """A consistent copy of the database `source` into the new file `dest` (SQLite's online
    backup: pages copied under a read transaction, whatever else has the file open)."""
    dest.unlink(missing_ok=True)
    with contextlib.closing(_connect(source)) as src, contextlib.closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)


def sqlite_restore(saved: Path, checksum: str, db: Path, what: str) -> None:
    """Put the database file `saved` (a backup whose file digest is `checksum`) in place of `db`,
    atomically, with `db`'s owner and mode; the journal and WAL files of the replaced database go
    (they belong to it, not to the backup). `what` names the backup in errors."""
    if not saved.is_file() or file_digest(saved) != checksum:
        raise MigrateError(f"{what}: {saved} is missing or does not match its checksum; it was not used")
    for suffix in ("-wal", "-shm", "-journal"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    tmp = db.with_name(f".{db.name}.nixos-migrate-restore")
    shutil.copyfile(saved, tmp)
    if db.exists():
        shutil.copystat(db, tmp)
        stat = db.stat()
        os.chown(tmp, stat.st_uid, stat.st_gid)
    tmp.replace(db)


def sqlite_integrity(path: Path) -> Check:
    with contextlib.closing(_connect(path)) as db:
        rows = [str(r[0]) for r in db.execute("PRAGMA integrity_check").fetchall()]
    return Check("PRAGMA integrity_check", rows == ["ok"], "; ".join(rows[:5]))


def table_digest(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """A table's entry of a fingerprint: its row count and, per column, a digest of its values in
    the order `rows` come (the caller orders them by primary key). Whatever the database, so
    that a plugin on PostgreSQL or MySQL compares with `compare` as one on SQLite does."""
    digests = {c: hashlib.sha256() for c in columns}
    count = 0
    for row in rows:
        count += 1
        for column, value in zip(columns, row, strict=True):
            digests[column].update(repr(value).encode() + b"\0")
    return {"count": count, "columns": {c: d.hexdigest() for c, d in digests.items()}}


def fingerprint(path: Path, tables: Iterable[str]) -> dict[str, Any]:
    """Per table: the row count and, per column, a digest of its values in primary-key order
    (rowid order for tables without one); tables the database lacks are left out."""
    found: dict[str, Any] = {}
    with contextlib.closing(_connect(path)) as db:
        present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table in tables:
            if table not in present:
                continue
            info = db.execute(f'PRAGMA table_info("{table}")').fetchall()
            columns = [row[1] for row in info]
            keys = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]] or ["rowid"]
            order = ", ".join(f'"{k}"' if k != "rowid" else k for k in keys)
            query = f'SELECT {", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)} FROM "{table}" ORDER BY {order}'  # noqa: S608
            found[table] = table_digest(columns, db.execute(query))
    return found


def compare(expected: Mapping[str, Any], found: Mapping[str, Any], tables: Sequence[str]) -> Check:
    """Equal counts, and equal columns where both have them (a step adds or drops columns; those
    are named, not failures)."""
    problems, changed = [], []
    for table in tables:
        a, b = expected.get(table), found.get(table)
        if a is None and b is None:
            continue
        if b is None:
            problems.append(f"{table} is missing")
            continue
        if a is None:  # a table the step created (filled from others, or empty): nothing was lost
            changed.append(f"+{table} ({b['count']} rows)")
            continue
        if a["count"] != b["count"]:
            problems.append(f"{table}: {a['count']} -> {b['count']} rows")
            continue
        common = a["columns"].keys() & b["columns"].keys()
        differ = sorted(c for c in common if a["columns"][c] != b["columns"][c])
        if differ:
            problems.append(f"{table}: {', '.join(differ)} differ")
        added, dropped = b["columns"].keys() - common, a["columns"].keys() - common
        if added or dropped:
            changed.append(
                f"{table}: " + ", ".join([*(f"+{c}" for c in sorted(added)), *(f"-{c}" for c in sorted(dropped))])
            )
    summary = ", ".join(f"{t} {found[t]['count']}" for t in tables if t in found)
    detail = "; ".join(problems) if problems else summary + (f" (columns {'; '.join(changed)})" if changed else "")
    return Check("rows equal the fingerprint", not problems, detail)
