"""SIGKILL of the executor in each phase: the journal stays dirty, --rollback and --resume work.

The executor and the script it runs are killed together (their process group), as systemd kills
a unit's cgroup; a kill of the Python process alone would leave the script running.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.conftest import V1, V2

PHASE_GATES = {"backup": "backup2", "apply": "up2", "verify": "verify"}


def _kill_in(app, phase: str) -> None:
    gate = PHASE_GATES[phase]
    app.block(gate)
    proc = app.popen("up")
    try:
        app.wait_started(gate)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        app.unblock(gate)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def at_v1(make_app):
    app = make_app(target=V1)
    assert app.cli("up").code == 0
    app.spec["target"] = V2
    return app


@pytest.mark.parametrize("phase", ["backup", "apply", "verify"])
def test_kill_then_rollback_gives_identical_data(at_v1, phase):
    app = at_v1
    before = app.entries()
    _kill_in(app, phase)

    refused = app.cli("up")
    assert refused.code == 3, refused.output
    assert f"step {V1} -> {V2} was interrupted in phase '{phase}'" in refused.stderr
    assert "--resume" in refused.stderr and "--rollback" in refused.stderr
    status = app.cli("status", "--json").json[0]
    assert status["dirty"]["phase"] == phase

    rolled = app.cli("up", "--rollback")
    assert rolled.code == 0, rolled.output
    assert app.entries() == before
    assert app.cli("status", "--json").json[0]["recorded"] == V1
    # clean again: a normal run migrates
    assert app.cli("up").code == 0
    assert (app.data / "version").read_text() == "v2\n"


@pytest.mark.parametrize("phase", ["backup", "apply", "verify"])
def test_kill_then_resume_finishes(at_v1, make_app, tmp_path, phase):
    app = at_v1
    _kill_in(app, phase)
    assert app.cli("up").code == 3

    resumed = app.cli("up", "--resume", "--json")
    assert resumed.code == 0, resumed.output
    assert app.cli("status", "--json").json[0]["recorded"] == V2
    # the result is what an uninterrupted run gives (the half-done up work is not applied twice)
    text = (app.data / "db/tables/users.csv").read_text()
    assert text.count("Ñandú") == 1
    assert (app.data / "version").read_text() == "v2\n"
    assert not (app.data / "db/blob.bin").exists()
    history = app.cli("history", "app", "--json").json
    assert history[-1]["outcome"] == "done"
    assert all(h["outcome"] is not None for h in history)


def test_rollback_with_nothing_in_flight_is_a_usage_error(at_v1):
    result = at_v1.cli("up", "--rollback")
    assert result.code == 2
    assert "nothing to roll back" in result.stderr
