"""A failure injected into each phase of a step leaves the data exactly as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import V1, V2, V3


def _at_v1(make_app):
    app = make_app(target=V1)
    assert app.cli("up").code == 0
    app.spec["target"] = V2
    return app


def _step_outcomes(app):
    return [(h["to_version"], h["outcome"]) for h in app.cli("history", "app", "--json").json]


@pytest.mark.parametrize(
    ("phase", "inject"),
    [
        ("backup", lambda app: app.fail("backup2")),
        ("apply", lambda app: app.fail("up2")),
        ("verify", lambda app: (app.ctl / "fail-verify").write_text("v2\n")),
    ],
)
def test_failure_in_each_phase_restores_the_data(make_app, phase, inject):
    app = _at_v1(make_app)
    before = app.entries()
    inject(app)

    result = app.cli("up")

    assert result.code == 1, result.output
    assert result.failure is not None
    assert app.entries() == before
    assert _step_outcomes(app) == [(V1, "done"), (V2, "restored")]
    status = app.cli("status", "--json").json[0]
    assert status["recorded"] == V1
    assert status["dirty"] is None
    if phase != "backup":
        assert "restored from backup" in result.stderr
    # the cause gone, the same step goes through
    app.heal("backup2")
    app.heal("up2")
    (app.ctl / "fail-verify").unlink(missing_ok=True)
    assert app.cli("up").code == 0
    assert (app.data / "version").read_text() == "v2\n"


def test_failed_restore_exits_4_and_keeps_the_journal_dirty(make_app):
    app = _at_v1(make_app)
    before = app.entries()
    app.fail("up2")
    app.fail("restore2")

    result = app.cli("up")
    assert result.code == 4, result.output
    assert "failed too" in result.stderr
    assert "--rollback" in result.stderr

    again = app.cli("up")
    assert again.code == 3
    assert f"{V1} -> {V2}" in again.stderr and "restore" in again.stderr

    app.heal("restore2")
    rolled = app.cli("up", "--rollback")
    assert rolled.code == 0, rolled.output
    assert app.entries() == before
    assert _step_outcomes(app)[-1] == (V2, "rolled-back")


def test_damaged_backup_is_not_restored(make_app):
    """A copy backup whose checksum no longer matches is refused instead of restored."""
    app = make_app(target=V3, accept=[V3])
    assert app.cli("up").code == 0
    backup = app.cli("backups", "--json").json[-1]  # a copy, taken before V2 -> V3
    assert backup["kind"] == "copy"
    victim = next(p for p in Path(backup["path"]).rglob("users.csv"))
    victim.write_text("tampered\n")
    before = app.entries()
    result = app.cli("restore", "app", str(backup["id"]), "--accept-data-loss")
    assert result.code == 1
    assert "does not match its checksum" in result.stderr
    # the failed restore was undone from the backup taken just before it
    assert app.entries() == before


def test_journal_commits_only_after_verify(make_app):
    """The version moves in the journal only in the transaction that closes a verified step."""
    app = _at_v1(make_app)
    (app.ctl / "fail-verify").write_text("v2\n")
    assert app.cli("up").code == 1
    conn = sqlite3.connect(app.root / "state" / "journal.sqlite")
    [(version,)] = conn.execute("SELECT version FROM services WHERE name='app'").fetchall()
    steps = conn.execute("SELECT to_version, outcome, error FROM steps ORDER BY id").fetchall()
    conn.close()
    assert version == V1
    assert steps[-1][0] == V2 and steps[-1][1] == "restored" and "verify" in steps[-1][2]
    assert json.loads(app.cli("status", "--json").stdout)[0]["data_version"] == V1
