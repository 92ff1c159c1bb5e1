# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""The grafana plugin passes the conformance suite on the stand-in Grafana (no real Grafana server
exists on these machines; see grafana_standin.py): 10.4 -> 11.6, whose down step restores the
backup (Grafana has no down migrations), compared by the log and the test's own digest."""

from __future__ import annotations

import json
from pathlib import Path

from grafana_env import Instance as Grafana
from grafana_env import digest, logged, make_database

from nixos_migrate.testing.conformance import Instance, PluginConformance


class TestGrafanaConformance(PluginConformance):
    plugin = "grafana"
    hops = [("10.4", "11.6")]

    def create(self, root: Path, version: str | None) -> Instance:
        if version is None:
            grafana = Grafana(root / "grafana").create()
        else:
            grafana = make_database(root, version, dashboards=20, annotations=300)
        return Instance(settings=grafana.settings(), spec={"user": grafana.user.pw_name}, data={"grafana": grafana})

    def fingerprint(self, instance: Instance) -> str:
        grafana: Grafana = instance.data["grafana"]
        if not grafana.database.is_file():
            return "no database"
        return f"{sorted(logged(grafana))}: {json.dumps(digest(grafana), sort_keys=True)}"
