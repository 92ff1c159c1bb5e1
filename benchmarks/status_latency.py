"""Benchmark: how long `nixos-migrate status` takes, against the floor of any Python CLI.

    .venv/bin/python benchmarks/status_latency.py [--rounds 15]

A manifest of three services (postgresql over a real data directory's PG_VERSION, ldap, and a
scripts service), every plugin installed. Side by side, alternating in each round: `python3 -c
pass` (the interpreter's start), `nixos-migrate --help` (the CLI's imports) and `nixos-migrate
status` and `status --json`, and the import of pydantic's BaseModel, which every command that
reads a manifest pays. Prints each one's median and the ratios; the target is status under 0.3 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.3


def manifest(root: Path) -> Path:
    pg = root / "pg"
    pg.mkdir()
    (pg / "PG_VERSION").write_text("16\n")
    prefix = root / "prefix"
    (prefix / "bin").mkdir(parents=True)
    ldap_conf = root / "slapd.d"
    ldap_conf.mkdir()
    (root / "ldapdata").mkdir()
    (root / "app").mkdir()
    data = {
        "state_dir": str(root / "state"),
        "services": {
            "postgresql": {
                "target": "17",
                "settings": {"data_dir": str(pg), "packages": {"16": str(prefix), "17": str(prefix)}},
            },
            "openldap": {
                "plugin": "ldap",
                "target": "2.6",
                "settings": {
                    "config_dir": str(ldap_conf),
                    "data_dir": str(root / "ldapdata"),
                    "initial_version": "2.5",
                },
            },
            "app": {
                "plugin": "scripts",
                "target": "2024-01-01",
                "settings": {"paths": [str(root / "app")]},
                "migrations": [{"version": "2024-01-01", "up": {"script": "true"}}],
            },
        },
    }
    path = root / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    tool = str(Path(sys.executable).parent / "nixos-migrate")
    with tempfile.TemporaryDirectory(prefix="nm-status-") as tmp:
        m = manifest(Path(tmp))
        contenders = {
            "python3 -c pass": [sys.executable, "-c", "pass"],
            # what any command that reads a manifest pays: its models are pydantic's
            "python3 -c 'import pydantic.BaseModel'": [sys.executable, "-c", "from pydantic import BaseModel"],
            "nixos-migrate --help": [tool, "--help"],
            "nixos-migrate status": [tool, "-m", str(m), "status"],
            "nixos-migrate status --json": [tool, "-m", str(m), "status", "--json"],
        }
        check = subprocess.run(contenders["nixos-migrate status"], capture_output=True, text=True, check=False)
        if check.returncode != 0:
            raise SystemExit(f"status failed: {check.stderr}")
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(2):  # warm the page cache and the bytecode
            for argv in contenders.values():
                timed(argv)
        for round_no in range(args.rounds):
            order = list(contenders.items())
            if round_no % 2:
                order.reverse()
            for name, argv in order:
                times[name].append(timed(argv))
    medians = {name: statistics.median(t) for name, t in times.items()}
    floor, helped = medians["python3 -c pass"], medians["nixos-migrate --help"]
    print(f"{'command':32} {'median':>8} {'min':>8} {'x python':>9} {'x --help':>9}")
    for name, t in times.items():
        print(
            f"{name:32} {medians[name]:8.3f} {min(t):8.3f} {medians[name] / floor:9.2f} {medians[name] / helped:9.2f}"
        )
    status = medians["nixos-migrate status"]
    print(
        f"status: {status:.3f} s median of {args.rounds} rounds;"
        f" target < {TARGET} s: {'met' if status < TARGET else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
