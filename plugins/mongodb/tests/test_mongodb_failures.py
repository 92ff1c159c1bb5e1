"""What the mongodb plugin refuses, and what it puts back, on the stand-in mongod (no real
MongoDB server exists on these machines; see mongod_standin.py). Every refusal leaves the
content and the FCV as they were; every failure restores them, compared by the corpus's
independent digest."""

from __future__ import annotations

import json
from pathlib import Path

from mongo_corpus import fingerprint
from mongo_env import Instance, Rig, content, fcv, make_instance

from nixos_migrate.progress import NullProgress


def _small(tmp_path: Path, version: str) -> Instance:
    return make_instance(tmp_path, version, orders=500, big=False)


def _interrupted(instance: Instance, binary: str, fcv_doc: dict[str, str]) -> None:
    """The FCV document as an interrupted setFeatureCompatibilityVersion leaves it."""
    with instance.running(binary) as client:
        client.admin["system.version"].replace_one({"_id": "featureCompatibilityVersion"}, fcv_doc)


def test_an_interrupted_fcv_downgrade_is_refused(tmp_path: Path) -> None:
    instance = _small(tmp_path, "6.0")
    _interrupted(instance, "6.0", {"version": "5.0", "targetVersion": "5.0", "previousVersion": "6.0"})
    before = content(instance, "6.0")
    rig = Rig(tmp_path, instance)
    result = rig.cli("6.0", "up")
    assert result.code == 3, result.output
    assert ("a change of the FCV from 6.0 to 5.0 was interrupted: finish it with setFeatureCompatibilityVersion "
            "'5.0' on mongod 6.0") in result.stderr  # fmt: skip
    assert content(instance, "6.0") == before
    assert fcv(instance, "6.0") == {"version": "5.0", "targetVersion": "5.0", "previousVersion": "6.0"}


def test_an_interrupted_fcv_upgrade_is_finished_by_its_step(tmp_path: Path) -> None:
    instance = _small(tmp_path, "5.0")
    before = content(instance, "5.0")
    _interrupted(instance, "6.0", {"version": "5.0", "targetVersion": "6.0"})
    rig = Rig(tmp_path, instance)
    result = rig.cli("6.0", "up")
    assert result.code == 0, result.output
    assert fcv(instance, "6.0") == {"version": "6.0"}
    assert content(instance, "6.0") == before


def test_data_too_old_for_every_package_is_refused_with_mongods_words(tmp_path: Path) -> None:
    instance = _small(tmp_path, "4.4")
    before = content(instance, "4.4")
    rig = Rig(tmp_path, instance, versions=("6.0", "7.0"))
    result = rig.cli("7.0", "up")
    assert result.code != 0, result.output
    assert "FAILED:" in result.stderr
    assert "Invalid feature compatibility version value '4.4'" in result.stderr
    assert "add the package of the major that last ran" in result.stderr
    assert content(instance, "4.4") == before


def test_a_missing_intermediate_major_is_refused_before_anything_changes(tmp_path: Path) -> None:
    instance = _small(tmp_path, "4.4")
    before = content(instance, "4.4")
    rig = Rig(tmp_path, instance, versions=("4.4", "6.0"))
    result = rig.cli("6.0", "up")
    assert result.code == 3, result.output
    assert "no package for MongoDB 5.0 in settings.packages" in result.stderr
    assert content(instance, "4.4") == before
    assert not any((tmp_path / "backups").rglob("*.bson")), "a refused run wrote a backup"


def test_a_running_mongod_is_refused(tmp_path: Path) -> None:
    instance = _small(tmp_path, "5.0")
    rig = Rig(tmp_path, instance, initial_version="5.0")
    with instance.running("5.0") as client:
        result = rig.cli("6.0", "up")
        assert result.code == 3, result.output
        assert "works on" in result.stderr and "stop it" in result.stderr
        assert client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})[
            "featureCompatibilityVersion"] == {"version": "5.0"}  # fmt: skip


def test_another_services_data_and_unknown_versions_are_named(tmp_path: Path) -> None:
    instance = Instance(tmp_path / "mongodb").create()
    (instance.db_path / "PG_VERSION").write_text("16\n")
    rig = Rig(tmp_path, instance)
    result = rig.cli("7.0", "plan")
    assert result.code != 0, result.output
    assert "holds PostgreSQL data, not MongoDB's" in result.stderr
    assert (instance.db_path / "PG_VERSION").read_text() == "16\n"
    unknown = Rig(tmp_path / "other", Instance(tmp_path / "other" / "mongodb").create()).cli("9.0", "plan")
    assert unknown.code != 0
    assert "unknown MongoDB version '9.0'" in unknown.stderr and "4.4, 5.0, 6.0, 7.0, 8.0" in unknown.stderr


def test_a_collection_invalid_before_the_step_refuses_it(tmp_path: Path) -> None:
    instance = _small(tmp_path, "5.0")
    with instance.running("5.0") as client:
        # the stand-in's validate reports this collection damaged, as mongod reports a damaged one
        client.shop.command({"create": "damaged", "standinCorrupt": {"error": "RecordId(17) checksum mismatch"}})
        client.shop.damaged.insert_one({"_id": 17})
    before = content(instance, "5.0")
    rig = Rig(tmp_path, instance)
    result = rig.cli("6.0", "up")
    assert result.code == 1, result.output
    assert "MongoDB 5.0 finds shop.damaged invalid before the step" in result.stderr
    assert "mongod --repair" in result.stderr
    assert fcv(instance, "5.0") == {"version": "5.0"}
    assert content(instance, "5.0") == before


def test_a_collection_the_new_server_finds_invalid_fails_the_step_and_restores(tmp_path: Path) -> None:
    instance = _small(tmp_path, "5.0")
    with instance.running("5.0") as client:
        # valid for 5.0, invalid for 6.0: as when a newer validate checks more
        client.shop.command({"create": "stricter", "standinCorrupt": {"from": "6.0", "error": "index key too long"}})
        client.shop.stricter.insert_one({"_id": 17})
    before = content(instance, "5.0")
    rig = Rig(tmp_path, instance)
    result = rig.cli("6.0", "up")
    assert result.code == 1, result.output
    assert "shop.stricter: index key too long" in result.stderr
    assert fcv(instance, "5.0") == {"version": "5.0"}
    assert content(instance, "5.0") == before
    assert rig.cli("6.0", "status", "--json").json[0]["data_version"] == "5.0"


def test_a_damaged_file_backup_is_restored_from_its_logical_dump(tmp_path: Path) -> None:
    instance = _small(tmp_path, "5.0")
    before = content(instance, "5.0")
    rig = Rig(tmp_path, instance)
    assert rig.cli("6.0", "up").code == 0
    backups = rig.cli("6.0", "backups", "--json").json
    backup = next(b for b in backups if b["from_version"] == "5.0")
    assert backup["detail"]["dump"] == "pymongo"
    copied = [p for p in Path(backup["path"], "files").rglob("standin.bson")]
    assert copied, backup
    copied[0].write_bytes(b"\0" * 64)  # the file copy no longer matches its checksum

    result = rig.cli("6.0", "restore", "docs", str(backup["id"]), "--accept-data-loss")
    assert result.code == 0, result.output
    assert "restoring its logical dump instead" in result.output
    assert fcv(instance, "5.0") == {"version": "5.0"}
    assert content(instance, "5.0") == before


def test_the_pymongo_dump_round_trip_in_mongodumps_layout(tmp_path: Path) -> None:
    """The plugin's own dump of the full corpus, loaded by an empty server, reads the same by
    the corpus digest: every BSON type, options, views, indexes, GridFS, users and roles."""
    from nixos_migrate_mongodb import dump
    from nixos_migrate_mongodb.server import Server

    source = make_instance(tmp_path / "a", "6.0")
    target = Instance(tmp_path / "b" / "mongodb").create()
    dest = tmp_path / "dump"
    dest.mkdir()
    with source.running("6.0") as client:
        expected = fingerprint(client)
        server = Server("6.0", source.db_path, source.run_dir / "test.sock", source.run_dir / "test.log")
        manifest = dump.write(server, dest, NullProgress())
        server.close()
    assert (dest / "shop" / "orders.bson").stat().st_size > 1 << 20
    meta = json.loads((dest / "shop" / "customers.metadata.json").read_text())
    assert "$jsonSchema" in json.dumps(meta["options"]) and {i["name"] for i in meta["indexes"]} >= {"email_unique"}
    assert {e["name"] for e in manifest["collections"] if e["type"] == "view"} == {"big_orders", "big_open_orders"}
    with target.running("6.0") as client:
        server = Server("6.0", target.db_path, target.run_dir / "test.sock", target.run_dir / "test.log")
        dump.load(server, dest, NullProgress(), batch=500)
        server.close()
        assert fingerprint(client) == expected


def test_a_full_disk_is_refused_before_anything_changes(tmp_path: Path) -> None:
    from nixos_migrate.testing import provision

    (tmp_path / "disk").mkdir()
    with provision.loop_filesystem("ext4", tmp_path / "disk", 48) as mnt:
        instance = make_instance(mnt, "5.0", orders=200, big=False)
        before = content(instance, "5.0")
        rig = Rig(tmp_path, instance)
        result = rig.cli("6.0", "up")
        assert result.code == 3, result.output
        assert f"room in {instance.db_path}" in result.stderr and "MiB needed" in result.stderr
        assert fcv(instance, "5.0") == {"version": "5.0"}
        assert content(instance, "5.0") == before
