"""`nixos-migrate demo`, a command this plugin adds to the CLI (entry-point group
`nixos_migrate.commands`): a real upgrade and downgrade of a throwaway PostgreSQL cluster.

Downloads (once, cached) two PostgreSQL majors, creates a cluster with sample data in a temporary
directory, and runs the real commands against it: plan, up (with progress), verify, down, status.
Everything is removed at the end unless `keep` is set.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console

from nixos_migrate.errors import MigrateError
from nixos_migrate.testing import provision
from nixos_migrate.testing.manifests import ManifestBuilder
from nixos_migrate_postgresql import scratch
from nixos_migrate_postgresql import testing as servers

SAMPLE = r"""
CREATE DATABASE shop;
\connect shop
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, city text);
INSERT INTO customers (name, city) SELECT (ARRAY['Zoë', 'Łukasz', 'Ñandú', '東京'])[1 + i % 4] || ' ' || i,
  (ARRAY['Köln', 'Gdańsk', 'Besançon'])[1 + i % 3] FROM generate_series(1, 50000) i;
CREATE INDEX customers_lower_name ON customers (lower(name));
CREATE MATERIALIZED VIEW cities AS SELECT city, count(*) FROM customers GROUP BY city;
"""


def run_demo(old: str, new: str, scale: int, keep: bool, cli: Callable[[list[str]], int], console: Console) -> int:
    """Run the demo; `cli` runs one nixos-migrate command line and returns its exit code."""
    timings: list[tuple[str, float]] = []

    def timed(label: str, args: list[str]) -> None:
        console.rule(f"[bold]nixos-migrate {' '.join(args[2:])}")
        start = time.monotonic()
        code = cli(args)
        timings.append((label, time.monotonic() - start))
        if code != 0:
            raise MigrateError(f"demo: `nixos-migrate {' '.join(args[2:])}` exited with {code}")

    user = provision.server_user() if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="nixos-migrate-demo-"))
    sock = Path(tempfile.mkdtemp(prefix="nm-demo-", dir="/tmp"))
    try:
        with console.status(f"fetching PostgreSQL {old} and {new} (cached after the first run)"):
            try:
                prefixes = {old: servers.postgresql(old), new: servers.postgresql(new)}
            except provision.ProvisionError as exc:
                raise MigrateError(f"demo: {exc}", hint="check the network; downloads are cached") from None
        provision.traversable(root)
        data = root / "postgresql" / old
        data.parent.mkdir()
        if user is not None:
            provision.chown_tree(root, user)
            os.chown(sock, user.pw_uid, user.pw_gid)
        start = time.monotonic()
        with console.status(f"creating a PostgreSQL {old} cluster with sample data (pgbench scale {scale})"):
            _create_cluster(prefixes[old], old, data, sock, user, scale)
        timings.append((f"create sample cluster ({_size(data)})", time.monotonic() - start))
        builder = ManifestBuilder(root)
        builder.service(
            "demo-db",
            plugin="postgresql",
            target=new,
            user=user.pw_name if user else None,
            settings={
                "data_dir": str(root / "postgresql" / new),
                "old_data_dir": str(data),
                "packages": {k: str(v) for k, v in prefixes.items()},
                "socket_dir": str(sock),
            },
        )
        manifest = str(builder.write())
        console.print(f"manifest: {manifest}\n")
        timed("plan (with pg_upgrade --check)", ["-m", manifest, "plan"])
        timed(f"up {old} -> {new}", ["-m", manifest, "up"])
        timed("verify", ["-m", manifest, "verify"])
        timed(f"down {new} -> {old} (logical, keeps new writes)", ["-m", manifest, "down", "demo-db", "--to", old])
        timed("status", ["-m", manifest, "status"])
        console.rule("[bold]timings")
        for label, seconds in timings:
            console.print(f"  {label:<55} {seconds:7.1f} s")
        return 0
    finally:
        if keep:
            console.print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{total / 2**20:.0f} MiB"


def _create_cluster(
    prefix: Path, major: str, data: Path, sock: Path, user: pwd.struct_passwd | None, scale: int
) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"}

    def run(argv: list[str | Path], stdin: bytes | None = None) -> None:
        try:
            subprocess.run(
                [str(a) for a in argv],
                env=env,
                check=True,
                capture_output=True,
                cwd="/",
                input=stdin,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
            )
        except subprocess.CalledProcessError as exc:
            why = (exc.stderr or exc.stdout or b"").decode("utf-8", "replace").strip()
            raise MigrateError(
                f"demo: creating the sample cluster: {Path(str(argv[0])).name} exited with {exc.returncode}: {why}",
                hint=f"the sample cluster lives in {data.parent}; it must be reachable by the server user",
            ) from None

    run(list(scratch.initdb_argv(prefix, data, major)))
    port = provision.free_port()
    with scratch.server(prefix, data, sock, port, user).start(lambda: scratch.accepts(prefix, sock, port)):
        conn: list[str | Path] = ["-h", sock, "-p", str(port), "-U", "postgres"]
        run(
            [prefix / "bin" / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *conn, "-d", "postgres"],
            stdin=SAMPLE.encode(),
        )
        run([prefix / "bin" / "pgbench", "-i", "-q", "-s", str(scale), *conn, "shop"])


@click.command("demo")
@click.option("--from", "old", default="16", show_default=True, help="PostgreSQL major of the sample cluster.")
@click.option("--to", "new", default="17", show_default=True, help="PostgreSQL major to upgrade to.")
@click.option("--scale", default=10, show_default=True, help="pgbench scale of the sample data (10 = 1M rows).")
@click.option("--keep", is_flag=True, help="Keep the temporary directory for a look afterwards.")
def command(old: str, new: str, scale: int, keep: bool) -> None:
    """A real upgrade and downgrade of a throwaway PostgreSQL cluster (downloads two majors, cached)."""
    from nixos_migrate import cli, render

    run_demo(old, new, scale, keep, cli.main, render.out.real())
