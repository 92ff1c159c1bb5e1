# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The mongodb plugin passes the conformance suite on the stand-in mongod (no real MongoDB server
exists on these machines; see mongod_standin.py): 4.4 -> 5.0 (down lowers the FCV) and
6.0 -> 7.0 (down restores the backup: no binary downgrade from 7.0), each compared by the FCV and
the corpus's independent digest."""

from __future__ import annotations

from pathlib import Path

from mongo_env import Instance as Mongo
from mongo_env import make_instance, state

from nixos_migrate.testing.conformance import Instance, PluginConformance


class TestMongodbConformance(PluginConformance):
    plugin = "mongodb"
    hops = [("4.4", "5.0"), ("6.0", "7.0")]

    def create(self, root: Path, version: str | None) -> Instance:
        instance = Mongo(root / "mongodb").create() if version is None else make_instance(root, version, orders=2000,
                                                                                           big=False)  # fmt: skip
        return Instance(settings=instance.settings(), spec={"user": instance.user.pw_name},
                        data={"instance": instance})  # fmt: skip

    def fingerprint(self, instance: Instance) -> str:
        return state(instance.data["instance"])
