# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The mysql plugin passes the conformance suite on real MariaDB data: 10.5 -> 10.11 and
10.11 -> 11.8, each compared by the corpus's independent digest."""

from __future__ import annotations

import json
from pathlib import Path

from mariadb_env import content, make_instance

from nixos_migrate.testing.conformance import Instance, PluginConformance
from nixos_migrate_mysql import installation
from nixos_migrate_mysql.testing import Instance as Mariadb


class TestMysqlConformance(PluginConformance):
    plugin = "mysql"
    hops = [("10.5", "10.11"), ("10.11", "11.8")]

    def create(self, root: Path, version: str | None) -> Instance:
        if version is None:
            instance = Mariadb(root / "mysql", "10.5")
            instance.root.mkdir(parents=True)
        else:
            # no history rows: 10.5 cannot take them from a dump (a refusal tested on its own)
            instance = make_instance(root, version, rows=3000, history=False)
        return Instance(
            settings=instance.settings(("10.5", "10.11", "11.8")),
            spec={"user": instance.user.pw_name},
            data={"instance": instance},
        )

    def fingerprint(self, instance: Instance) -> str:
        mariadb: Mariadb = instance.data["instance"]
        release = installation.upgrade_info(mariadb.data_dir)
        if release is None:
            return "no data"
        version = ".".join(release.split(".")[:2])
        return f"{version}: {json.dumps(content(mariadb, version), sort_keys=True)}"
