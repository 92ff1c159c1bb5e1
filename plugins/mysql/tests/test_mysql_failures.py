# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Failures and refusals leave the data directory exactly as it was (every file, byte for byte):
an upgrade tool that does nothing (the failures a skipped `mariadb-upgrade` leaves are caught by
verify), a server killed in the middle of the upgrade, downgrades the older version cannot hold
(refused before anything changes, naming the objects), and bad input: a running server, missing
binaries, another service's data, versions nobody knows."""

from __future__ import annotations

import shutil

import pytest
from mariadb_env import Rig, content, files, make_instance

from nixos_migrate.testing import provision
from nixos_migrate_mysql.testing import mariadb


def _prefix_with(tmp_path, script: str, program: str = "mariadb-upgrade"):
    """A copy of the 10.11 prefix whose `program` is `script` ({real}: the real one)."""
    prefix = tmp_path / "mariadb-10.11"
    shutil.copytree(mariadb("10.11"), prefix, symlinks=True)
    tool = prefix / "bin" / program
    tool.unlink()
    tool.write_text(script.format(real=mariadb("10.11") / "bin" / program))
    tool.chmod(0o755)
    provision.traversable(prefix)
    return prefix


def _packages(instance, **override):
    packages = {v: str(mariadb(v)) for v in ("10.5", "10.11", "11.8")}
    return packages | {k.replace("_", "."): str(v) for k, v in override.items()}


def test_a_skipped_mariadb_upgrade_is_caught_by_verify_and_restored(tmp_path):
    instance = make_instance(tmp_path, "10.5", rows=2000)
    before = files(instance)
    prefix = _prefix_with(tmp_path, "#!/bin/sh\nexit 0\n")
    rig = Rig(tmp_path, instance, packages=_packages(instance, **{"10_11": prefix}))
    result = rig.cli("10.11", "up")
    assert result.code == 1, result.output
    assert "stored routines load" in result.stderr and "mysql.proc" in result.stderr
    assert "event scheduler usable" in result.stderr
    assert files(instance) == before


def test_a_server_killed_during_the_upgrade_is_restored_exactly(tmp_path):
    instance = make_instance(tmp_path, "10.5", rows=2000)
    before = files(instance)
    killer = (
        "#!/bin/sh\n"
        "# the real tool runs for a moment, then the server dies under it\n"
        '{real} "$@" & sleep 0.3; pkill -KILL -f "datadir=' + str(instance.data_dir) + '"; wait; exit 1\n'
    )
    rig = Rig(tmp_path, instance, packages=_packages(instance, **{"10_11": _prefix_with(tmp_path, killer)}))
    result = rig.cli("10.11", "up")
    assert result.code == 1, result.output
    assert "restored" in result.stderr
    assert files(instance) == before


def test_a_downgrade_the_older_version_cannot_hold_is_refused_naming_the_objects(tmp_path):
    instance = make_instance(tmp_path, "10.11", rows=2000)
    with instance.server() as server:
        server.execute(
            "CREATE TABLE shop.tokens (id INT PRIMARY KEY, token UUID); INSERT INTO shop.tokens VALUES (1, UUID());"
        )
    before = files(instance)
    rig = Rig(tmp_path, instance)
    refused = rig.cli("10.5", "up")  # to an older target: a downgrade
    assert refused.code == 3, refused.output
    assert "shop.tokens.token of type uuid" in refused.stderr
    assert "history rows of system-versioned table shop.prices" in refused.stderr
    assert files(instance) == before
    assert rig.cli("10.11", "status", "--json").json[0]["data_version"] == "10.11"


def test_data_that_differs_from_the_backups_fingerprint_is_not_copied_and_restored(tmp_path):
    """The copy is compared in full with the rows read during the dump, and those with the
    fingerprint the backup keeps: a row changed in between (here by the source server itself as
    it starts for the copy) fails the step before the copy replaces anything."""
    instance = make_instance(tmp_path, "10.11", rows=2000, history=False)
    before = files(instance)
    change = tmp_path / "change.sql"
    change.write_text("UPDATE shop.customers SET balance = balance + 1 ORDER BY id LIMIT 1;\n")
    provision.traversable(tmp_path)
    # every start but the read-only one of the check (the down's source) changes a row first
    server = (
        "#!/bin/sh\n"
        'case " $* " in *" --read-only "*|*" --version "*|*" --help "*) exec {real} "$@";; esac\n'
        f'exec {{real}} "$@" --init-file={change}\n'
    )
    rig = Rig(tmp_path, instance, packages=_packages(instance, **{"10_11": _prefix_with(tmp_path, server, "mariadbd")}))
    result = rig.cli("10.5", "up")  # to an older target: a downgrade
    assert result.code == 1, result.output
    assert "is not what the backup's fingerprint holds" in result.stderr and "table shop.customers" in result.stderr
    assert "restored" in result.stderr
    assert files(instance) == before
    assert rig.cli("10.11", "status", "--json").json[0]["data_version"] == "10.11"


def test_a_running_server_is_refused_and_left_alone(tmp_path):
    instance = make_instance(tmp_path, "10.5", rows=500)
    rig = Rig(tmp_path, instance)
    with instance.server():
        result = rig.cli("10.11", "up")
        assert result.code == 3, result.output
        assert "server not running" in result.stderr and "pid" in result.stderr
    assert content(instance, "10.5")


def test_missing_binaries_are_named_and_nothing_changes(tmp_path):
    instance = make_instance(tmp_path, "10.5", rows=500)
    before = files(instance)
    empty = tmp_path / "empty-prefix"
    empty.mkdir()
    rig = Rig(tmp_path, instance, packages=_packages(instance, **{"10_11": empty}))
    result = rig.cli("10.11", "up")
    assert result.code == 3, result.output
    assert f"mariadbd/mysqld not found in {empty}" in result.stderr
    assert files(instance) == before
    unknown = Rig(tmp_path, instance, packages=_packages(instance)).cli("12.3", "up")
    assert unknown.code == 2, unknown.output
    assert "no package for MariaDB 12.3 in settings.packages" in unknown.stderr
    nonsense = rig.cli("ten", "plan")
    assert nonsense.code == 2, nonsense.output
    assert "'ten' is not a MariaDB/MySQL release series" in nonsense.stderr
    assert files(instance) == before


@pytest.mark.parametrize(("marker", "what"), [("PG_VERSION", "PostgreSQL"), ("dump.rdb", "Redis")])
def test_another_services_data_is_refused(tmp_path, marker, what):
    instance = make_instance(tmp_path, "10.5", rows=10)
    other = tmp_path / "other"
    other.mkdir()
    (other / marker).write_text("16\n")
    rig = Rig(tmp_path, instance, data_dir=str(other))
    result = rig.cli("10.11", "plan")
    assert result.code == 2, result.output
    assert f"{other} holds {what}" in result.stderr
    assert (other / marker).read_text() == "16\n"


def test_a_private_server_stopped_as_soon_as_it_is_ready_stops_at_once(tmp_path, monkeypatch):
    """MariaDB listens on its socket before its accept loop runs, and a SIGTERM in between is lost:
    the server hangs, neither ready nor stopping (11.8 did it in 3 of 8 stops that followed the
    first accepted connection). Ready means greeting; ten stops right after the start are clean."""
    import time

    from nixos_migrate.context import Service
    from nixos_migrate.control import ServiceControl
    from nixos_migrate.progress import NullProgress
    from nixos_migrate.runner import CommandRunner, Identity
    from nixos_migrate_mysql import server
    from nixos_migrate_mysql.settings import MysqlSettings
    from nixos_migrate_mysql.testing import Instance

    provision.traversable(tmp_path)
    instance = Instance(tmp_path / "mysql", "10.11").create()  # 11.8 opens it as it is
    monkeypatch.setattr(server, "STOP_TIMEOUT", 10.0)  # a lost SIGTERM: SIGKILL after it, reported
    runner = CommandRunner(Identity.lookup(instance.user.pw_name))
    service = Service(
        name="db", plugin="mysql", settings=MysqlSettings.model_validate(instance.settings(("10.11", "11.8"))),
        migrations=[], target="11.8", user=instance.user.pw_name, state_dir=tmp_path / "state",
        backup_dir=tmp_path / "backups", journal_version=None, run=runner, progress=NullProgress(),
        control=ServiceControl(None, runner),
    )  # fmt: skip
    for _ in range(10):
        started = time.monotonic()
        with server.running(service, "11.8", instance.data_dir):
            pass
        assert time.monotonic() - started < 10.0
    assert "Shutdown complete" in (service.state_dir / "run" / "current.err").read_text()
