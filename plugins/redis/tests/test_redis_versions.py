# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The catalogue and the offline reading of the data: load order, upgrade paths, the RDB header
of files each real server wrote, and the version detected from them."""

from __future__ import annotations

import pytest
from redis_env import make_instance

from nixos_migrate.errors import MigrateError
from nixos_migrate_redis import datafiles, versions

PACKAGED = ("6.0", "6.2", "7.0", "7.2", "7.4", "8.0", "valkey-8.0")


def test_an_upgrade_stops_at_every_major_of_its_flavour_and_crosses_last():
    assert versions.path("6.0", "8.0", PACKAGED) == ["6.0", "7.4", "8.0"]
    assert versions.path("6.0", "8.0", ("6.0", "7.0", "8.0")) == ["6.0", "7.0", "8.0"]
    assert versions.path("6.0", "valkey-8.0", PACKAGED) == ["6.0", "7.2", "valkey-8.0"]
    assert versions.path("valkey-8.0", "8.0", PACKAGED) == ["valkey-8.0", "8.0"]
    assert versions.path("7.0", "7.2", PACKAGED) == ["7.0", "7.2"]


def test_load_order_follows_what_each_server_reads():
    # Valkey 8 reads Redis 7.2's format, not 7.4's
    assert versions.key("7.2") < versions.key("valkey-8.0") < versions.key("7.4")
    assert versions.loads("valkey-8.0", versions.RDB["7.2"]) and not versions.loads("valkey-8.0", versions.RDB["7.4"])
    assert versions.crossing_warning("7.0", "valkey-8.0") and versions.crossing_warning("7.0", "8.0") is None
    with pytest.raises(MigrateError, match=r"unknown Redis/Valkey version '5\.0'"):
        versions.key("5.0")
    assert versions.series("8.0.2", "redis") == "8.0" and versions.series("8.0.1", "valkey") == "valkey-8.0"


@pytest.mark.parametrize(("version", "rdb", "writer"), [
    ("6.0", 9, ("redis", "6.0.16")), ("7.0", 10, ("redis", "7.0.15")),
    ("8.0", 12, ("redis", "8.0.2")), ("valkey-8.0", 11, ("valkey", "8.0.1")),
])  # fmt: skip
def test_the_header_of_each_real_servers_file_names_its_format_and_writer(tmp_path, version, rdb, writer):
    instance = make_instance(tmp_path, version, keys=100, big=False)
    found = datafiles.layout(instance.data_dir, "dump.rdb", "appendonly.aof", "appendonlydir")
    assert found.newest is not None and found.aof is None
    assert found.newest.rdb_version == rdb and found.newest.writer == writer


def test_a_truncated_or_foreign_file_is_no_header(tmp_path):
    (tmp_path / "dump.rdb").write_bytes(b"REDIS00")
    assert datafiles.read_header(tmp_path / "dump.rdb") is None
    (tmp_path / "dump.rdb").write_bytes(b"*2\r\n$6\r\nSELECT\r\n")
    assert datafiles.read_header(tmp_path / "dump.rdb") is None
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0010\xfa\x09redis-ver\x05")  # cut inside the aux field
    header = datafiles.read_header(tmp_path / "dump.rdb")
    assert header is not None and header.rdb_version == 10 and header.writer is None
