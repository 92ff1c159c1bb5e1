"""A hub's database through real JupyterHub releases from PyPI (4.1.6, 5.5.4, 6.1.1): the
upgrades by each release's own `jupyterhub upgrade-db`, the downgrade by alembic with the newer
release's scripts, each compared by the test's own digest of the columns every release has, and
verified by the real hub answering `/hub/api`."""

from __future__ import annotations

from pathlib import Path

from jupyterhub_env import Rig, digest, make_database, revision


def test_up_from_4_1_to_6_1_and_down_to_5_5(tmp_path: Path) -> None:
    instance = make_database(tmp_path, "4.1", users=150)
    before = digest(instance)
    rig = Rig(tmp_path, instance)
    planned = rig.cli("6.1", "plan", "--json")
    assert planned.code == 0, planned.output
    assert [(s["from_version"], s["to_version"]) for s in planned.json[0]["steps"]] == [("4.1", "5.5"), ("5.5", "6.1")]

    up = rig.cli("6.1", "up", "--json")
    assert up.code == 0, up.output
    assert revision(instance) == "f460b0348206"
    assert digest(instance) == before
    assert not list(instance.data_dir.glob("jupyterhub.sqlite.*")), "upgrade-db's own copies were left behind"
    verify = rig.cli("6.1", "verify", "--json")
    assert verify.code == 0, verify.output
    checks = {c["name"]: c for c in verify.json["hub"]}
    assert checks["JupyterHub 6.1 starts on the database"]["detail"] == "/hub/api says version 6.1.1"

    refused = rig.cli("6.1", "down", "hub", "--to", "5.5")
    assert refused.code != 0 and "5.5" in refused.stderr  # the down step's warning must be accepted
    down = rig.cli("6.1", "down", "hub", "--to", "5.5", "--accept", "5.5", "--json")
    assert down.code == 0, down.output
    assert revision(instance) == "4621fec11365"
    assert digest(instance) == before
    assert rig.cli("5.5", "verify").code == 0


def test_a_downgrade_alembic_cannot_run_is_refused_and_the_backup_restores(tmp_path: Path) -> None:
    """5.5's scripts cannot reverse 4.1 -> 5.5 with the libraries 5.5.4 installs today (a
    SQLAlchemy API the migration uses is gone): the rehearsal on a copy says so before anything
    changes, and the backup taken before the up step brings 4.1 back."""
    instance = make_database(tmp_path, "4.1", users=50)
    before = digest(instance)
    rig = Rig(tmp_path, instance)
    assert rig.cli("5.5", "up").code == 0
    at_5 = digest(instance)
    refused = rig.cli("5.5", "down", "hub", "--to", "4.1", "--accept", "4.1")
    assert refused.code == 3, refused.output
    assert "alembic downgrade 5.5 -> 4.1 rehearsed on a copy" in refused.stderr
    assert "restore the backup taken before 4.1 -> 5.5" in refused.stderr
    assert revision(instance) == "4621fec11365" and digest(instance) == at_5

    backup = next(b for b in rig.cli("5.5", "backups", "--json").json if b["from_version"] == "4.1")
    restored = rig.cli("5.5", "restore", "hub", str(backup["id"]), "--accept-data-loss")
    assert restored.code == 0, restored.output
    assert revision(instance) == "0eee8c825d24"
    assert digest(instance) == before
