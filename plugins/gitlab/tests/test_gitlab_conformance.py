# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The gitlab plugin passes the conformance suite: 17.3 -> 17.5 and 17.5 -> 17.8, on a real
PostgreSQL, GitLab's commands played by the stand-in (no GitLab exists here), every hop compared
by a digest of the database and the state dir read without the plugin."""

from __future__ import annotations

import json
from pathlib import Path

from gitlab_env import Gitlab, make_gitlab, settings

from nixos_migrate.testing import provision
from nixos_migrate.testing.conformance import Instance, PluginConformance


class TestGitlabConformance(PluginConformance):
    plugin = "gitlab"
    hops = [("17.3", "17.5"), ("17.5", "17.8")]

    def create(self, root: Path, version: str | None) -> Instance:
        if version is None:
            gitlab = Gitlab(root / "gitlab", provision.server_user()).create()
        else:
            gitlab = make_gitlab(root, version, rows=2_000)
        return Instance(settings=settings(gitlab), spec={"user": gitlab.user.pw_name}, data={"gitlab": gitlab})

    def cleanup(self, instance: Instance) -> None:
        instance.data["gitlab"].stop()

    def fingerprint(self, instance: Instance) -> str:
        gitlab: Gitlab = instance.data["gitlab"]
        return json.dumps(gitlab.content(), sort_keys=True)
