"""JupyterHub database upgrade: nixos-migrate against the bare `jupyterhub upgrade-db`, side by side.

    sudo .venv/bin/python benchmarks/jupyterhub_upgrade.py [--users 5000] [--rounds 3]

A 5.5 database written by the hub's own ORM with `--users` users (and their groups, roles, API
tokens and named servers, as the tests' corpus), each contender on its own copy, in an order that
alternates per round:

- bare: `jupyterhub upgrade-db` of 6.1.1 (which copies the SQLite file beside itself first);
- nixos-migrate up 5.5 -> 6.1: backup (SQLite backup API, fingerprint by column), the same
  upgrade-db, the comparison, and verify (the real 6.1.1 hub started on a copy, `/hub/api`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "jupyterhub" / "tests"))

from jupyterhub_env import Instance, Rig, make_database, package
from sidebyside import copy_tree, medians

from nixos_migrate.testing import provision

OLD, NEW = "5.5", "6.1"


def clone(pristine: Instance, root: Path) -> Instance:
    return Instance(copy_tree(pristine.root, root))


def bare(instance: Instance) -> None:
    hub = package(NEW) / "bin"
    argv = [str(hub / "jupyterhub"), "upgrade-db", f"--db=sqlite:///{instance.database}"]
    provision.run_as(instance.user, ["env", f"PATH={hub}:/usr/bin:/bin", *argv])


def ours(instance: Instance, root: Path) -> None:
    result = Rig(root, instance, versions=(OLD, NEW)).cli(NEW, "up")
    if result.code != 0:
        raise SystemExit(f"nixos-migrate up failed:\n{result.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jupyterhub-bench-") as tmp:
        base = provision.traversable(Path(tmp))
        pristine = make_database(base / "pristine", OLD, users=args.users).root
        print(f"data: {args.users} users, {(pristine / 'state' / 'jupyterhub.sqlite').stat().st_size >> 10} KiB")
        contenders: dict[str, Callable[[Path], object]] = {
            "bare upgrade-db": lambda w: bare(clone(Instance(pristine), w / "bare" / "jupyterhub")),
            "nixos-migrate up": lambda w: ours(clone(Instance(pristine), w / "ours" / "jupyterhub"), w / "ours"),
        }
        med = medians(contenders, args.rounds, base)
        ours_s, bare_s = med["nixos-migrate up"], med["bare upgrade-db"]
        print(f"\nup {OLD} -> {NEW}: nixos-migrate {ours_s:.2f} s, bare {bare_s:.2f} s, {ours_s / bare_s:.2f}x")


if __name__ == "__main__":
    main()
