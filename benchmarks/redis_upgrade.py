"""Redis upgrade and downgrade: nixos-migrate against the bare procedure, side by side.

    sudo .venv/bin/python benchmarks/redis_upgrade.py [--size-mb 1024] [--rounds 3] [--only up|down]

A Redis 7.0 data directory with `--size-mb` of values (1 KiB strings of random bytes, which the
RDB cannot compress, plus hashes, lists and keys with expiries); every contender works on its own copy, synced, with
the page cache emptied and that copy and the binaries read back in first. Pairs run next to each
other in an order that alternates per round:

- up, 7.0 -> 8.0: the bare procedure (the old server loads the data, SAVE, stops; the new server
  starts and loads it; stops) against `nixos-migrate up` (backup with fingerprint, the load,
  the comparison, SAVE, verify);
- down, 8.0 -> 7.0: `redis-cli --rdb` from the 8.0 server and a load of that file by 8.0 (a
  copy of every key at the physical limit, on the same version) against `nixos-migrate down`.

Targets (issue 21): up <= 1.2x the bare procedure; down <= 1.5x `--rdb` + load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from nixos_migrate.testing import provision
from nixos_migrate.testing.manifests import ManifestBuilder
from nixos_migrate_redis.testing import Instance, package

OLD, NEW = "7.0", "8.0"


def build(root: Path, size_mb: int) -> Instance:
    instance = Instance(root / "pristine").create()
    keys = size_mb * (1 << 20) // 1100
    # random bytes: the RDB compresses each value on its own, and these do not compress
    pool = os.urandom(1 << 22)
    with instance.running(OLD) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(keys):
            offset = (i * 7919) % ((1 << 22) - 1000)
            pipe.set(f"bench:{i}", pool[offset : offset + 1000])
            if i % 5000 == 4999:
                pipe.execute()
        for i in range(2000):
            pipe.hset(f"hash:{i}", mapping={f"f{j}": f"v{j}" for j in range(50)})
            pipe.rpush(f"list:{i}", *range(50))
            pipe.set(f"ttl:{i}", "x", px=7 * 86_400_000 + i)
        pipe.execute()
    return instance


def copy_of(pristine: Instance, root: Path, name: str) -> Instance:
    target = root / name
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(pristine.root), str(target)], check=True)
    return Instance(target, pristine.user)


def warm(instance: Instance) -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")
    for tree in [instance.data_dir, *(package(v).resolve() for v in (OLD, NEW))]:
        for path in tree.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.read_bytes()


def timed(work: Callable[[], None]) -> float:
    start = time.monotonic()
    work()
    return time.monotonic() - start


def bare_up(instance: Instance) -> None:
    with instance.running(OLD):  # loads, then SAVE as a stopping service does
        pass
    with instance.running(NEW, save=False):
        pass


def bare_down(instance: Instance, scratch: Path) -> None:
    with instance.running(NEW, save=False) as client:
        sock = client.connection_pool.connection_kwargs["path"]
        target = scratch / "dump.rdb"
        subprocess.run([str(package(NEW) / "bin/redis-cli"), "-s", sock, "--rdb", str(target)],
                       check=True, capture_output=True)  # fmt: skip
    loaded = Instance(scratch / "loaded").create()
    shutil.copyfile(target, loaded.data_dir / "dump.rdb")
    provision.chown_tree(loaded.root, loaded.user)
    with loaded.running(NEW, save=False):
        pass


def migrate(instance: Instance, root: Path, target: str) -> None:
    """`nixos-migrate up` to `target` (an older one plans a down step)."""
    root.mkdir(parents=True, exist_ok=True)
    builder = ManifestBuilder(root)
    builder.service("cache", plugin="redis", target=target, user=instance.user.pw_name,
                    settings=instance.settings((OLD, NEW)))  # fmt: skip
    argv = [sys.executable, "-m", "nixos_migrate.cli", "-m", str(builder.write()), "up"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"nixos-migrate up to {target} failed:\n{result.stdout}{result.stderr}")


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="redis-bench-", dir="/var/tmp") as tmp:
        yield provision.traversable(Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["up", "down"])
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with workdir() as root:
        pristine = build(root, args.size_mb)
        size = sum(p.stat().st_size for p in pristine.data_dir.rglob("*") if p.is_file())
        print(f"data: {size / (1 << 30):.2f} GiB in {pristine.data_dir}")
        down_source: Instance | None = None
        if args.only != "up":
            down_source = copy_of(pristine, root, "down-source")
            migrate(down_source, root / "m-prep", NEW)
        for r in range(args.rounds):
            pairs: list[tuple[str, Callable[[], Any]]] = []
            if args.only != "down":
                a, b = copy_of(pristine, root, "bare-up"), copy_of(pristine, root, "nm-up")
                pairs += [("bare up", partial(bare_up, a)),
                          ("nixos-migrate up", partial(migrate, b, root / f"m-up-{r}", NEW))]  # fmt: skip
            if down_source is not None:
                c, d = copy_of(down_source, root, "bare-down"), copy_of(down_source, root, "nm-down")
                (root / "scratch").mkdir(exist_ok=True)
                scratch = provision.traversable(Path(tempfile.mkdtemp(dir=root / "scratch")))
                pairs += [("rdb + load", partial(bare_down, c, scratch)),
                          ("nixos-migrate down", partial(migrate, d, root / f"m-down-{r}", OLD))]  # fmt: skip
            order = pairs if r % 2 == 0 else [p for i in range(0, len(pairs), 2) for p in (pairs[i + 1], pairs[i])]
            for name, work in order:
                instance = {"bare up": "bare-up", "nixos-migrate up": "nm-up", "rdb + load": "bare-down",
                            "nixos-migrate down": "nm-down"}[name]  # fmt: skip
                warm(Instance(root / instance))
                seconds = timed(work)
                results.setdefault(name, []).append(seconds)
                print(f"round {r + 1}: {name}: {seconds:.1f} s", flush=True)
    print()
    for ours, theirs, target in (("nixos-migrate up", "bare up", 1.2), ("nixos-migrate down", "rdb + load", 1.5)):
        if ours in results:
            mine, bare = statistics.median(results[ours]), statistics.median(results[theirs])
            print(f"{ours}: {mine:.1f} s, {theirs}: {bare:.1f} s, ratio {mine / bare:.2f}x (target <= {target}x)")


if __name__ == "__main__":
    main()
