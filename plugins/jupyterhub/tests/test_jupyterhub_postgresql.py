"""A hub whose database is on PostgreSQL (`db_url = postgresql://…`), through real JupyterHub
releases from PyPI (5.5.4, 6.1.1, with psycopg2) and a real PostgreSQL 16: upgrade-db and the
alembic downgrade on it, a pg_dump backup restored exactly after a failed upgrade-db, the role's
password from a file never in the output, compared by the test's own digest read with psycopg."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyterhub_env import PG_PASSWORD, PgInstance, Rig, make_pg_database, pg_digest


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[PgInstance]:
    instance = make_pg_database(tmp_path, "5.5", users=120)
    try:
        yield instance
    finally:
        instance.stop()


def test_up_and_down_on_postgresql(tmp_path: Path, hub: PgInstance) -> None:
    before = pg_digest(hub)
    rig = Rig(tmp_path, hub, versions=("5.5", "6.1"))
    assert rig.cli("6.1", "status", "--json").json[0]["data_version"] == "5.5"
    up = rig.cli("6.1", "up", "--json")
    assert up.code == 0, up.output
    after = pg_digest(hub)
    assert after["alembic_version"] == ("f460b0348206",)
    assert {k: v for k, v in after.items() if k != "alembic_version"} == {
        k: v for k, v in before.items() if k != "alembic_version"
    }
    verify = rig.cli("6.1", "verify", "--json")
    assert verify.code == 0, verify.output
    checks = {c["name"]: c for c in verify.json["hub"]}
    assert checks["JupyterHub 6.1 starts on the database"]["detail"] == "/hub/api says version 6.1.1"
    backups = rig.cli("6.1", "backups", "--json").json
    assert [b["kind"] for b in backups] == ["pg_dump"]

    down = rig.cli("6.1", "down", "hub", "--to", "5.5", "--accept", "5.5", "--json")
    assert down.code == 0, down.output
    assert pg_digest(hub) == before
    databases = hub.psql("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database", user="postgres")
    assert "jupyterhub_" not in databases, "a scratch copy (rehearsal, verify) was left behind"
    for result in (up, verify, down):
        assert PG_PASSWORD not in result.output


def test_a_failed_upgrade_db_on_postgresql_is_restored_from_the_dump(tmp_path: Path, hub: PgInstance) -> None:
    """A column 6.1's migration adds is already there: upgrade-db fails, the pg_dump backup is
    restored, every row and the revision as before."""
    hub.psql("ALTER TABLE spawners ADD COLUMN display_name varchar(255)", db="jupyterhub", user="postgres")
    before = pg_digest(hub)
    rig = Rig(tmp_path, hub, versions=("5.5", "6.1"))
    result = rig.cli("6.1", "up")
    assert result.code == 1, result.output
    assert "display_name" in result.stderr and "already exists" in result.stderr
    assert pg_digest(hub) == before
    assert PG_PASSWORD not in result.output


def test_a_role_without_createdb_and_a_missing_pg_dump_are_refused(tmp_path: Path, hub: PgInstance) -> None:
    hub.psql("ALTER ROLE hub NOCREATEDB", user="postgres")
    before = pg_digest(hub)
    refused = Rig(tmp_path, hub, versions=("5.5", "6.1")).cli("6.1", "up")
    assert refused.code == 3, refused.output
    assert "the role lacks CREATEDB" in refused.stderr
    hub.psql("ALTER ROLE hub CREATEDB", user="postgres")
    (tmp_path / "b").mkdir()
    no_tools = Rig(tmp_path / "b", hub, versions=("5.5", "6.1"), pg_bin="/nonexistent").cli("6.1", "up")
    assert no_tools.code != 0 and "no pg_dump for the hub's PostgreSQL database" in no_tools.stderr
    mysql = Rig(tmp_path / "b", hub, versions=("5.5", "6.1"), db_url="mysql://hub@localhost/jupyterhub")
    refused_mysql = mysql.cli("6.1", "plan")
    assert refused_mysql.code != 0 and "this plugin moves SQLite and PostgreSQL databases" in refused_mysql.stderr
    in_url = Rig(tmp_path / "b", hub, versions=("5.5", "6.1"), db_url=f"postgresql://hub:{PG_PASSWORD}@/jupyterhub")
    refused_url = in_url.cli("6.1", "plan")
    assert refused_url.code != 0 and "settings.db_url holds a password" in refused_url.stderr
    assert PG_PASSWORD not in refused_url.output
    assert pg_digest(hub) == before
