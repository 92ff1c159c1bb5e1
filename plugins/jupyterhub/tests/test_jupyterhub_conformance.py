# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The jupyterhub plugin passes the conformance suite on real JupyterHub releases: 5.5 -> 6.1
(alembic reverses it). 4.1 -> 5.5 is left out: 5.5.4's downgrade scripts do not run with the
libraries it installs today, which test_jupyterhub_upgrade covers (refused, then restored)."""

from __future__ import annotations

import json
from pathlib import Path

from jupyterhub_env import Instance as Hub
from jupyterhub_env import digest, make_database, revision

from nixos_migrate.testing.conformance import Instance, PluginConformance


class TestJupyterhubConformance(PluginConformance):
    plugin = "jupyterhub"
    hops = [("5.5", "6.1")]
    accept = ["5.5"]  # the down step's warning: what 6.1 added is dropped

    def create(self, root: Path, version: str | None) -> Instance:
        hub = Hub(root / "jupyterhub").create() if version is None else make_database(root, version, users=40)
        return Instance(settings=hub.settings(), spec={"user": hub.user.pw_name}, data={"hub": hub})

    def fingerprint(self, instance: Instance) -> str:
        hub: Hub = instance.data["hub"]
        if not hub.database.is_file():
            return "no database"
        return f"{revision(hub)}: {json.dumps(digest(hub), sort_keys=True)}"
