"""The majors, MongoDB's rules between them and the checks of a package, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest
from mongo_env import package

from nixos_migrate.errors import UsageError
from nixos_migrate_mongodb import installation, rolling, versions
from nixos_migrate_mongodb.settings import MongoSettings


def test_one_major_at_a_time_and_the_fcv_rules() -> None:
    assert versions.between("4.4", "8.0") == ["4.4", "5.0", "6.0", "7.0", "8.0"]
    assert versions.between("8.0", "6.0") == ["8.0", "7.0", "6.0"]
    assert [versions.needs_confirm(v) for v in versions.MAJORS] == [False, False, False, True, True]
    assert [versions.binary_downgrade(v) for v in versions.MAJORS] == [True, True, True, False, False]
    assert versions.openable("6.0", "5.0") and versions.openable("6.0", "6.0")
    assert not versions.openable("6.0", "4.4") and not versions.openable("6.0", "7.0")
    assert versions.major("7.0.16") == "7.0"
    with pytest.raises(UsageError, match=r"unknown MongoDB version '3\.6'"):
        versions.major("3.6.23")


def test_the_rolling_order_of_a_replica_set() -> None:
    up = rolling.order("6.0", "7.0", "rs0")
    assert up[-1] == "on the primary: setFeatureCompatibilityVersion '7.0', confirm: true"
    down = rolling.order("6.0", "5.0", "rs0")
    assert down[0].startswith("on the primary of replica set 'rs0': setFeatureCompatibilityVersion '5.0'")
    restore = rolling.order("7.0", "6.0", "rs0")
    assert "restore on every member the backup taken before 6.0 -> 7.0" in restore


def test_a_package_under_the_wrong_major_is_named(tmp_path: Path) -> None:
    settings = MongoSettings(db_path=tmp_path, packages={"5.0": package("6.0"), "6.0": package("6.0")})
    assert installation.release(settings, "6.0") == "6.0.20"
    with pytest.raises(UsageError, match=r"settings.packages.'5.0' holds MongoDB 6.0.20") as caught:
        installation.release(settings, "5.0")
    assert caught.value.hint == "put it under '6.0'"
    empty = MongoSettings(db_path=tmp_path, packages={"5.0": tmp_path})
    with pytest.raises(UsageError, match="no mongod in"):
        installation.release(empty, "5.0")


def test_settings_refuse_unknown_majors(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"package key '9\.9'"):
        MongoSettings(db_path=tmp_path, packages={"9.9": tmp_path})
    with pytest.raises(ValidationError, match=r"initial_version '2\.6'"):
        MongoSettings(db_path=tmp_path, initial_version="2.6")


def test_the_lock_file_tells_a_running_mongod(tmp_path: Path) -> None:
    import os

    (tmp_path / "mongod.lock").write_text(f"{os.getpid()}\n")
    assert installation.running_pid(tmp_path) == os.getpid()
    (tmp_path / "mongod.lock").write_text("")
    assert installation.running_pid(tmp_path) is None
    (tmp_path / "mongod.lock").write_text("999999999\n")
    assert installation.running_pid(tmp_path) is None
