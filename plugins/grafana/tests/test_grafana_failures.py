"""What the grafana plugin refuses and what it puts back, on the stand-in Grafana (no real Grafana
server exists on these machines; see grafana_standin.py). Every failure leaves the database as
it was, compared by a digest of its whole SQL dump."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from grafana_env import Instance, Rig, dump_digest, logged, make_database, package

from nixos_migrate.testing import provision


def test_a_migration_failing_in_the_middle_is_restored_exactly(tmp_path: Path) -> None:
    """A database that drifted from its schema (a column 10.4's migration adds is already there):
    Grafana 10.4 runs its first migrations, fails on that one and exits; the backup comes back."""
    instance = make_database(tmp_path, "9.5", dashboards=30, annotations=500)
    with sqlite3.connect(instance.database) as db:
        db.execute("ALTER TABLE team ADD COLUMN uid TEXT NULL")
    before = dump_digest(instance)
    rig = Rig(tmp_path, instance)
    result = rig.cli("10.4", "up")
    assert result.code == 1, result.output
    assert "migration failed (id = Add column uid in team): duplicate column name: uid" in result.stderr
    assert dump_digest(instance) == before
    assert rig.cli("10.4", "status", "--json").json[0]["data_version"] == "9.5"


def test_an_upgrade_left_part_way_is_finished_by_the_next_up(tmp_path: Path) -> None:
    """Grafana 10.4 started by hand stopped after some of its migrations (here: on a drifted
    column, then mended): the data is 9.5 plus part of 10.4, verify says so, and the up step to
    10.4 runs the rest, as Grafana goes on where it stopped."""
    instance = make_database(tmp_path, "9.5", dashboards=20, annotations=100)
    with sqlite3.connect(instance.database) as db:
        db.execute("ALTER TABLE team ADD COLUMN uid TEXT NULL")
    with pytest.raises(provision.ProvisionError, match="Add column uid in team"):
        instance.grafana("10.4")
    with sqlite3.connect(instance.database) as db:
        db.execute("ALTER TABLE team DROP COLUMN uid")
    assert "Add uid column to user" in logged(instance)
    rig = Rig(tmp_path, instance)
    assert rig.cli("10.4", "status", "--json").json[0]["data_version"] == "9.5"
    verify = rig.cli("10.4", "verify", "--json")
    assert verify.code != 0
    assert any(c["name"] == "no upgrade left part way" and not c["ok"] for c in verify.json["grafana"])
    up = rig.cli("10.4", "up")
    assert up.code == 0, up.output
    assert rig.cli("10.4", "verify").code == 0


def test_a_database_a_newer_grafana_wrote_is_refused_by_name(tmp_path: Path) -> None:
    instance = make_database(tmp_path, "11.6", dashboards=5, annotations=10)
    with sqlite3.connect(instance.database) as db:
        db.execute("INSERT INTO migration_log (migration_id, sql, success, error, timestamp) "
                   "VALUES ('add column api_version to folder', '', 1, '', datetime('now'))")  # fmt: skip
    before = dump_digest(instance)
    result = Rig(tmp_path, instance).cli("11.6", "plan")
    assert result.code != 0
    assert "logs 1 migration(s) no package's release runs ('add column api_version to folder')" in result.stderr
    assert "a Grafana newer than 11.6 wrote it" in result.stderr
    older = Rig(tmp_path / "b", make_database(tmp_path / "b", "11.6", dashboards=5, annotations=10), versions=("10.4",))
    refused = older.cli("10.4", "plan")
    assert refused.code != 0 and "a Grafana newer than 10.4 wrote it" in refused.stderr
    assert dump_digest(instance) == before


def test_bad_settings_and_foreign_data_are_refused_and_change_nothing(tmp_path: Path) -> None:
    instance = make_database(tmp_path, "9.5", dashboards=5, annotations=10)
    before = dump_digest(instance)
    missing = Rig(tmp_path, instance, versions=("9.5",)).cli("10.4", "up")
    assert missing.code == 2, missing.output  # refused by the plan, before any check
    assert "no package for Grafana 10.4 in settings.packages" in missing.stderr
    external = Rig(tmp_path, instance, database_type="postgres").cli("10.4", "up")
    assert external.code != 0
    assert "settings.database_type is postgres: this plugin moves Grafana's SQLite database" in external.stderr
    unknown = Rig(tmp_path, instance).cli("10", "plan")
    assert unknown.code != 0 and "'10' is not a release series" in unknown.output
    assert dump_digest(instance) == before

    other = Instance(tmp_path / "other").create()
    other.database.write_bytes(b"PG_VERSION 16\n")
    assert "is not an SQLite database" in Rig(tmp_path / "other", other).cli("10.4", "plan").stderr
    with sqlite3.connect(other.database.with_name("x.db")) as db:
        db.execute("CREATE TABLE alembic_version (version_num TEXT)")
    other.database.unlink()
    other.database.with_name("x.db").rename(other.database)
    assert (
        "no migration_log table: it is not a Grafana database"
        in Rig(tmp_path / "other", other).cli("10.4", "plan").stderr
    )


def test_a_grafana_running_on_the_data_is_refused(tmp_path: Path) -> None:
    instance = make_database(tmp_path, "9.5", dashboards=5, annotations=10)
    before = dump_digest(instance)
    port = provision.free_port()
    home = package("9.5") / "share" / "grafana"
    server = subprocess.Popen(  # as NixOS runs it: in the data directory
        [str(package("9.5") / "bin" / "grafana"), "server", "--homepath", str(home),
         f"cfg:paths.data={instance.data_dir}", f"cfg:database.path={instance.database}",
         "cfg:server.http_addr=127.0.0.1", f"cfg:server.http_port={port}"],
        cwd=instance.data_dir, user=instance.user.pw_uid, group=instance.user.pw_gid, env={"PATH": os.defpath},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        result = Rig(tmp_path, instance).cli("10.4", "up")
    finally:
        server.terminate()
        server.wait(30)
    assert result.code == 3, result.output
    assert f"pid {server.pid} works in {instance.data_dir}" in result.stderr
    assert dump_digest(instance) == before
