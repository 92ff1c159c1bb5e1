"""MariaDB upgrade and downgrade: nixos-migrate against the bare procedure, side by side.

    sudo .venv/bin/python benchmarks/mysql_upgrade.py [--size-mb 1024] [--rounds 3] [--only up|down]
        [--filesystem xfs|btrfs]

A MariaDB 10.11 data directory with `--size-mb` of InnoDB rows (plus the test corpus's small
objects), shut down slowly; every contender works on its own copy of it, synced, with the page
cache emptied and that copy and the binaries read back in first, so all start from the same
memory. Pairs run next to each other in an order that alternates per round:

- up, 10.11 -> 11.8: the bare procedure (the old server started and stopped with
  `innodb_fast_shutdown = 0`, the new server started, `mariadb-upgrade`, stopped) against
  `nixos-migrate up` (backup with fingerprint, the upgrade, the checks after it, verify), and,
  for information, the bare procedure with the restart `mariadb-upgrade`'s manual asks for;
- down, 11.8 -> 10.11: `mariadb-dump --all-databases | mariadb` into a fresh 10.11 data
  directory (install-db, server started, load, stopped) against `nixos-migrate down`.

Targets (issue 18): up <= 1.2x the bare procedure; down <= 1.0x dump | load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nixos_migrate.testing import provision
from nixos_migrate_mysql.testing import Instance, RunningServer, mariadb

OLD, NEW = "10.11", "11.8"
ROW_BYTES = 1000


def build(root: Path, size_mb: int) -> Instance:
    instance = Instance(root / "pristine", OLD).create()
    rows = size_mb * (1 << 20) // (ROW_BYTES + 60)
    with instance.server() as server:
        server.execute(
            "CREATE DATABASE bench; CREATE TABLE bench.items (id INT PRIMARY KEY, payload VARCHAR(1000),"
            " at DATETIME NOT NULL) ENGINE=InnoDB;"
        )
        step = 100_000
        for start in range(0, rows, step):
            end = min(rows, start + step)
            numbers = f"WITH RECURSIVE s(n) AS (SELECT {start + 1} UNION ALL SELECT n + 1 FROM s WHERE n < {end})"
            server.execute(
                "SET SESSION max_recursive_iterations = 1000000; INSERT INTO bench.items "
                + numbers
                + " SELECT n, REPEAT(MD5(n), 31), TIMESTAMP('2024-01-01') + INTERVAL n SECOND FROM s;"
            )
    return instance


def copy_of(pristine: Instance, root: Path, name: str) -> Instance:
    target = root / name
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(pristine.root), str(target)], check=True)
    return Instance(target, pristine.version, pristine.user)


def warm(instance: Instance) -> None:
    """Same memory for every contender: the page cache emptied, its data and the binaries read
    back in, nixos-migrate's modules too."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1\n")
    for tree in [instance.data_dir, *(mariadb(v).resolve() for v in (OLD, NEW))]:
        for path in tree.rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.read_bytes()
    subprocess.run([sys.executable, "-c", "import nixos_migrate.cli, nixos_migrate_mysql.plugin, mysql.connector"],
                   check=True)  # fmt: skip


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def bare_up(instance: Instance) -> None:
    with RunningServer(instance, OLD, slow_shutdown=True):
        pass
    with RunningServer(instance, NEW, slow_shutdown=False) as server:
        subprocess.run(
            [str(mariadb(NEW) / "bin/mariadb-upgrade"), f"--socket={server.socket}", "-u", "root"],
            check=True, capture_output=True,
        )  # fmt: skip


def bare_up_manual(instance: Instance) -> None:
    """The bare procedure with the restart `mariadb-upgrade`'s manual asks for after it ("stop the
    server and restart it so that any changes made to the system tables take effect")."""
    bare_up(instance)
    with RunningServer(instance, NEW, slow_shutdown=False):
        pass


def bare_down(instance: Instance, root: Path) -> None:
    fresh = Instance(root / "bare-down-target", OLD, instance.user).create()
    with RunningServer(instance, NEW, slow_shutdown=False) as source, RunningServer(fresh, OLD, False) as target:
        target.socket = fresh.run_dir / "test.sock"
        dump = subprocess.Popen(
            [str(mariadb(NEW) / "bin/mariadb-dump"), f"--socket={source.socket}", "-u", "root", "--all-databases",
             "--routines", "--events", "--single-transaction", "--hex-blob", "--quick"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        # the older client rejects the newer dump's first line (sandbox mode): what an operator strips too
        strip = subprocess.Popen(["tail", "-n", "+2"], stdin=dump.stdout, stdout=subprocess.PIPE)
        assert dump.stdout is not None
        dump.stdout.close()
        load = subprocess.run(
            [str(mariadb(OLD) / "bin/mariadb"), f"--socket={target.socket}", "-u", "root"], stdin=strip.stdout,
            capture_output=True, check=False,
        )  # fmt: skip
        if dump.wait() or strip.wait() or load.returncode:
            raise RuntimeError(f"dump | load failed: {load.stderr.decode()[-2000:]}")
        target.execute("FLUSH PRIVILEGES")


def nm(instance: Instance, root: Path, target: str, *args: str) -> None:
    manifest = root / f"manifest-{instance.root.name}.json"
    manifest.write_text(
        json.dumps(
            {
                "state_dir": str(root / f"state-{instance.root.name}"),
                "backup_dir": str(root / f"backups-{instance.root.name}"),
                "services": {
                    "db": {"plugin": "mysql", "target": target, "user": instance.user.pw_name,
                           "settings": instance.settings((OLD, NEW))}
                },
            }
        )
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "nixos_migrate.cli", "-m", str(manifest), *args], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if os.environ.get("BENCH_PHASES"):
        print("\n".join(line for line in result.stderr.splitlines() if "done in" in line), file=sys.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"nixos-migrate {' '.join(args)} failed:\n{result.stderr[-3000:]}")


@contextlib.contextmanager
def workspace(filesystem: str | None, size_mb: int) -> Iterator[Path]:
    """A directory under /var/tmp, or on a fresh loop-mounted `filesystem` there (xfs: reflink
    clones, btrfs) with room for the copies and the backups."""
    base = Path(tempfile.mkdtemp(prefix="nm-mysql-bench-", dir="/var/tmp"))
    provision.traversable(base)
    try:
        if filesystem is None:
            yield base
        else:
            with provision.loop_filesystem(filesystem, base, size_mb * 10 + 4096) as mnt:
                provision.traversable(mnt)
                yield mnt
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("up", "down"), help="run one pair of contenders, not both")
    parser.add_argument(
        "--filesystem", choices=("xfs", "btrfs"), help="run on a loop-mounted filesystem of this kind (clones)"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (servers run as an unprivileged user; the page cache is emptied)", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {"up": [], "up-manual": [], "down": []}
    with workspace(args.filesystem, args.size_mb) as root:
        started = time.monotonic()
        pristine = build(root, args.size_mb)
        size = sum(p.stat().st_size for p in pristine.data_dir.rglob("*") if p.is_file())
        print(f"MariaDB {OLD} data directory: {size / (1 << 30):.2f} GiB (built in {time.monotonic() - started:.0f} s)")
        for round_no in range(args.rounds):
            got: dict[str, float] = {}
            up_pair: list[tuple[str, Callable[[Instance], None]]] = [
                (BARE_UP, bare_up),
                ("nixos-migrate up", lambda i: nm(i, root, NEW, "up")),
                (BARE_UP_MANUAL, bare_up_manual),
            ]
            for name, fn in (up_pair if round_no % 2 == 0 else up_pair[::-1]) if args.only != "down" else []:
                instance = copy_of(pristine, root, "up-" + str(len(got)))
                for kind in ("state", "backups"):
                    shutil.rmtree(root / f"{kind}-{instance.root.name}", ignore_errors=True)
                warm(instance)
                got[name] = timed(lambda fn=fn, instance=instance: fn(instance))  # type: ignore[misc]
            if args.only == "up":
                _record(got, times, ratios, round_no)
                continue
            # the downgrades start from an upgraded copy (nixos-migrate's own, so its journal knows 11.8)
            upgraded = copy_of(pristine, root, "upgraded")
            for kind in ("state", "backups"):
                shutil.rmtree(root / f"{kind}-upgraded", ignore_errors=True)
            nm(upgraded, root, NEW, "up")
            down_pair: list[tuple[str, Callable[[Instance], None]]] = [
                (BARE_DOWN, lambda i: bare_down(i, root)),
                ("nixos-migrate down", lambda i: nm(i, root, NEW, "down", "db", "--to", OLD)),
            ]
            for name, fn in down_pair if round_no % 2 == 0 else down_pair[::-1]:
                shutil.rmtree(root / "bare-down-target", ignore_errors=True)
                instance = copy_of(upgraded, root, "down-" + str(len(got)))
                if name.startswith("nixos"):  # its own journal and backups, as after its up
                    for kind in ("state", "backups"):
                        shutil.rmtree(root / f"{kind}-{instance.root.name}", ignore_errors=True)
                        copy = root / f"{kind}-{instance.root.name}"
                        subprocess.run(["cp", "-a", str(root / f"{kind}-upgraded"), str(copy)], check=True)
                warm(instance)
                got[name] = timed(lambda fn=fn, instance=instance: fn(instance))  # type: ignore[misc]
            _record(got, times, ratios, round_no)
    print()
    print("| contender | seconds (median) | range |")
    print("|---|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |")
    print()
    for kind, label, target in (
        ("up", "up / bare up", "1.2x"),
        ("up-manual", "up / bare up with the manual's restart", "none"),
        ("down", "down / dump | load", "1.0x"),
    ):
        if ratios[kind]:
            print(f"{label}: median of rounds {statistics.median(ratios[kind]):.2f}x (target {target}); rounds "
                  + ", ".join(f"{r:.2f}x" for r in ratios[kind]))  # fmt: skip
    return 0


BARE_UP, BARE_UP_MANUAL, BARE_DOWN = (
    "bare up (slow shutdown, 11.8 started, mariadb-upgrade)",
    "bare up, restarted after mariadb-upgrade as its manual says",
    "bare down (mariadb-dump | mariadb into a fresh 10.11)",
)


def _record(
    got: dict[str, float], times: dict[str, list[float]], ratios: dict[str, list[float]], round_no: int
) -> None:
    """Keep one round's times and its ratios (of the pairs it ran), and print them."""
    shown = []
    for kind, bare, ours in (
        ("up", BARE_UP, "nixos-migrate up"),
        ("up-manual", BARE_UP_MANUAL, "nixos-migrate up"),
        ("down", BARE_DOWN, "nixos-migrate down"),
    ):
        if ours in got and bare in got:
            ratios[kind].append(got[ours] / got[bare])
            shown.append(f"{kind} {ratios[kind][-1]:.2f}x")
    for name, seconds in got.items():
        times.setdefault(name, []).append(seconds)
    print(f"round {round_no + 1}: " + ", ".join(f"{n} {s:.1f} s" for n, s in got.items()) + "; " + ", ".join(shown),
          flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
