"""Benchmark: PostgreSQL upgrades on btrfs, where backups are snapshots, at two data sizes.

    sudo .venv/bin/python benchmarks/postgresql_btrfs.py [--scales 70,350] [--old 16] [--new 17]

For each size, on a loop-mounted btrfs filesystem (an image file under /var/tmp), the clusters
live in one subvolume (hard links, which `--link` makes, cannot cross subvolumes); every contender
starts from a writable snapshot of that subvolume. Contenders: bare `initdb` + `pg_upgrade
--link`, and nixos-migrate `up` end to end with
`method = link` (its backup a reflink clone of the old cluster) and `method = auto` (pg_upgrade
--clone, the old cluster retained). The phases nixos-migrate prints are shown too: the file-level
backup should not grow with the data.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from postgresql_upgrade import (
    Bench,
    bare_pg_upgrade,
    bare_pg_upgrade_and_analyze,
    create_pristine,
    nm_manifest,
    nm_up_then_settle,
    timed,
)

from nixos_migrate.testing import provision


def snapshot(src: Path, dst: Path) -> None:
    subprocess.run(["btrfs", "subvolume", "snapshot", str(src), str(dst)], check=True, capture_output=True)


def backup_seconds(log: Path) -> float | None:
    match = re.search(r"back up before .*: done in ([0-9.]+) s", log.read_text())
    return float(match.group(1)) if match else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="70,350")
    parser.add_argument("--old", default="16")
    parser.add_argument("--new", default="17")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (loop mounts, server user)", file=sys.stderr)
        return 2
    rows = []
    for scale in (int(s) for s in args.scales.split(",")):
        work = Path(tempfile.mkdtemp(prefix="nm-btrfs-", dir="/var/tmp"))
        size_mb = max(4096, scale * 16 * 4)  # room for the cluster, its WAL and the upgraded copies
        with provision.loop_filesystem("btrfs", work, size_mb) as mnt:
            provision.traversable(mnt)  # mkdtemp made its parent 0700; the server user walks through
            b = Bench(args.old, args.new, mnt)
            os.chown(mnt, b.user.pw_uid, b.user.pw_gid)
            subprocess.run(["btrfs", "subvolume", "create", str(mnt / "pristine")], check=True, capture_output=True)
            os.chown(mnt / "pristine", b.user.pw_uid, b.user.pw_gid)
            pristine = mnt / "pristine"
            create_pristine(b, argparse.Namespace(old=args.old, scale=scale), pristine / args.old)
            size = sum(p.stat().st_size for p in (pristine / args.old).rglob("*") if p.is_file())
            print(f"scale {scale}: {size / 2**30:.2f} GiB", flush=True)

            bare = b.fresh("bare")
            snapshot(pristine, bare / "pg")
            link = timed(bare_pg_upgrade, b, bare / "pg" / args.old, bare / "pg" / args.new, "link")
            print(f"  pg_upgrade --link: {link:.1f} s", flush=True)
            row = {"scale": scale, "GiB": size / 2**30, "bare link": link}
            bare = b.fresh("bare-analyze")
            snapshot(pristine, bare / "pg")
            pg = bare / "pg"
            row["bare link + analyze"] = timed(bare_pg_upgrade_and_analyze, b, pg / args.old, pg / args.new, "link")
            print(f"  pg_upgrade --link + vacuumdb --analyze-in-stages: {row['bare link + analyze']:.1f} s", flush=True)
            for method in ("link", "auto"):
                base = b.fresh(f"nm-{method}")
                snapshot(pristine, base / "pgdata")
                manifest = nm_manifest(b, base, base / "pgdata" / args.old, base / "pgdata" / args.new, method)
                data = json.loads(manifest.read_text())
                data["backup_dir"] = str(base / "backups")  # on the same btrfs: snapshots land there
                manifest.write_text(json.dumps(data))
                seconds, settle = nm_up_then_settle(b, manifest, base / "pgdata" / args.new)
                row[f"nixos-migrate {method}"] = seconds
                row[f"settle ({method})"] = settle
                row[f"backup ({method})"] = backup_seconds(base / "nixos-migrate-up.log") or 0.0
                print(f"  nixos-migrate up ({method}): {seconds:.1f} s; then start + settle {settle:.1f} s", flush=True)
            rows.append(row)
            subprocess.run(["rm", "-rf", str(b.sock)], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print(
        "\n| scale | GiB | pg_upgrade --link | + analyze | nixos-migrate link (vs bare) | backup |"
        " + start + settle (vs + analyze) | nixos-migrate auto=clone (vs bare) | backup |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        link, whole = r["nixos-migrate link"], r["nixos-migrate link"] + r["settle (link)"]
        print(
            f"| {r['scale']} | {r['GiB']:.2f} | {r['bare link']:.1f} s | {r['bare link + analyze']:.1f} s | "
            f"{link:.1f} s ({link / r['bare link']:.2f}x) | {r['backup (link)']:.1f} s | "
            f"{whole:.1f} s ({whole / r['bare link + analyze']:.2f}x) | "
            f"{r['nixos-migrate auto']:.1f} s ({r['nixos-migrate auto'] / r['bare link']:.2f}x) | "
            f"{r['backup (auto)']:.1f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
