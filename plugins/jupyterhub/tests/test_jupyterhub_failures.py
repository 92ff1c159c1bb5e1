"""What the jupyterhub plugin refuses and what it puts back, on real JupyterHub releases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from jupyterhub_env import Instance, Rig, digest, make_database, revision


def test_a_failed_upgrade_db_is_restored_exactly(tmp_path: Path) -> None:
    """A database that drifted from its schema (a column 5.5's migration adds is already there):
    upgrade-db fails in the middle, the backup comes back, rows and revision as before."""
    instance = make_database(tmp_path, "4.1", users=50)
    with sqlite3.connect(instance.database) as db:
        db.execute("ALTER TABLE services ADD COLUMN from_config BOOLEAN")
    before = digest(instance)
    rig = Rig(tmp_path, instance)
    result = rig.cli("5.5", "up")
    assert result.code == 1, result.output
    assert "duplicate column name: from_config" in result.stderr
    assert revision(instance) == "0eee8c825d24"
    assert digest(instance) == before
    assert not list(instance.data_dir.glob("jupyterhub.sqlite.*"))
    assert rig.cli("5.5", "status", "--json").json[0]["data_version"] == "4.1"


def test_an_unknown_revision_and_unknown_versions_are_named(tmp_path: Path) -> None:
    instance = make_database(tmp_path, "4.1", users=5)
    with sqlite3.connect(instance.database) as db:
        db.execute("UPDATE alembic_version SET version_num = 'deadbeef0000'")
    rig = Rig(tmp_path, instance)
    result = rig.cli("5.5", "plan")
    assert result.code != 0
    assert "schema revision 'deadbeef0000', which no known release writes" in result.stderr
    other = Rig(tmp_path / "b", Instance(tmp_path / "b" / "jupyterhub").create())
    unknown = other.cli("3.0", "plan")
    assert unknown.code != 0 and "unknown JupyterHub version '3.0'" in unknown.stderr


def test_a_database_that_is_not_sqlite_and_a_missing_package_are_refused(tmp_path: Path) -> None:
    instance = Instance(tmp_path / "jupyterhub").create()
    instance.database.write_text("PG_VERSION 16\n")
    result = Rig(tmp_path, instance).cli("5.5", "plan")
    assert result.code != 0 and "is not an SQLite database" in result.stderr
    ready = make_database(tmp_path / "c", "4.1", users=5)
    before = digest(ready)
    missing = Rig(tmp_path / "c", ready, versions=("4.1",)).cli("5.5", "up")
    assert missing.code == 3, missing.output
    assert "no package for JupyterHub 5.5 in settings.packages" in missing.stderr
    assert digest(ready) == before
