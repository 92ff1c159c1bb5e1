"""MongoDB upgrade and logical copy: nixos-migrate against the bare procedure, side by side, on
the stand-in mongod of the plugin's tests (no real MongoDB server exists on these machines).

    sudo .venv/bin/python benchmarks/mongodb_upgrade.py [--docs 100000] [--rounds 3]

A 6.0 dbpath holding `--docs` order documents (plus 5 % of them with every BSON type); every
contender works on its own copy. Pairs run next to each other in an order that alternates per
round:

- up, 6.0 -> 7.0: the bare procedure (mongod 7.0 on the data, `setFeatureCompatibilityVersion:
  "7.0", confirm: true`, shutdown) against `nixos-migrate up` (file backup, validate, fingerprint
  and dump by 6.0, the step, validate and compare by 7.0);
- logical copy: the plugin's pymongo dump and restore (what backs up and restores data when the
  package has no mongodump) against a plain pymongo copy (`find` -> `insert_many` per collection,
  indexes after), both from the 6.0 data into an empty 6.0.

The stand-in is Python: the numbers show the plugin's passes over the data against the fewest a
procedure needs, not a real mongod's speed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "mongodb" / "tests"))

from mongo_corpus import _values
from mongo_env import Instance, Rig
from sidebyside import copy_tree

from nixos_migrate.progress import NullProgress
from nixos_migrate.testing import provision

OLD, NEW = "6.0", "7.0"


def build(root: Path, docs: int) -> Instance:
    instance = Instance(root / "pristine").create()
    with instance.running(OLD) as client:
        batch = []
        for i in range(docs):
            doc: dict[str, Any] = {"_id": i, "customer": f"c{i % 5000}", "total": i * 100, "note": "x" * 200}
            if i % 20 == 0:
                doc |= _values(i)
            batch.append(doc)
            if len(batch) == 5000:
                client.shop.orders.insert_many(batch)
                batch = []
        if batch:
            client.shop.orders.insert_many(batch)
        client.shop.orders.create_index("customer", name="customer")
    return instance


def clone(pristine: Instance, root: Path) -> Instance:
    return Instance(copy_tree(pristine.root, root))


def bare_up(instance: Instance) -> None:
    with instance.running(NEW) as client:
        client.admin.command({"setFeatureCompatibilityVersion": NEW, "confirm": True})


def ours_up(instance: Instance, root: Path) -> None:
    result = Rig(root, instance, versions=(OLD, NEW)).cli(NEW, "up")
    if result.code != 0:
        raise SystemExit(f"nixos-migrate up failed:\n{result.output}")


def plain_copy(source: Instance, target: Instance) -> None:
    with source.running(OLD) as src, target.running(OLD) as dst:
        for db in src.list_database_names():
            if db in ("admin", "local", "config"):
                continue
            for name in src[db].list_collection_names():
                docs = list(src[db][name].find())
                if docs:
                    dst[db][name].insert_many(docs)
                for spec in src[db][name].list_indexes():
                    if spec["name"] != "_id_":
                        dst[db][name].create_index(list(spec["key"].items()), name=spec["name"])


def ours_copy(source: Instance, target: Instance, dump_dir: Path) -> None:
    from nixos_migrate_mongodb import dump
    from nixos_migrate_mongodb.server import Server

    dump_dir.mkdir()
    with source.running(OLD):
        server = Server(OLD, source.db_path, source.run_dir / "test.sock", source.run_dir / "test.log")
        dump.write(server, dump_dir, NullProgress())
        server.close()
    with target.running(OLD):
        server = Server(OLD, target.db_path, target.run_dir / "test.sock", target.run_dir / "test.log")
        dump.load(server, dump_dir, NullProgress(), batch=1000)
        server.close()


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    provision.server_user()
    with tempfile.TemporaryDirectory(prefix="mongodb-bench-") as tmp:
        base = provision.traversable(Path(tmp))
        pristine = build(base, args.docs)
        size = sum(p.stat().st_size for p in pristine.db_path.iterdir() if p.is_file())
        print(f"data: {args.docs} documents, {size / (1 << 20):.0f} MiB on disk")
        results: dict[str, list[float]] = {"bare up": [], "nixos-migrate up": [], "plain copy": [], "dump+restore": []}
        for r in range(args.rounds):
            work = base / f"round-{r}"
            contenders = {
                "bare up": lambda w=work: bare_up(clone(pristine, w / "bare")),
                "nixos-migrate up": lambda w=work: ours_up(clone(pristine, w / "ours" / "mongodb"), w / "ours"),
                "plain copy": lambda w=work: plain_copy(clone(pristine, w / "src1"), Instance(w / "dst1").create()),
                "dump+restore": lambda w=work: ours_copy(
                    clone(pristine, w / "src2"), Instance(w / "dst2").create(), w / "dump"
                ),
            }
            pairs = [["bare up", "nixos-migrate up"], ["plain copy", "dump+restore"]]
            order = [name for pair in pairs for name in (pair if r % 2 == 0 else pair[::-1])]
            for name in order:
                results[name].append(timed(contenders[name]))
                print(f"round {r + 1} {name}: {results[name][-1]:.2f} s", flush=True)
            shutil.rmtree(work)
        med = {name: statistics.median(times) for name, times in results.items()}
        print()
        print(f"up {OLD} -> {NEW}: nixos-migrate {med['nixos-migrate up']:.2f} s, bare {med['bare up']:.2f} s, "
              f"{med['nixos-migrate up'] / med['bare up']:.2f}x")  # fmt: skip
        print(f"logical copy: dump+restore {med['dump+restore']:.2f} s, plain pymongo copy {med['plain copy']:.2f} s, "
              f"{med['dump+restore'] / med['plain copy']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
