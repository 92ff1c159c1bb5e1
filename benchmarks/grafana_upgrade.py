"""Grafana database upgrade: nixos-migrate against a bare start of the new Grafana, side by side.

    sudo .venv/bin/python benchmarks/grafana_upgrade.py [--dashboards 1000] [--rounds 3]

No Grafana server exists on these machines: both contenders run the tests' stand-in Grafana
(plugins/grafana/tests/grafana_standin.py, Grafana's published migration ids), so the ratio says
what nixos-migrate adds around Grafana's own migration, not how fast Grafana migrates. A 10.4
database with `--dashboards` dashboards (and the tests' corpus around them: users, teams,
folders, versions, data sources, 20x as many annotations, alert rules), each contender on its own
copy, in an order that alternates per round:

- bare: Grafana 11.6 started on the database until `/api/health` answers, then stopped (what
  `systemctl start grafana` after the switch does);
- nixos-migrate up 10.4 -> 11.6: the two releases' migration lists read from their packages (a
  first run on a machine does that once per package), backup (SQLite backup API, fingerprint by
  column), the same start, the comparison, and verify (11.6 started on a copy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "grafana" / "tests"))

from grafana_env import Instance, Rig, make_database
from sidebyside import copy_tree, medians

from nixos_migrate.testing import provision

OLD, NEW = "10.4", "11.6"


def clone(pristine: Instance, root: Path) -> Instance:
    return Instance(copy_tree(pristine.root, root))


def ours(instance: Instance, root: Path) -> None:
    result = Rig(root, instance, versions=(OLD, NEW)).cli(NEW, "up")
    if result.code != 0:
        raise SystemExit(f"nixos-migrate up failed:\n{result.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dashboards", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grafana-bench-") as tmp:
        base = provision.traversable(Path(tmp))
        pristine = make_database(base / "pristine", OLD, dashboards=args.dashboards, annotations=args.dashboards * 20)
        print(f"data: {args.dashboards} dashboards, {pristine.database.stat().st_size >> 20} MiB")
        contenders: dict[str, Callable[[Path], object]] = {
            "bare start": lambda w: clone(pristine, w / "bare" / "grafana").grafana(NEW),
            "nixos-migrate up": lambda w: ours(clone(pristine, w / "ours" / "grafana"), w / "ours"),
        }
        med = medians(contenders, args.rounds, base)
        ours_s, bare_s = med["nixos-migrate up"], med["bare start"]
        print(f"\nup {OLD} -> {NEW}: nixos-migrate {ours_s:.2f} s, bare {bare_s:.2f} s, {ours_s / bare_s:.2f}x")


if __name__ == "__main__":
    main()
