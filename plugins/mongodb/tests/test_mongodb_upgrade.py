"""Upgrades and downgrades of a production-shaped MongoDB corpus through the CLI, on the stand-in
mongod (mongod_standin.py: no real MongoDB server exists on these machines; the plugin's code
path is the production one, pymongo over the wire protocol against a process it starts).

Content is compared by the corpus's own digest (mongo_corpus.digest), read independently of the
plugin's fingerprint.
"""

from __future__ import annotations

import json
from pathlib import Path

from mongo_env import Rig, content, fcv, make_instance


def test_up_from_4_4_to_8_0_one_major_at_a_time(tmp_path: Path) -> None:
    instance = make_instance(tmp_path, "4.4")
    before = content(instance, "4.4")
    rig = Rig(tmp_path, instance)
    planned = rig.cli("8.0", "plan", "--json")
    assert planned.code == 0, planned.output
    steps = planned.json[0]["steps"]
    assert [(s["from_version"], s["to_version"]) for s in steps] == [
        ("4.4", "5.0"), ("5.0", "6.0"), ("6.0", "7.0"), ("7.0", "8.0")]  # fmt: skip
    assert all("setFeatureCompatibilityVersion" in s["description"] for s in steps)
    assert ["confirm: true" in s["description"] for s in steps] == [False, False, True, True]

    result = rig.cli("8.0", "up", "--json")
    assert result.code == 0, result.output
    assert content(instance, "8.0") == before
    assert fcv(instance, "8.0") == {"version": "8.0"}
    status = rig.cli("8.0", "status", "--json")
    assert status.json[0]["data_version"] == "8.0", status.output
    verify = rig.cli("8.0", "verify", "--json")
    assert verify.code == 0, verify.output
    checks = {c["name"]: c for c in verify.json["docs"]}
    assert checks["featureCompatibilityVersion is 8.0"]["ok"]
    assert any(name.startswith("validate of ") and c["ok"] for name, c in checks.items()), checks


def test_down_from_7_0_restores_the_backup_and_below_lowers_the_fcv(tmp_path: Path) -> None:
    """7.0 -> 6.0 has no binary downgrade: the backup taken before 6.0 -> 7.0 comes back. 6.0 ->
    5.0 lowers the FCV on the data as it is, so a document written after the upgrade stays."""
    instance = make_instance(tmp_path, "5.0", orders=5000)
    at_5 = content(instance, "5.0")
    rig = Rig(tmp_path, instance)
    assert rig.cli("7.0", "up").code == 0
    with instance.running("7.0") as client:
        client.shop.orders.insert_one({"_id": "written at 7.0"})

    refused = rig.cli("7.0", "down", "docs", "--to", "6.0")
    assert refused.code != 0
    assert "accept-data-loss" in refused.stderr
    planned = rig.cli("7.0", "plan", "--json")
    assert planned.json[0]["steps"] == []

    down = rig.cli("7.0", "down", "docs", "--to", "6.0", "--accept-data-loss", "--json")
    assert down.code == 0, down.output
    assert fcv(instance, "6.0") == {"version": "6.0"}
    with instance.running("6.0") as client:
        assert client.shop.orders.find_one({"_id": "written at 7.0"}) is None  # the backup's data
        client.shop.orders.insert_one({"_id": "written at 6.0"})
    at_6 = content(instance, "6.0")

    down = rig.cli("6.0", "down", "docs", "--to", "5.0", "--json")
    assert down.code == 0, down.output
    assert fcv(instance, "5.0") == {"version": "5.0"}
    assert content(instance, "5.0") == at_6
    with instance.running("5.0") as client:
        client.shop.orders.delete_one({"_id": "written at 6.0"})
    assert content(instance, "5.0") == at_5
    assert rig.cli("5.0", "status", "--json").json[0]["data_version"] == "5.0"


def test_replica_set_member_gets_the_rolling_order_and_is_not_touched(tmp_path: Path) -> None:
    instance = make_instance(tmp_path, "6.0", orders=100, big=False)
    rig = Rig(tmp_path, instance, replica_set="rs0")
    planned = rig.cli("7.0", "plan", "--json")
    step = planned.json[0]["steps"][0]
    rolling = step["data"]["rolling"]
    assert "secondary" in rolling[1] and "rs.stepDown()" in rolling[2]
    assert "setFeatureCompatibilityVersion '7.0', confirm: true" in rolling[-1]
    before = content(instance, "6.0")
    refused = rig.cli("7.0", "up")
    assert refused.code == 3, refused.output
    assert "replica set 'rs0'" in refused.stderr
    assert content(instance, "6.0") == before
    assert json.loads(json.dumps(fcv(instance, "6.0"))) == {"version": "6.0"}
