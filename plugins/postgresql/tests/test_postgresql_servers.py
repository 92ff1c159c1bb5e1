# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""PostgreSQL for tests: the wheels of every major, cached, run as an unprivileged user and
stopped by pid (the plugin's recipe on the core's provisioning)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nixos_migrate.testing import provision
from nixos_migrate_postgresql import testing as servers


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "locks" not in p.parts}


def test_downloads_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(provision.CACHE_ENV, str(tmp_path / "cache"))
    prefix = servers.postgresql("17")
    assert (prefix / "bin" / "pg_upgrade").exists()
    first = _snapshot(tmp_path / "cache")
    calls = []
    monkeypatch.setattr(provision, "_run", lambda *a, **k: calls.append(a))
    again = servers.postgresql("17")
    assert again == prefix
    assert calls == []  # nothing downloaded or unpacked the second time
    assert _snapshot(tmp_path / "cache") == first


def test_nixos_store_paths_override_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("NIXOS_MIGRATE_POSTGRESQL_16", str(tmp_path / "store-pg16"))
    assert servers.postgresql("16") == tmp_path / "store-pg16"


def test_every_postgresql_major_runs():
    for major in sorted(servers.POSTGRESQL_WHEELS, key=int):
        out = subprocess.run(
            [servers.postgresql(major) / "bin" / "pg_upgrade", "--version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"(PostgreSQL) {major}." in out


def test_server_runs_as_unprivileged_user_and_stops_by_pid(tmp_path):
    user = provision.server_user()
    prefix = servers.postgresql("17")
    data = tmp_path / "pg"
    data.mkdir()
    provision.traversable(data)
    provision.chown_tree(data, user)
    env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    subprocess.run(
        [prefix / "bin" / "initdb", "-D", data / "d", "-U", "postgres", "--no-sync"],
        user=user.pw_uid,
        group=user.pw_gid,
        env=env,
        check=True,
        capture_output=True,
    )
    port = provision.free_port()
    server = provision.Server(
        [
            str(prefix / "bin" / "postgres"),
            "-D",
            str(data / "d"),
            "-p",
            str(port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        user=user,
        env=env,
        log=data / "log",
    )

    def accepts() -> bool:
        # an open port is not enough: a starting server refuses ("the database system is
        # starting up") until its startup is done
        probe: list[str | Path] = [prefix / "bin" / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]
        return provision.port_open(port)() and subprocess.run(probe, check=False).returncode == 0

    with server.start(accepts):
        out = subprocess.run(
            [
                prefix / "bin" / "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "postgres",
                "-Atc",
                "select current_user, version()",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.startswith("postgres|PostgreSQL 17.")
        pid = server.process.pid if server.process else 0
        owner = Path(f"/proc/{pid}").stat().st_uid
        assert owner == user.pw_uid != 0
    assert server.process is not None and server.process.poll() is not None
    assert not Path(f"/proc/{pid}").exists()
