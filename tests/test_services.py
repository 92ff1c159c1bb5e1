"""Services as an operator runs them: as their own user, in order, with their unit stopped."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from nixos_migrate.testing.cli import run_cli
from nixos_migrate.testing.provision import traversable
from tests.conftest import V1, V2

USER = "nm-test-svc"


@pytest.fixture(scope="module")
def service_user() -> str:
    if os.geteuid() != 0:
        pytest.fail("running scripts as another user needs root")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        # another test worker may create it at the same moment: check the result, not the exit code
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=False)
        pwd.getpwnam(USER)
    return USER


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for dirpath, dirs, files in os.walk(root):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirs + files)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


def test_scripts_run_as_the_service_user_with_a_clean_environment(make_app, service_user, migrate_root):
    traversable(migrate_root)
    app = make_app(target=V1, user=service_user)
    _chown_tree(app.data, service_user)
    app.ctl.chmod(0o777)
    probe = app.ctl / "probe"
    app.spec["migrations"][0]["up"]["script"] = f'id -un > "{probe}"\nenv >> "{probe}"\necho v1 > "$DATA/version"\n'
    result = app.cli("up", env={"PGPASSWORD": "hunter2", "AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    assert result.code == 0, result.output
    lines = probe.read_text().splitlines()
    assert lines[0] == service_user
    env = dict(line.split("=", 1) for line in lines[1:] if "=" in line)
    assert "PGPASSWORD" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["USER"] == service_user
    assert env["NIXOS_MIGRATE_TO"] == V1
    assert env["DATA"] == str(app.data)
    assert "hunter2" not in result.output
    # the backups are private to the service user
    backup_dir = app.root / "backups" / "app"
    assert backup_dir.stat().st_mode & 0o777 == 0o700
    assert backup_dir.stat().st_uid == pwd.getpwnam(service_user).pw_uid


def test_services_run_in_after_order(manifest_builder, migrate_root):
    log = migrate_root / "order.log"
    for name, after in (("web", ["db"]), ("db", []), ("cache", [])):
        data = migrate_root / name
        data.mkdir()
        manifest_builder.service(
            name,
            plugin="scripts",
            target=V1,
            after=after,
            settings={"paths": [str(data)]},
            migrations=[{"version": V1, "up": {"script": f'echo {name} >> "{log}"'}}],
        )
    result = run_cli(manifest_builder.write(), "up")
    assert result.code == 0, result.output
    order = log.read_text().split()
    assert order.index("db") < order.index("web")
    # asking for web alone still migrates what it comes after... only when asked: db is its own
    assert sorted(order) == ["cache", "db", "web"]


FAKE_SYSTEMCTL = """#!/bin/sh
# stand-in for systemctl: this sandbox runs no systemd. Logs calls; keeps the unit's state in a file.
echo "systemctl $*" >> "{log}"
case "$1" in
  is-active) [ "$(cat "{state}")" = active ] ;;
  stop) echo inactive > "{state}" ;;
  start) echo active > "{state}" ;;
esac
"""


@pytest.fixture
def fake_systemd(tmp_path):
    """A systemctl stand-in on PATH (the test machine runs no systemd)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, state = tmp_path / "calls.log", tmp_path / "unit.state"
    state.write_text("active\n")
    script = bin_dir / "systemctl"
    script.write_text(FAKE_SYSTEMCTL.format(log=log, state=state))
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log, state


def test_unit_is_stopped_before_the_backup_and_started_after(make_app, fake_systemd):
    env, log, state = fake_systemd
    app = make_app(target=V2, unit="app.service")
    app.spec["migrations"][1]["up"]["backup"] = f'echo backup >> "{log}"\n' + app.spec["migrations"][1]["up"]["backup"]
    result = app.cli("up", env=env)
    assert result.code == 0, result.output
    calls = log.read_text().splitlines()
    assert calls[:2] == ["systemctl is-active --quiet app.service", "systemctl stop app.service"]
    assert calls.index("systemctl stop app.service") < calls.index("backup")
    assert calls[-1] == "systemctl start app.service"
    assert calls.count("systemctl start app.service") == 1
    assert state.read_text().strip() == "active"


def test_unit_is_started_again_after_a_failed_step(make_app, fake_systemd):
    env, log, state = fake_systemd
    app = make_app(target=V1, unit="app.service")
    app.fail("up1")
    before = app.entries()
    assert app.cli("up", env=env).code == 1
    assert app.entries() == before
    assert log.read_text().splitlines()[-1] == "systemctl start app.service"
    assert state.read_text().strip() == "active"


def test_a_unit_that_was_not_running_is_left_stopped(make_app, fake_systemd):
    env, log, state = fake_systemd
    state.write_text("inactive\n")
    app = make_app(target=V1, unit="app.service")
    assert app.cli("up", env=env).code == 0
    assert "systemctl start app.service" not in log.read_text()


def test_unit_without_systemctl_is_refused(make_app, tmp_path):
    app = make_app(target=V1, unit="app.service")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    for tool in ("bash", "cp", "cmp", "sleep", "mkdir", "rm", "touch", "cat", "env", "id", "sed", "head"):
        src = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if src:
            (empty / tool).symlink_to(src)
    result = app.cli("up", env={"PATH": str(empty)})
    assert result.code == 3
    assert "systemctl is not on PATH" in result.stderr


def test_a_failed_pre_check_starts_the_unit_again_and_plan_never_stops_it(make_app, fake_systemd):
    env, log, state = fake_systemd
    app = make_app(target=V1, unit="app.service")
    app.spec["migrations"][0]["up"]["script"] = "if then fi"  # the pre-check `bash -n` refuses it
    before = app.entries()
    assert app.cli("plan", env=env).code == 3
    assert not log.exists() or "stop" not in log.read_text()
    result = app.cli("up", env=env)
    assert result.code == 3, result.output
    assert "script parses" in result.stderr
    # `up` checks the data as the step would find it, with the unit stopped, then starts it again
    assert log.read_text().splitlines() == [
        "systemctl is-active --quiet app.service",
        "systemctl stop app.service",
        "systemctl start app.service",
    ]
    assert state.read_text().strip() == "active"
    assert app.entries() == before


def test_inside_a_systemd_unit_the_service_start_is_queued_not_awaited(make_app, fake_systemd):
    env, log, _ = fake_systemd
    app = make_app(target=V1, unit="app.service")
    assert app.cli("up", env={**env, "INVOCATION_ID": "0123456789abcdef"}).code == 0
    assert log.read_text().splitlines()[-1] == "systemctl start --no-block app.service"
