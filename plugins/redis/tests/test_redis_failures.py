# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Failures and refusals leave the data directory exactly as it was (every file, byte for byte):
a server killed while it loads the data, an older server that dies on the rewritten snapshot or
loads other content than it holds, a downgrade the older version cannot hold (refused
before anything changes, naming the keys), and bad input: a running server, missing binaries,
a package under the wrong version, another service's data, versions nobody knows."""

from __future__ import annotations

import shutil

import pytest
from redis_env import Rig, content, files, make_instance, queue_with_a_deleted_pending_entry

from nixos_migrate.testing import provision
from nixos_migrate_redis.testing import ALL, package


def _packages(**override):
    return {v: str(package(v)) for v in ALL} | {k.replace("_", "."): str(v) for k, v in override.items()}


def _prefix_with_server(tmp_path, version: str, script: str):
    """A copy of `version`'s prefix whose redis-server is `script` ({real}: the real one)."""
    prefix = tmp_path / f"redis-{version}"
    shutil.copytree(package(version), prefix, symlinks=True)
    server = prefix / "bin" / "redis-server"
    server.unlink()
    server.write_text(script.format(real=package(version) / "bin" / "redis-server"))
    server.chmod(0o755)
    provision.traversable(prefix)
    return prefix


def test_a_server_killed_while_it_loads_the_data_is_restored_exactly(tmp_path):
    instance = make_instance(tmp_path, "7.0", keys=20_000)
    before = files(instance)
    killer = (
        "#!/bin/sh\n"
        '[ "$1" = --version ] && exec {real} "$@"\n'
        "# the real server starts loading, then dies under the plugin\n"
        '{real} "$@" & sleep 0.05; kill -KILL $!; wait; exit 1\n'
    )
    rig = Rig(tmp_path, instance, packages=_packages(**{"8_0": _prefix_with_server(tmp_path, "8.0", killer)}))
    result = rig.cli("8.0", "up")
    assert result.code == 1, result.output
    assert "did not load" in result.stderr and "restored" in result.stderr
    assert files(instance) == before
    assert rig.cli("8.0", "status", "--json").json[0]["data_version"] == "7.0"


@pytest.mark.parametrize(
    ("older", "said"),
    [
        # 7.0 dies while it loads the rewritten snapshot
        ('{real} "$@" & sleep 0.05; kill -KILL $!; wait; exit 1', "did not load"),
        # 7.0 loads another (missing, so empty) file than the rewritten one: the comparison sees it
        ('exec {real} "$@" --dbfilename elsewhere.rdb', "loaded other content than was there"),
    ],
)
def test_a_rewritten_snapshot_the_older_server_fails_on_is_restored_exactly(tmp_path, older, said):
    instance = make_instance(tmp_path, "8.0", keys=20_000)
    before = files(instance)
    script = '#!/bin/sh\ncase "$*" in *nixos-migrate-copy*) ' + older + ' ;; esac\nexec {real} "$@"\n'
    rig = Rig(tmp_path, instance, packages=_packages(**{"7_0": _prefix_with_server(tmp_path, "7.0", script)}))
    result = rig.cli("7.0", "up")  # to an older target: a down step, the snapshot rewritten
    assert result.code == 1, result.output
    assert said in result.stderr and "restored" in result.stderr
    assert files(instance) == before
    assert rig.cli("8.0", "status", "--json").json[0]["data_version"] == "8.0"


def test_hash_field_expiries_refuse_a_downgrade_below_7_4_naming_the_keys(tmp_path):
    instance = make_instance(tmp_path, "8.0", keys=2000, big=False)
    with instance.running("8.0") as client:
        client.hset("user:42", mapping={"name": "x", "otp": "123456"})
        client.execute_command("HPEXPIRE", "user:42", 3_600_000, "FIELDS", 1, "otp")
    before = files(instance)
    rig = Rig(tmp_path, instance)
    refused = rig.cli("7.0", "up")  # to an older target: a downgrade
    assert refused.code == 3, refused.output
    assert "hash fields with an expiry" in refused.stderr and "db0:user:42" in refused.stderr
    assert files(instance) == before


def test_a_pending_entry_whose_entry_was_deleted_refuses_a_copy_by_commands_naming_the_stream(tmp_path):
    # append-only on: the data is an AOF, so the down step would copy every key by commands
    instance = make_instance(tmp_path, "8.0", keys=2000, big=False, appendonly=True)
    with instance.running("8.0", appendonly=True) as client:
        queue_with_a_deleted_pending_entry(client)
    before = files(instance)
    rig = Rig(tmp_path, instance)
    refused = rig.cli("7.0", "up")
    assert refused.code == 3, refused.output
    assert "pending entries of deleted stream entries (XCLAIM cannot recreate them): db0:queue" in refused.stderr
    assert files(instance) == before


def test_function_libraries_refuse_a_downgrade_below_7_0_naming_them(tmp_path):
    instance = make_instance(tmp_path, "7.0", keys=2000, big=False)  # the corpus loads two libraries on 7.0
    before = files(instance)
    rig = Rig(tmp_path, instance)
    refused = rig.cli("6.0", "up")  # to an older target: a downgrade
    assert refused.code == 3, refused.output
    assert "function libraries (7.0+; the target has no functions): audit, shop" in refused.stderr
    assert files(instance) == before


def test_a_running_server_is_refused_and_left_alone(tmp_path):
    instance = make_instance(tmp_path, "7.0", keys=500, big=False)
    rig = Rig(tmp_path, instance)
    with instance.running("7.0", save=False):
        result = rig.cli("8.0", "up")
        assert result.code == 3, result.output
        assert "server not running" in result.stderr and "pid" in result.stderr
    assert content(instance, "7.0")["0"]["keys"] > 0


def test_missing_or_mislabelled_binaries_and_unknown_versions_are_named_and_nothing_changes(tmp_path):
    instance = make_instance(tmp_path, "7.0", keys=500, big=False)
    before = files(instance)
    empty = tmp_path / "empty-prefix"
    empty.mkdir()
    result = Rig(tmp_path, instance, packages=_packages(**{"8_0": empty})).cli("8.0", "up")
    assert result.code == 3, result.output
    assert f"Redis 8.0: no redis-server in {empty}/bin" in result.stderr
    swapped = Rig(tmp_path, instance, packages=_packages(**{"8_0": package("6.0")})).cli("8.0", "up")
    assert swapped.code == 3, swapped.output
    assert "settings.packages.'8.0' holds Redis 6.0 (6.0.16)" in swapped.stderr
    missing = Rig(tmp_path, instance, packages=_packages()).cli("7.4", "up")
    assert missing.code == 2, missing.output
    assert "no package for Redis 7.4 in settings.packages" in missing.stderr
    nonsense = Rig(tmp_path, instance).cli("nine", "plan")
    assert nonsense.code == 2, nonsense.output
    assert "unknown Redis/Valkey version 'nine'" in nonsense.stderr
    assert files(instance) == before


@pytest.mark.parametrize(("marker", "what"), [("PG_VERSION", "PostgreSQL data"), ("ibdata1", "MySQL/MariaDB data")])
def test_another_services_data_is_refused(tmp_path, marker, what):
    instance = make_instance(tmp_path, "7.0", keys=10, big=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / marker).write_text("16\n")
    result = Rig(tmp_path, instance, data_dir=str(other)).cli("8.0", "plan")
    assert result.code in (2, 3), result.output
    assert f"{other} holds {what}" in result.stderr
    assert (other / marker).read_text() == "16\n"
