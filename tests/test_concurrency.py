"""Ten concurrent `up` runs: exactly one migrates, the others are refused naming the holder."""

from __future__ import annotations

import time

from tests.conftest import V1, wait_for


def test_ten_concurrent_runs_one_migrates(make_app):
    app = make_app(target=V1)
    before = app.entries()
    app.block("up1")
    procs = [app.popen("up") for _ in range(10)]
    try:
        wait_for(lambda: sum(p.poll() is not None for p in procs) >= 9, 60, "nine runs to be refused")
        time.sleep(0.2)  # let a tenth, if it is not the holder after all, finish too
        finished = [p for p in procs if p.poll() is not None]
        running = [p for p in procs if p.poll() is None]
        assert len(finished) == 9
        assert len(running) == 1
        holder = running[0]
        assert app.entries() != before or (app.ctl / "up1-started").exists()
    finally:
        app.unblock("up1")
    assert holder.wait(timeout=60) == 0
    for p in finished:
        _out, err = p.communicate()
        assert p.returncode == 3, err
        assert f"app: locked by pid {holder.pid} (nixos-migrate " in err
    history = app.cli("history", "app", "--json").json
    assert [(h["to_version"], h["outcome"]) for h in history] == [(V1, "done")]
    assert (app.data / "version").read_text() == "v1\n"


def test_status_reports_the_lock_holder(make_app):
    app = make_app(target=V1)
    app.block("up1")
    proc = app.popen("up")
    try:
        app.wait_started("up1")
        status = app.cli("status", "--json").json[0]
        assert status["lock_holder"]["pid"] == proc.pid
        assert status["dirty"] is None  # in flight, but running: not dirty
    finally:
        app.unblock("up1")
    assert proc.wait(timeout=60) == 0
    assert app.cli("status", "--json").json[0]["lock_holder"] is None
