"""The journal: durable state per service in SQLite (WAL, synchronous=FULL).

It holds the version the data is at, every run and step with timestamps and the NixOS
generation, the phase of a step in flight, and every backup. A step whose `outcome` is NULL is in
flight: either running now (then its service's lock is held) or interrupted by a crash, which
makes the service dirty until `--resume` or `--rollback`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nixos_migrate.errors import PrecheckFailed
from nixos_migrate.model import BackupInfo, BackupRecord, Step

Phase = Literal["backup", "apply", "verify", "restore"]
StepOutcome = Literal["done", "restored", "restore-failed", "rolled-back"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS services (
  name TEXT PRIMARY KEY, version TEXT, generation INTEGER, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY, service TEXT NOT NULL, command TEXT NOT NULL, pid INTEGER NOT NULL,
  generation INTEGER, started TEXT NOT NULL, finished TEXT, outcome TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS steps (
  id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), service TEXT NOT NULL,
  from_version TEXT, to_version TEXT NOT NULL, direction TEXT NOT NULL, step TEXT NOT NULL,
  phase TEXT, backup_id INTEGER, started TEXT NOT NULL, finished TEXT, outcome TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS backups (
  id INTEGER PRIMARY KEY, service TEXT NOT NULL, step_id INTEGER REFERENCES steps(id),
  step TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
  checksum TEXT, created TEXT NOT NULL, detail TEXT NOT NULL, pruned TEXT);
CREATE INDEX IF NOT EXISTS steps_service ON steps(service, outcome);
CREATE INDEX IF NOT EXISTS backups_service ON backups(service);
"""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class InFlight:
    """A step whose outcome was never written: running now, or interrupted."""

    step_id: int
    run_id: int
    step: Step
    phase: Phase
    backup: BackupRecord | None
    started: str


class Journal:
    FILE = "journal.sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Open (creating when needed) the journal in `state_dir`; refuses unwritable dirs."""
        try:
            # 0711: services' users reach their own private directory below, nobody lists it
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
            if not os.access(state_dir, os.W_OK | os.X_OK):
                raise PermissionError(f"{state_dir} is not writable")
            path = state_dir / cls.FILE
            path.touch(mode=0o600, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise PrecheckFailed(
                f"state directory {state_dir} cannot hold the journal: {exc}",
                hint="fix `state_dir` in the manifest or its permissions",
            ) from None
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- versions ----------------------------------------------------------------------------

    def version(self, service: str) -> str | None:
        row = self._conn.execute("SELECT version FROM services WHERE name=?", (service,)).fetchone()
        return None if row is None else row["version"]

    def knows(self, service: str) -> bool:
        return self._conn.execute("SELECT 1 FROM services WHERE name=?", (service,)).fetchone() is not None

    def set_version(self, service: str, version: str | None, generation: int | None) -> None:
        with self._tx() as c:
            self._upsert_version(c, service, version, generation)

    @staticmethod
    def _upsert_version(c: sqlite3.Connection, service: str, version: str | None, generation: int | None) -> None:
        c.execute(
            "INSERT INTO services(name, version, generation, updated) VALUES (?,?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET version=excluded.version, "
            "generation=excluded.generation, updated=excluded.updated",
            (service, version, generation, now()),
        )

    def versions_seen(self, service: str) -> set[str]:
        """Every version the data of `service` has been at, as far as the journal knows."""
        seen = {
            v
            for row in self._conn.execute(
                "SELECT from_version, to_version FROM steps WHERE service=? AND outcome='done'", (service,)
            )
            for v in (row["from_version"], row["to_version"])
            if v is not None
        }
        current = self.version(service)
        return seen | ({current} if current else set())

    # -- runs and steps ----------------------------------------------------------------------

    def start_run(self, service: str, command: str, generation: int | None) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO runs(service, command, pid, generation, started) VALUES (?,?,?,?,?)",
                (service, command, os.getpid(), generation, now()),
            )
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, outcome: str, error: str | None = None) -> None:
        with self._tx() as c:
            c.execute("UPDATE runs SET finished=?, outcome=?, error=? WHERE id=?", (now(), outcome, error, run_id))

    def begin_step(self, run_id: int, service: str, step: Step) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO steps(run_id, service, from_version, to_version, direction, step, phase, started)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    service,
                    step.from_version,
                    step.to_version,
                    step.direction,
                    json.dumps(step.to_json()),
                    "backup",
                    now(),
                ),
            )
            return int(cur.lastrowid or 0)

    def set_phase(self, step_id: int, phase: Phase) -> None:
        with self._tx() as c:
            c.execute("UPDATE steps SET phase=? WHERE id=?", (phase, step_id))

    def commit_step(self, step_id: int, service: str, version: str, generation: int | None) -> None:
        """The step is done and verified: one transaction moves the service to `version`."""
        with self._tx() as c:
            c.execute("UPDATE steps SET phase=NULL, outcome='done', finished=? WHERE id=?", (now(), step_id))
            self._upsert_version(c, service, version, generation)

    def end_step(self, step_id: int, outcome: StepOutcome, error: str | None) -> None:
        """The step did not complete; the data stays at the step's `from_version`."""
        with self._tx() as c:
            c.execute(
                "UPDATE steps SET phase=NULL, outcome=?, error=?, finished=? WHERE id=?",
                (outcome, error, now(), step_id),
            )

    def in_flight(self, service: str) -> InFlight | None:
        row = self._conn.execute(
            "SELECT * FROM steps WHERE service=? AND outcome IS NULL ORDER BY id DESC LIMIT 1", (service,)
        ).fetchone()
        if row is None:
            return None
        backup = self.backup(row["backup_id"]) if row["backup_id"] is not None else None
        return InFlight(
            row["id"], row["run_id"], Step.from_json(json.loads(row["step"])), row["phase"], backup, row["started"]
        )

    def history(self, service: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT s.id, s.run_id, r.command, r.generation, s.from_version, s.to_version, s.direction,"
            " s.phase, s.started, s.finished, s.outcome, s.error, s.backup_id"
            " FROM steps s JOIN runs r ON r.id = s.run_id WHERE s.service=? ORDER BY s.id",
            (service,),
        )
        return [dict(r) for r in rows]

    # -- backups -----------------------------------------------------------------------------

    def record_backup(self, service: str, step_id: int | None, step: Step, info: BackupInfo) -> BackupRecord:
        created = now()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO backups(service, step_id, step, kind, path, size, checksum, created, detail)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    service,
                    step_id,
                    json.dumps(step.to_json()),
                    info.kind,
                    str(info.path),
                    info.size,
                    info.checksum,
                    created,
                    json.dumps(dict(info.detail)),
                ),
            )
            backup_id = int(cur.lastrowid or 0)
            if step_id is not None:
                c.execute("UPDATE steps SET backup_id=? WHERE id=?", (backup_id, step_id))
        return BackupRecord(
            backup_id, service, step, info.kind, info.path, info.size, info.checksum, created, dict(info.detail)
        )

    @staticmethod
    def _record(row: sqlite3.Row) -> BackupRecord:
        return BackupRecord(
            row["id"],
            row["service"],
            Step.from_json(json.loads(row["step"])),
            row["kind"],
            Path(row["path"]),
            row["size"],
            row["checksum"],
            row["created"],
            json.loads(row["detail"]),
        )

    def backup(self, backup_id: int) -> BackupRecord | None:
        row = self._conn.execute("SELECT * FROM backups WHERE id=? AND pruned IS NULL", (backup_id,)).fetchone()
        return None if row is None else self._record(row)

    def backups(self, service: str | None = None) -> list[BackupRecord]:
        rows = self._conn.execute(
            "SELECT * FROM backups WHERE pruned IS NULL AND (?1 IS NULL OR service=?1) ORDER BY id", (service,)
        )
        return [self._record(r) for r in rows]

    def backup_before(self, service: str, from_version: str | None, to_version: str) -> BackupRecord | None:
        """The newest backup taken before a completed up step `from_version -> to_version`."""
        row = self._conn.execute(
            "SELECT b.* FROM backups b JOIN steps s ON s.id = b.step_id WHERE b.service=? AND b.pruned IS NULL"
            " AND s.outcome='done' AND s.direction='up' AND s.from_version IS ? AND s.to_version=?"
            " ORDER BY b.id DESC LIMIT 1",
            (service, from_version, to_version),
        ).fetchone()
        return None if row is None else self._record(row)

    def mark_pruned(self, backup_id: int) -> None:
        with self._tx() as c:
            c.execute("UPDATE backups SET pruned=? WHERE id=?", (now(), backup_id))
