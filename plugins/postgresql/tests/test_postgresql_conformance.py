# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The postgresql plugin passes the conformance suite on a real cluster holding the kitchen-sink corpus."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from conftest import KITCHEN_SINK, Cluster, make_cluster, packages

from nixos_migrate.testing import provision
from nixos_migrate.testing.conformance import Instance, PluginConformance


class TestPostgresqlConformance(PluginConformance):
    plugin = "postgresql"
    hops = [("16", "17")]

    def create(self, root: Path, version: str | None) -> Instance:
        user = provision.server_user()
        provision.traversable(root)
        sock = Path(tempfile.mkdtemp(prefix="nm-", dir="/tmp"))
        os.chown(sock, user.pw_uid, user.pw_gid)
        (root / "pg").mkdir()
        (root / "pg" / "sock").symlink_to(sock)
        data = root / "pg" / "data"
        if version is not None:
            make_cluster(root / "pg", user, version, data, KITCHEN_SINK)
        provision.chown_tree(root / "pg", user)
        settings = {
            "data_dir": str(data),
            "packages": packages("16", "17"),
            "socket_dir": str(sock),
            "port": provision.free_port(),
        }
        return Instance(
            settings=settings,
            spec={"user": user.pw_name},
            data={"data": data, "sock": root / "pg" / "sock", "user": user, "cleanup": sock},
        )

    def fingerprint(self, instance: Instance) -> str:
        data: Path = instance.data["data"]
        major = (data / "PG_VERSION").read_text().strip()
        return Cluster(major, data, instance.data["sock"], instance.data["user"]).offline_content()

    def cleanup(self, instance: Instance) -> None:
        shutil.rmtree(instance.data["cleanup"], ignore_errors=True)
