"""Benchmark: nixos-migrate's PostgreSQL upgrade against what operators run instead.

    sudo .venv/bin/python benchmarks/postgresql_upgrade.py [--scale 70] [--old 14] [--new 16]
        [--tables 1] [--down-only] [--skip-debian] [--repeat 3]

One run on one ~1 GB cluster (`pgbench -i -s 70`), data in the page cache, each contender on a
fresh copy of the same cluster, in rounds. The pairs issue 4's targets compare (nixos-migrate `up`
with copy and bare `pg_upgrade --copy`; the two downgrades) run side by side, in an order that
alternates from round to round, and every round's ratio is printed: this machine's speed drifts
within minutes, and medians of times taken far apart compare different machines.

- bare `initdb` + `pg_upgrade --copy` and `--link`;
- Debian's `pg_upgradecluster -m upgrade`, `-m link`, `-m dump` (postgresql-common 248 on
  Debian 12 fails for source clusters >= 16, hence 14 -> 16 by default);
- `pg_dumpall | psql` into a new cluster;
- nixos-migrate `up` end to end, service down to service up (pre-checks with `pg_upgrade
  --check`, backup with content fingerprint, upgrade, verify with fingerprint comparison and
  amcheck), with `method = copy` and `method = link`; then, as the NixOS module does once the
  service runs, `nixos-migrate settle` (planner statistics through the running server), timed
  apart together with the server's start, like the manual's `vacuumdb --analyze-in-stages`;
- nixos-migrate `down` (logical, verified table by table) against `pg_dumpall | psql` back into
  the older major (statistics left to `settle` as well; `pg_dumpall | psql` computes none).

`--tables N` adds N - 1 copies of pgbench_accounts (rows and primary key) to the cluster: several
big tables, which a logical copy loads in parallel. `--down-only` runs only what the downgrade
needs (nixos-migrate `up` with copy, then both downgrades).

pg_upgradecluster looks for binaries in /usr/lib/postgresql/<major>/bin only: for the run, that
directory is a symlink to the downloaded build when it does not exist, removed afterwards. Its
cluster configuration lives in a private PG_CLUSTER_CONF_ROOT / PGSYSCONFDIR. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from nixos_migrate.testing import provision
from nixos_migrate_postgresql import scratch
from nixos_migrate_postgresql import testing as servers

REPO = Path(__file__).resolve().parents[1]


class Bench:
    def __init__(self, old: str, new: str, work: Path) -> None:
        self.old, self.new, self.work = old, new, work
        # Debian's cluster tools log to /var/log/postgresql as the owner and expect the superuser
        # to be named like it: use Debian's `postgres` user where postgresql-common made one
        try:
            self.user = pwd.getpwnam("postgres")
        except KeyError:
            self.user = provision.server_user()
        self.prefix = {old: servers.postgresql(old), new: servers.postgresql(new)}
        self.sock = Path(tempfile.mkdtemp(prefix="nm-bench-", dir="/tmp"))
        os.chown(self.sock, self.user.pw_uid, self.user.pw_gid)
        self.env = {"PATH": os.environ["PATH"], "LANG": "C", "HOME": "/"}
        # Debian's cluster tools connect as a superuser named after the cluster's owner
        self.su = self.user.pw_name

    def run(
        self, argv: list[str | Path], cwd: str | None = None, stdin: IO[bytes] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(a) for a in argv],
            env=self.env,
            cwd=cwd or str(self.work),
            check=True,
            capture_output=True,
            stdin=stdin,
            user=self.user.pw_uid,
            group=self.user.pw_gid,
        )

    def bin(self, major: str, tool: str) -> Path:
        return self.prefix[major] / "bin" / tool

    def initdb(self, major: str, data: Path) -> None:
        self.run(list(scratch.initdb_argv(self.prefix[major], data, major, superuser=self.su)))

    @contextlib.contextmanager
    def server(self, major: str, data: Path) -> Iterator[int]:
        port = provision.free_port()
        with scratch.server(self.prefix[major], data, self.sock, port, self.user).start(
            lambda: scratch.accepts(self.prefix[major], self.sock, port), timeout=300
        ):
            yield port

    def copy(self, src: Path, dst: Path, *also_warm: Path) -> None:
        """A fresh copy of the cluster `src` at `dst`, then `warm(dst, *also_warm)`."""
        if dst.exists():
            shutil.rmtree(dst)
        subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
        self.warm(dst, *also_warm)  # which syncs: the copy's writeback must not land in the timed run that follows

    def warm(self, *data: Path) -> None:
        """Give the contender that runs next the memory every contender has: the page cache is
        emptied (the machine's memory was full of the earlier runs' files, and whichever
        contender ran next had the kernel reclaim it while it wrote), then the clusters `data`
        and the programs every contender runs are read back in (a contender that read its
        binaries from the disk took 0.5 s more, measured)."""
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")  # clean pages only
        for tree in [*data, *self.prefix.values()]:
            for path in tree.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    path.read_bytes()
        for prefix in self.prefix.values():
            for tool in ("postgres", "initdb", "pg_upgrade", "pg_dump", "psql"):
                # their shared libraries too
                subprocess.run([prefix / "bin" / tool, "--version"], check=True, capture_output=True)
        warm_imports = "import nixos_migrate.cli, nixos_migrate_postgresql.plugin, psycopg"
        subprocess.run([sys.executable, "-c", warm_imports], check=True)

    def fresh(self, name: str) -> Path:
        path = self.work / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir()
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path


def timed(fn: Callable[..., object], *args: object) -> float:
    start = time.monotonic()
    fn(*args)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--old", default="14")
    parser.add_argument("--new", default="16")
    parser.add_argument("--skip-debian", action="store_true", help="leave out pg_upgradecluster")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every contender; the median is reported")
    parser.add_argument("--tables", type=int, default=1, help="big tables: pgbench_accounts and N - 1 copies of it")
    parser.add_argument("--down-only", action="store_true", help="only nixos-migrate up (copy) and the downgrades")
    parser.add_argument(
        "--direct-copy-above",
        type=lambda v: None if v == "null" else int(v),
        default=64 << 20,
        help="the plugin's direct_copy_above for nixos-migrate down (bytes, or null: every table through pg_dump)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root: servers run as an unprivileged user created for them", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="nm-bench-", dir="/var/tmp"))
    provision.traversable(work)
    b = Bench(args.old, args.new, work)
    os.chown(work, b.user.pw_uid, b.user.pw_gid)
    results: dict[str, list[float]] = {}
    try:
        # the pristine cluster takes minutes to build: kept between runs
        tables = f"-tables{args.tables}" if args.tables > 1 else ""
        cached = Path("/var/tmp") / f"nixos-migrate-bench-pg{args.old}-scale{args.scale}{tables}-{b.su}"
        pristine = cached / "data"
        if not (cached / ".complete").exists():
            shutil.rmtree(cached, ignore_errors=True)
            cached.mkdir()
            os.chown(cached, b.user.pw_uid, b.user.pw_gid)
            create_pristine(b, args, pristine)
            (cached / ".complete").touch()
        size = sum(p.stat().st_size for p in pristine.rglob("*") if p.is_file())
        print(f"cluster: {size / 2**30:.2f} GiB (kept in {cached} for the next run)", flush=True)
        rounds: list[dict[str, float]] = []
        for round_ in range(1, args.repeat + 1):
            print(f"round {round_} of {args.repeat}", flush=True)
            rounds.append(run_contenders(b, args, pristine, results, round_))
        report(results, size, args, rounds)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(b.sock, ignore_errors=True)


#: pgbench_accounts_2 .. _N: the same rows and primary key, N from the setting bench.tables
COPIES_OF_ACCOUNTS = """DO $$ BEGIN
  FOR k IN 2..current_setting('bench.tables')::int LOOP
    EXECUTE format('CREATE TABLE %I (LIKE pgbench_accounts INCLUDING ALL)', 'pgbench_accounts_' || k);
    EXECUTE format('INSERT INTO %I SELECT * FROM pgbench_accounts', 'pgbench_accounts_' || k);
  END LOOP;
END $$"""


def create_pristine(b: Bench, args: argparse.Namespace, pristine: Path) -> None:
    print(f"creating PostgreSQL {args.old} cluster, pgbench scale {args.scale} ...", flush=True)
    b.initdb(args.old, pristine)
    with b.server(args.old, pristine) as port:
        conn: list[str | Path] = ["-h", b.sock, "-p", str(port), "-U", b.su]
        b.run([b.bin(args.old, "pgbench"), "-i", "-q", "-s", str(args.scale), *conn, "postgres"])
        psql = [b.bin(args.old, "psql"), *conn, "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
        b.run([*psql, "-c", f"SET bench.tables = {args.tables}", "-c", COPIES_OF_ACCOUNTS])
        b.run([b.bin(args.old, "psql"), *conn, "-d", "postgres", "-c", "CHECKPOINT"])


def run_contenders(
    b: Bench, args: argparse.Namespace, pristine: Path, results: dict[str, list[float]], round_: int
) -> dict[str, float]:
    """One round of every contender; issue 4's pairs side by side, in an order that alternates
    from round to round, so that each round's ratio compares runs under the same state of the
    machine. Returns this round's ratios."""

    def note(name: str, seconds: float) -> None:
        results.setdefault(name, []).append(seconds)
        print(f"  {name}: {seconds:.1f} s", flush=True)

    ratios: dict[str, float] = {}

    def pair(name: str, mine: Callable[[], float], theirs: Callable[[], float]) -> None:
        """Both right after each other, nixos-migrate first in even rounds; their ratio."""
        if round_ % 2 == 0:
            mine_s = mine()
            ratios[name] = mine_s / theirs()
        else:
            theirs_s = theirs()
            ratios[name] = mine() / theirs_s
        print(f"  this round, {name}: {ratios[name]:.2f}x", flush=True)

    # untimed: the first heavy run of a round, whichever it was, often took 2-5 s longer (a bare
    # `pg_upgrade --copy` 6.2-9.9 s against 4.1-4.8 s later in the same round), binaries cached
    # or not; a warm-up takes that instead of the first of a pair
    old = b.fresh("warm-up") / "old"
    b.copy(pristine, old)
    bare_pg_upgrade(b, old, old.parent / "new", "copy")
    base = b.fresh("nm-copy")
    old, new = base / "pgdata" / args.old, base / "pgdata" / args.new
    manifest = nm_manifest(b, base, old, new, "copy", args.direct_copy_above)

    def nm_copy() -> float:
        old.parent.mkdir()
        os.chown(old.parent, b.user.pw_uid, b.user.pw_gid)
        b.copy(pristine, old)
        downtime, settle = nm_up_then_settle(b, manifest, new)
        note("nixos-migrate up, method copy (end to end)", downtime)
        note("  then, serving: server start + nixos-migrate settle (method copy)", settle)
        return downtime

    def bare_copy() -> float:
        old = b.fresh("bare-copy") / "old"
        b.copy(pristine, old)
        seconds = timed(bare_pg_upgrade, b, old, old.parent / "new", "copy")
        note("pg_upgrade --copy (initdb + pg_upgrade)", seconds)
        return seconds

    if args.down_only:
        nm_copy()
    else:
        pair("up copy / pg_upgrade --copy", nm_copy, bare_copy)

    newer = b.fresh("dumpall-down") / "newer"
    b.copy(new, newer, new)  # nixos-migrate downgrades `new` itself: in the page cache too

    def nm_down() -> float:
        seconds = timed(nm, manifest, "down", "bench", "--to", args.old, "--defer-settle")
        note("nixos-migrate down (logical, verified)", seconds)
        return seconds

    def bare_down() -> float:
        seconds = timed(dump_restore, b, args.new, newer, args.old, newer.parent / "older")
        note("pg_dumpall | psql (down)", seconds)
        return seconds

    pair("down / pg_dumpall | psql", nm_down, bare_down)

    if not args.down_only:
        run_upgrades(b, args, pristine, note)
        base = b.fresh("nm-link")
        old, new = base / "pgdata" / args.old, base / "pgdata" / args.new
        old.parent.mkdir()
        os.chown(old.parent, b.user.pw_uid, b.user.pw_gid)
        b.copy(pristine, old)
        link = nm_manifest(b, base, old, new, "link", args.direct_copy_above)
        downtime, settle = nm_up_then_settle(b, link, new)
        note("nixos-migrate up, method link (end to end)", downtime)
        note("  then, serving: server start + nixos-migrate settle (method link)", settle)
    return ratios


def run_upgrades(b: Bench, args: argparse.Namespace, pristine: Path, note: Callable[[str, float], None]) -> None:
    """The other contenders that only upgrade."""
    old = b.fresh("bare-link") / "old"
    b.copy(pristine, old)
    note("pg_upgrade --link (initdb + pg_upgrade)", timed(bare_pg_upgrade, b, old, old.parent / "new", "link"))
    old = b.fresh("bare-copy-analyze") / "old"
    b.copy(pristine, old)
    note(
        "pg_upgrade --copy + vacuumdb --analyze-in-stages",
        timed(bare_pg_upgrade_and_analyze, b, old, old.parent / "new", "copy"),
    )

    old = b.fresh("dumpall") / "old"
    b.copy(pristine, old)
    note("pg_dumpall | psql (up)", timed(dump_restore, b, args.old, old, args.new, old.parent / "new"))

    if not args.skip_debian:
        for mode in ("upgrade", "link", "dump"):
            seconds = debian_upgradecluster(b, pristine, mode)
            if seconds is not None:
                note(f"pg_upgradecluster -m {mode}", seconds)


def bare_pg_upgrade(b: Bench, old: Path, new: Path, method: str) -> None:
    """What the manual says: initdb the new cluster, run pg_upgrade."""
    b.initdb(b.new, new)
    b.run(
        [
            b.bin(b.new, "pg_upgrade"),
            "-b",
            b.prefix[b.old] / "bin",
            "-B",
            b.prefix[b.new] / "bin",
            "-d",
            old,
            "-D",
            new,
            "-U",
            b.su,
            "-s",
            b.sock,
            "-p",
            str(provision.free_port()),
            "-P",
            str(provision.free_port()),
            f"--{method}",
        ],
        cwd=str(old.parent),
    )


def bare_pg_upgrade_and_analyze(b: Bench, old: Path, new: Path, method: str) -> None:
    """The manual's whole procedure: pg_upgrade, then `vacuumdb --all --analyze-in-stages` on the
    new server (pg_upgrade carries no planner statistics before 18)."""
    bare_pg_upgrade(b, old, new, method)
    with b.server(b.new, new) as port:
        stages = ["--analyze-in-stages", "--missing-stats-only"] if int(b.new) >= 18 else ["--analyze-in-stages"]
        b.run([b.bin(b.new, "vacuumdb"), "-h", b.sock, "-p", str(port), "-U", b.su, "--all", *stages])


def dump_restore(b: Bench, src_major: str, src: Path, dst_major: str, dst: Path) -> None:
    """What an operator does by hand: initdb, start both, `pg_dumpall | psql`, stop."""
    b.initdb(dst_major, dst)
    newest = str(max(int(src_major), int(dst_major)))
    with b.server(src_major, src) as p1, b.server(dst_major, dst) as p2:
        dump = subprocess.Popen(
            [str(b.bin(newest, "pg_dumpall")), "-h", str(b.sock), "-p", str(p1), "-U", b.su],
            stdout=subprocess.PIPE,
            env=b.env,
            user=b.user.pw_uid,
            group=b.user.pw_gid,
            cwd=str(b.work),
        )
        b.run(
            [b.bin(dst_major, "psql"), "-X", "-q", "-h", b.sock, "-p", str(p2), "-U", b.su, "-d", "postgres"],
            stdin=dump.stdout,
        )
        if dump.wait() != 0:
            raise RuntimeError("pg_dumpall failed")


def nm_manifest(b: Bench, base: Path, old: Path, new: Path, method: str, direct_above: int | None = 64 << 20) -> Path:
    manifest = base / "manifest.json"
    sock = b.sock / base.name  # removed with b.sock at the end
    sock.mkdir(exist_ok=True)  # a later round reuses it
    os.chown(sock, b.user.pw_uid, b.user.pw_gid)
    manifest.write_text(
        json.dumps(
            {
                "state_dir": str(base / "state"),
                "services": {
                    "bench": {
                        "plugin": "postgresql",
                        "target": b.new,
                        "user": b.user.pw_name,
                        "settings": {
                            "data_dir": str(new),
                            "old_data_dir": str(old),
                            "method": method,
                            "jobs": os.cpu_count() or 2,
                            "packages": {k: str(v) for k, v in b.prefix.items()},
                            "socket_dir": str(sock),
                            "direct_copy_above": direct_above,
                        },
                    }
                },
            }
        )
    )
    return manifest


def nm_up_then_settle(b: Bench, manifest: Path, new: Path) -> tuple[float, float]:
    """`up` with the statistics left for later (the service's downtime), then what the NixOS
    module's settle unit does once the service runs: the seconds of both."""
    downtime = timed(nm, manifest, "up", "--defer-settle")
    start = time.monotonic()
    with b.server(b.new, new) as port:
        data = json.loads(manifest.read_text())
        settings = data["services"]["bench"]["settings"]
        settings |= {"service_socket_dir": str(b.sock), "service_port": port, "superuser": b.su}
        manifest.write_text(json.dumps(data))
        nm(manifest, "settle")
    return downtime, time.monotonic() - start


def nm(manifest: Path, *args: str) -> None:
    """Run nixos-migrate; its per-phase timings (stderr) are kept beside the manifest."""
    log = manifest.parent / f"nixos-migrate-{args[0]}.log"
    with log.open("w") as sink:
        subprocess.run(
            [sys.executable, "-m", "nixos_migrate.cli", "-m", str(manifest), *args],
            check=True,
            stderr=sink,
            stdout=subprocess.DEVNULL,
        )
    print("    " + "\n    ".join(line.strip() for line in log.read_text().splitlines() if ": done in" in line))


def debian_upgradecluster(b: Bench, pristine: Path, mode: str) -> float | None:
    """`pg_upgradecluster -m MODE` on a copy of the cluster, registered in a private config root."""
    if shutil.which("pg_upgradecluster") is None:
        print("  pg_upgradecluster: not installed (apt-get install postgresql-common); skipped")
        return None
    base = b.fresh(f"debian-{mode}")
    conf_root, common = base / "etc", base / "common"
    conf_root.mkdir()
    common.mkdir()
    (common / "createcluster.conf").write_text(
        f"create_main_cluster = false\ndata_directory = '{base}/%v/%c'\n"
        + ("initdb_options = '--no-data-checksums'\n" if int(b.new) >= 18 else "")
    )
    data = base / b.old / "bench"
    data.parent.mkdir()
    os.chown(data.parent, b.user.pw_uid, b.user.pw_gid)
    b.copy(pristine, data)
    links = []
    for major in (b.old, b.new):
        lib = Path("/usr/lib/postgresql") / major
        if not lib.exists():
            lib.parent.mkdir(exist_ok=True)
            lib.symlink_to(b.prefix[major])
            links.append(lib)
    env = {**os.environ, "PG_CLUSTER_CONF_ROOT": str(conf_root), "PGSYSCONFDIR": str(common)}
    try:
        subprocess.run(
            [
                "pg_createcluster",
                "-u",
                b.user.pw_name,
                "-d",
                str(data),
                "-s",
                str(b.sock),
                "-p",
                str(provision.free_port()),
                b.old,
                "bench",
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        start = time.monotonic()
        proc = subprocess.run(
            ["pg_upgradecluster", "-m", mode, "-v", b.new, b.old, "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            print(f"  pg_upgradecluster -m {mode} failed: {proc.stderr.strip()[-300:]}")
            return None
        for major in (b.new, b.old):
            subprocess.run(["pg_ctlcluster", major, "bench", "stop"], env=env, capture_output=True, check=False)
        return seconds
    finally:
        for link in links:
            link.unlink()


def report(runs: dict[str, list[float]], size: int, args: argparse.Namespace, rounds: list[dict[str, float]]) -> None:
    results = {name: statistics.median(times) for name, times in runs.items()}
    copy = results.get("pg_upgrade --copy (initdb + pg_upgrade)")
    debian = results.get("pg_upgradecluster -m upgrade")
    dumpall_down = results.get("pg_dumpall | psql (down)")
    print(
        f"\nPostgreSQL {args.old} -> {args.new}, pgbench scale {args.scale}, {args.tables} big table(s),"
        f" {size / 2**30:.2f} GiB, "
        f"{os.cpu_count()} cores, median of {args.repeat} round(s)\n"
    )
    print("| contender | seconds (median) | range | vs pg_upgrade --copy | vs pg_upgradecluster -m upgrade |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in results.items():
        ratio_copy = f"{seconds / copy:.2f}x" if copy else "-"
        ratio_deb = f"{seconds / debian:.2f}x" if debian else "-"
        spread = f"{min(runs[name]):.1f}-{max(runs[name]):.1f}"
        print(f"| {name.replace('|', chr(92) + '|')} | {seconds:.1f} | {spread} | {ratio_copy} | {ratio_deb} |")
    if dumpall_down and "nixos-migrate down (logical, verified)" in results:
        down = results["nixos-migrate down (logical, verified)"]
        print(f"\nlogical down: nixos-migrate / pg_dumpall | psql = {down / dumpall_down:.2f}x")
    print("\nround by round (each pair side by side, the order alternating):")
    for name in dict.fromkeys(k for r in rounds for k in r):
        each = [r[name] for r in rounds if name in r]
        listed = ", ".join(f"{v:.2f}x" for v in each)
        print(f"- {name}: {listed} (median {statistics.median(each):.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
