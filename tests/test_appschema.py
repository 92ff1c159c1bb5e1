"""The shared base of application-schema plugins: release maps, plans, SQLite copies and
fingerprints compared by column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nixos_migrate import appschema
from nixos_migrate.errors import MigrateError, UsageError

RELEASES = appschema.Releases("App", {"1.0": "aaa", "1.1": "bbb", "2.0": "ccc"})


def test_releases_name_what_they_do_not_know() -> None:
    assert RELEASES.release_of("bbb") == "1.1"
    with pytest.raises(MigrateError, match="schema revision 'zzz', which no known release writes"):
        RELEASES.release_of("zzz")
    with pytest.raises(UsageError, match=r"unknown App version '3\.0'"):
        RELEASES.key("3.0")
    assert RELEASES.between("2.0", "1.0") == ["2.0", "1.1", "1.0"]


def test_plan_reverses_where_the_app_can_and_restores_elsewhere() -> None:
    steps = appschema.plan(RELEASES, "2.0", "1.0", describe_up=lambda a, b: "up", describe_down=lambda a, b: "down",
                           reversible=lambda newer, older: newer != "2.0",
                           down_warning=lambda a, b: "drops")  # fmt: skip
    assert [(s.from_version, s.to_version, s.via_backup, s.warning) for s in steps] == [
        ("2.0", "1.1", True, None), ("1.1", "1.0", False, "drops")]  # fmt: skip
    ups = appschema.plan(RELEASES, "1.0", "2.0", describe_up=lambda a, b: f"{a}>{b}", describe_down=lambda a, b: "",
                         reversible=lambda a, b: True)  # fmt: skip
    assert [s.description for s in ups] == ["1.0>1.1", "1.1>2.0"]
    none = appschema.plan(RELEASES, None, "2.0", describe_up=lambda a, b: "", describe_down=lambda a, b: "",
                          reversible=lambda a, b: True)  # fmt: skip
    assert none == []


def test_a_copy_and_a_fingerprint_compared_by_column(tmp_path: Path) -> None:
    db = tmp_path / "app.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
        conn.execute("INSERT INTO alembic_version VALUES ('bbb')")
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
        conn.executemany("INSERT INTO users VALUES (?, ?, ?)", [(i, f"ü{i}", bytes([i])) for i in range(100)])
    assert appschema.sqlite_revision(db, "alembic_version", "version_num") == "bbb"
    copy = tmp_path / "copy.sqlite"
    appschema.sqlite_copy(db, copy)
    assert appschema.sqlite_integrity(copy).ok
    before = appschema.fingerprint(copy, ["users", "missing"])
    assert list(before) == ["users"] and before["users"]["count"] == 100
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE users ADD COLUMN display TEXT")
    same = appschema.compare(before, appschema.fingerprint(db, ["users"]), ["users"])
    assert same.ok and "+display" in same.detail
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET name = 'x' WHERE id = 7")
    changed = appschema.compare(before, appschema.fingerprint(db, ["users"]), ["users"])
    assert not changed.ok and changed.detail == "users: name differ"
