"""The command line: help, exit codes, `FAILED:` lines, `--json`, `--traceback`."""

from __future__ import annotations

import pytest

from nixos_migrate.testing.cli import run_cli
from tests.conftest import V1, V2

COMMANDS = [
    "status", "plan", "up", "down", "settle", "verify", "history", "backups", "restore", "plugins", "new-plugin"
]  # fmt: skip


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command):
    result = run_cli(None, *([command] if command else []), "--help")
    assert result.code == 0
    assert "Usage: nixos-migrate" in result.stdout
    if command is None:
        for name in COMMANDS:
            assert name in result.stdout
        assert "Exit codes" in result.stdout


def test_read_commands_speak_json(make_app):
    app = make_app(target=V2)
    assert app.cli("up").code == 0
    for args in (["status"], ["plan"], ["history", "app"], ["backups"], ["backups", "app"], ["verify"], ["plugins"]):
        result = app.cli(*args, "--json")
        assert result.code == 0, (args, result.output)
        assert result.json is not None
    assert app.cli("verify", "--json").json == {"app": [{"name": "verify script", "ok": True, "detail": "exit 0"}]}


def test_failed_verify_exits_1(make_app):
    app = make_app(target=V1)
    assert app.cli("up").code == 0
    (app.ctl / "fail-verify").write_text("v1\n")
    result = app.cli("verify")
    assert result.code == 1
    assert result.failure is not None
    assert "verify failed: app: verify script" in result.failure


def test_unknown_service_is_usage_error(make_app):
    app = make_app()
    result = app.cli("up", "nope")
    assert result.code == 2
    assert result.failure is not None
    assert "unknown service 'nope' (the manifest has: app)" in result.failure
    assert "Traceback" not in result.stderr


def test_traceback_only_on_request(make_app):
    app = make_app()
    assert "Traceback" in app.cli("--traceback", "up", "nope").stderr


def test_resume_and_rollback_exclude_each_other(make_app):
    result = make_app().cli("up", "--resume", "--rollback")
    assert result.code == 2
    assert "exclude each other" in result.stderr


def test_manifest_from_environment(make_app):
    app = make_app(target=V1)
    result = run_cli(None, "status", "--json", env={"NIXOS_MIGRATE_MANIFEST": str(app.manifest)})
    assert result.code == 0
    assert result.json[0]["service"] == "app"


def test_missing_default_manifest_says_what_to_do(tmp_path):
    result = run_cli(None, "status", env={"NIXOS_MIGRATE_MANIFEST": str(tmp_path / "none.json")})
    assert result.code == 2
    assert result.failure is not None
    assert "no such manifest" in result.failure
    assert "next: pass -m/--manifest PATH" in result.failure


def test_click_usage_errors_exit_2(make_app):
    app = make_app()
    assert app.cli("down", "app").code == 2  # --to missing
    assert app.cli("frobnicate").code == 2


def test_human_output_of_a_run(make_app):
    app = make_app(target=V2)
    result = app.cli("up")
    assert result.code == 0
    assert f"app: (none) -> {V1} done (backup 1)" in result.stdout
    assert f"app: now at {V2}" in result.stdout
    plan = app.cli("plan")
    assert "nothing to do" in plan.stdout


def test_plan_fail_if_pending_is_the_units_gate(make_app):
    app = make_app(target=V2)
    before = app.entries()
    gate = app.cli("plan", "--no-checks", "--fail-if-pending")
    assert gate.code == 3
    assert gate.failure is not None
    assert "the data is not at its target version yet (app: " in gate.failure
    assert "nixos-migrate up app" in gate.stderr
    assert app.entries() == before  # the gate changes nothing
    assert app.cli("up").code == 0
    assert app.cli("plan", "--no-checks", "--fail-if-pending").code == 0


def test_settle_and_defer_settle_on_the_command_line(make_app):
    """`up --defer-settle` leaves the after-start work and says how to do it; `settle` does it
    (the scripts plugin notes none: nothing to do), as JSON too."""
    app = make_app(target=V1)
    deferred = app.cli("up", "--defer-settle")
    assert deferred.code == 0, deferred.output
    assert "once it runs again: `nixos-migrate settle app`" in deferred.stdout
    settle = app.cli("settle", "--json")
    assert settle.code == 0, settle.output
    assert settle.json == {"app": {"state": "nothing", "checks": []}}
    assert "app: nothing left to do" in app.cli("settle").stdout
    ran = app.cli("up", "--json")  # nothing to do: no run, nothing settled
    assert ran.json[0]["settle"] is None
