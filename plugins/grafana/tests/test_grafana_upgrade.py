"""Grafana's database through three releases of the stand-in Grafana (no real Grafana server
exists on these machines; grafana_standin.py runs Grafana's published migrations as Grafana's
migrator does): each up step is the release's own start on the database, each down step a
restore, every state compared by the test's own digest of the columns every release has."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from grafana_env import Instance, Rig, digest, dump_digest, logged, make_database


def fresh_log(tmp_path: Path, series: str) -> list[str]:
    """The ids the release logs on an empty database, read without the plugin."""
    instance = Instance(tmp_path / f"fresh-{series}").create()
    instance.grafana(series)
    return logged(instance)


def test_up_from_9_5_to_11_6_then_down_to_10_4_by_restore(tmp_path: Path) -> None:
    instance = make_database(tmp_path, "9.5")
    before = digest(instance)
    rig = Rig(tmp_path, instance)
    status = rig.cli("11.6", "status", "--json")
    assert status.code == 0, status.output
    assert status.json[0]["data_version"] == "9.5"
    planned = rig.cli("11.6", "plan", "--json")
    assert [(s["from_version"], s["to_version"]) for s in planned.json[0]["steps"]] == [
        ("9.5", "10.4"),
        ("10.4", "11.6"),
    ]

    to_10_4 = rig.cli("10.4", "up", "--json")
    assert to_10_4.code == 0, to_10_4.output
    at_10_4_dump = dump_digest(instance)
    up = rig.cli("11.6", "up", "--json")
    assert up.code == 0, up.output
    assert digest(instance) == before
    ids = logged(instance)
    assert sorted(ids) == sorted(fresh_log(tmp_path, "11.6"))
    assert ids != fresh_log(tmp_path, "11.6"), "an upgraded log runs the new ids last, a fresh one among the old"
    with sqlite3.connect(instance.database) as db:  # what 10.4's migrations did to the data
        assert db.execute("SELECT count(*) FROM folder").fetchone()[0] == 6
        assert db.execute("SELECT count(*) FROM dashboard WHERE folder_uid IS NOT NULL").fetchone()[0] == 90
    verify = rig.cli("11.6", "verify", "--json")
    assert verify.code == 0, verify.output
    checks = {c["name"]: c for c in verify.json["grafana"]}
    assert checks["Grafana 11.6 starts on the database"]["detail"] == "/api/health: database ok, version 11.6.6"
    assert checks["migration log is Grafana 11.6's"]["ok"]

    with sqlite3.connect(instance.database) as db:  # written by 11.6: lost by the downgrade, as said
        db.execute("UPDATE dashboard SET title = 'renamed on 11.6' WHERE id = 10")
    refused = rig.cli("11.6", "down", "grafana", "--to", "10.4")
    assert refused.code != 0 and "--accept-data-loss" in refused.stderr
    down = rig.cli("11.6", "down", "grafana", "--to", "10.4", "--accept-data-loss", "--json")
    assert down.code == 0, down.output
    assert sorted(logged(instance)) == sorted(fresh_log(tmp_path, "10.4"))
    assert rig.cli("10.4", "status", "--json").json[0]["data_version"] == "10.4"
    assert dump_digest(instance) == at_10_4_dump
    with sqlite3.connect(instance.database) as db:
        assert db.execute("SELECT title FROM dashboard WHERE id = 10").fetchone()[0] != "renamed on 11.6"
    assert digest(instance) == before
    assert rig.cli("10.4", "verify").code == 0


def test_a_fresh_database_of_each_release_is_that_release(tmp_path: Path) -> None:
    """Detected by the set of ids, whatever order they ran in; no database is nothing to do."""
    for series in ("10.4", "11.6"):
        instance = make_database(tmp_path / series, series, dashboards=10, annotations=50)
        status = Rig(tmp_path / series, instance).cli(series, "status", "--json")
        assert status.code == 0, status.output
        assert status.json[0]["data_version"] == series
    empty = Instance(tmp_path / "empty").create()
    status = Rig(tmp_path / "empty", empty).cli("11.6", "status", "--json")
    assert status.code == 0 and status.json[0]["data_version"] is None, status.output
