# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The rules no server here can show: MySQL's one-series-at-a-time path and its LTS stops, the
self-upgrading server from 8.0, the family crossings, and the offline version probes (upgrade-info
file, redo log header) on files shaped like each server's. Oracle MySQL has no server on these
machines (no registry here ships one): its rules are tested as logic, its path through the same
production code as MariaDB's."""

from __future__ import annotations

import pytest

from nixos_migrate.errors import UsageError
from nixos_migrate_mysql import installation, versions


def test_mariadb_visits_every_packaged_series_on_the_way():
    assert versions.path("10.5", "11.8", {"10.5", "10.11", "11.4", "11.8"}, logical=False) == [
        "10.5",
        "10.11",
        "11.4",
        "11.8",
    ]
    assert versions.path("10.5", "11.8", {"10.5", "11.8"}, logical=False) == ["10.5", "11.8"]


def test_mysql_goes_one_release_series_at_a_time_and_names_what_is_missing():
    assert versions.path("5.7", "8.4", {"5.7", "8.0", "8.4"}, logical=False) == ["5.7", "8.0", "8.4"]
    with pytest.raises(UsageError, match=r"passes through 8.0, and settings.packages has no 8.0"):
        versions.path("5.7", "8.4", {"5.7", "8.4"}, logical=False)
    with pytest.raises(UsageError, match=r"passes through 5.7, 8.0"):
        versions.path("5.6", "8.4", {"5.6", "8.4"}, logical=False)


def test_family_crossings():
    assert versions.path("5.7", "10.11", {"5.7", "10.11"}, logical=False) == ["5.7", "10.11"]
    assert "changes the server family" in (versions.crossing_warning("5.7", "10.11") or "")
    assert versions.crossing_warning("10.5", "10.11") is None
    with pytest.raises(UsageError, match=r"MySQL 8.0 data \(its data dictionary\) cannot be opened by MariaDB"):
        versions.path("8.0", "10.11", set(), logical=False)
    assert versions.path("8.0", "10.11", set(), logical=True) == ["8.0", "10.11"]
    # MariaDB -> MySQL is planned as a downgrade (a logical copy), with the family warning
    assert "changes the server family" in (versions.crossing_warning("10.11", "8.0") or "")


def test_mysql_from_8_0_upgrades_itself():
    assert versions.self_upgrading("8.0") and versions.self_upgrading("8.4")
    assert not versions.self_upgrading("5.7") and not versions.self_upgrading("11.8")


@pytest.mark.parametrize("bad", ["10", "ten", "10.11.2", ""])
def test_a_version_must_be_a_release_series(bad):
    with pytest.raises(UsageError, match="is not a MariaDB/MySQL release series"):
        versions.key(bad)


def test_offline_probes(tmp_path):
    data = tmp_path / "data"
    (data / "mysql").mkdir(parents=True)
    assert installation.foreign(data) is None
    assert installation.upgrade_info(data) is None
    (data / "ib_logfile0").write_bytes(b"\0" * 16 + b"Phys" + b"MariaDB 10.5.23" + b"\0" * 64)
    assert installation.redo_log_creator(data) == "10.5.23-MariaDB"
    (data / "mysql_upgrade_info").write_bytes(b"10.11.18-MariaDB\0")
    assert versions.series_of(installation.upgrade_info(data) or "") == "10.11"
    (data / "mariadb_upgrade_info").write_bytes(b"11.8.9-MariaDB")
    assert installation.upgrade_info(data) == "11.8.9-MariaDB"
    redo = tmp_path / "mysql8" / "#innodb_redo"
    redo.mkdir(parents=True)
    (redo / "#ib_redo10").write_bytes(b"\0" * 12 + b"MySQL 8.0.36" + b"\0" * 32)
    assert installation.redo_log_creator(tmp_path / "mysql8") == "8.0.36-MySQL"
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("16\n")
    assert installation.foreign(tmp_path / "pg") == "PostgreSQL"
