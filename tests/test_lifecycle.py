"""Up through dated migrations, down again, history and backups — through the real CLI."""

from __future__ import annotations

from tests.conftest import V1, V2, V3


def test_up_through_three_migrations_then_down_again(make_app):
    app = make_app(accept=[V3])
    before = app.digest()

    result = app.cli("up", "--json")
    assert result.code == 0, result.output
    [report] = result.json
    assert [s["step"]["to_version"] for s in report["steps"]] == [V1, V2, V3]
    assert (app.data / "version").read_text() == "v3\n"
    assert "Ñandú" in (app.data / "db/tables/users.csv").read_text()
    after_up = app.digest()

    history = app.cli("history", "app", "--json").json
    assert [(h["from_version"], h["to_version"], h["outcome"]) for h in history] == [
        (None, V1, "done"),
        (V1, V2, "done"),
        (V2, V3, "done"),
    ]
    backups = app.cli("backups", "app", "--json").json
    assert [(b["from_version"], b["to_version"], b["kind"]) for b in backups] == [
        (None, V1, "copy"),
        (V1, V2, "script"),
        (V2, V3, "copy"),
    ]
    assert all(b["checksum"] for b in backups)

    # V3 has no down script: it goes back through the backup taken before V2 -> V3
    refused = app.cli("down", "app", "--to", V2)
    assert refused.code == 3 and "--accept-data-loss" in refused.stderr
    assert app.digest() == after_up

    down = app.cli("down", "app", "--to", V1, "--accept-data-loss", "--json")
    assert down.code == 0, down.output
    assert [s["step"]["to_version"] for s in down.json[0]["steps"]] == [V2, V1]
    assert (app.data / "version").read_text() == "v1\n"
    assert "Ñandú" not in (app.data / "db/tables/users.csv").read_text()
    assert not (app.data / "new.txt").exists()

    status = app.cli("status", "--json").json[0]
    assert status["recorded"] == V1 and status["data_version"] == V1
    assert status["pending"] == [f"{V1} -> {V2}", f"{V2} -> {V3}"]

    # a backup before every step, the down steps included, and none deleted
    assert len(app.cli("backups", "--json").json) == 5
    assert before != after_up


def test_down_to_a_version_never_recorded_is_refused(make_app):
    app = make_app(target=V2)
    assert app.cli("up").code == 0
    before = app.digest()
    result = app.cli("down", "app", "--to", "2023-12-31")
    assert result.code == 2
    assert "never recorded" in result.stderr and result.failure.startswith("FAILED: app: version")
    assert app.digest() == before


def test_warned_step_refused_without_acceptance_and_run_with_it(make_app):
    app = make_app(target=V3)
    before = app.digest()
    refused = app.cli("up")
    assert refused.code == 3
    assert "v3 rewrites the version file" in refused.stderr
    assert f"--accept {V3}" in refused.stderr
    # the whole plan is validated first: not even the unwarned first steps ran
    assert app.digest() == before
    assert app.cli("history", "app", "--json").json == []

    accepted = app.cli("up", "--accept", V3)
    assert accepted.code == 0, accepted.output
    assert (app.data / "version").read_text() == "v3\n"


def test_plan_changes_nothing_and_exits_3_when_up_would_refuse(make_app):
    app = make_app(target=V3)
    before = app.digest()
    result = app.cli("plan", "--json")
    assert result.code == 3
    [plan] = result.json
    assert [s["to_version"] for s in plan["steps"]] == [V1, V2, V3]
    assert plan["refusals"][0]["kind"] == "NeedsAcceptance"
    assert all(c["ok"] for c in plan["checks"])
    assert app.digest() == before
    assert app.cli("plan", "--accept", V3).code == 0


def test_second_up_does_nothing(make_app):
    app = make_app(target=V2)
    assert app.cli("up").code == 0
    after = app.digest()
    again = app.cli("up", "--json")
    assert again.code == 0 and again.json[0]["steps"] == []
    assert app.digest() == after
    assert len(app.cli("backups", "--json").json) == 2


def test_target_no_migration_reaches(make_app):
    app = make_app(target="2024-02-15")
    before = app.digest()
    result = app.cli("up")
    assert result.code == 2
    assert "no migration reaches version '2024-02-15'" in result.stderr
    assert app.digest() == before


def test_restore_command_puts_back_a_recorded_backup(make_app):
    app = make_app(target=V2)
    assert app.cli("up").code == 0
    backups = app.cli("backups", "app", "--json").json
    before_v2 = backups[1]  # taken before V1 -> V2
    assert app.cli("restore", "app", str(before_v2["id"])).code == 3  # needs --accept-data-loss
    result = app.cli("restore", "app", str(before_v2["id"]), "--accept-data-loss")
    assert result.code == 0, result.output
    assert app.cli("status", "--json").json[0]["recorded"] == V1
    assert (app.data / "version").read_text() == "v1\n"
    # the data replaced by the restore was itself backed up
    assert len(app.cli("backups", "app", "--json").json) == 3
    assert app.cli("restore", "app", "999", "--accept-data-loss").code == 2


def test_prune_keeps_the_newest(make_app):
    app = make_app(target=V2)
    assert app.cli("up").code == 0
    backups = app.cli("backups", "app", "--json").json
    result = app.cli("backups", "prune", "app", "--keep", "1", "--json")
    assert result.code == 0
    assert [b["id"] for b in result.json] == [backups[0]["id"]]
    from pathlib import Path

    assert not Path(backups[0]["path"]).exists()
    assert Path(backups[1]["path"]).exists()
    assert [b["id"] for b in app.cli("backups", "--json").json] == [backups[1]["id"]]
