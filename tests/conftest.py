"""Shared helpers: a hand-written service driven by the `scripts` plugin, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nixos_migrate.fingerprint import tree_digest, tree_entries
from nixos_migrate.testing.cli import CliResult, cli_command, run_cli
from nixos_migrate.testing.manifests import ManifestBuilder

V1, V2, V3 = "2024-01-01", "2024-02-01", "2024-03-01"


def seed_tree(data: Path) -> None:
    """Lived-in data: nested dirs, binary content, a symlink, non-ASCII names, odd modes."""
    (data / "db" / "tables").mkdir(parents=True)
    (data / "db" / "tables" / "users.csv").write_text("id,name\n1,Zoë\n2,Łukasz\n", encoding="utf-8")
    (data / "db" / "blob.bin").write_bytes(os.urandom(256 * 1024))
    (data / "größe.txt").write_text("äöü\n", encoding="utf-8")
    (data / "secret.key").write_text("k\n")
    (data / "secret.key").chmod(0o600)
    (data / "current").symlink_to("db/tables")
    (data / "version").write_text("v0\n")


def standard_migrations(ctl: Path) -> list[dict[str, Any]]:
    """Three dated migrations over $DATA; each script can be made to block or fail from `ctl`.

    A script blocks (after touching `<ctl>/<name>-started`) while `<ctl>/block-<name>` exists,
    and fails while `<ctl>/fail-<name>` exists, so tests can stop or break any phase.
    """

    def gate(name: str) -> str:
        return (
            f'if [ -e "{ctl}/block-{name}" ]; then touch "{ctl}/{name}-started"; '
            f'while [ -e "{ctl}/block-{name}" ]; do sleep 0.05; done; fi\n'
            f'if [ -e "{ctl}/fail-{name}" ]; then echo "injected failure in {name}" >&2; exit 1; fi\n'
        )

    return [
        {
            "version": V1,
            "up": {"script": 'echo v1 > "$DATA/version"\nmkdir -p "$DATA/sub"\necho x > "$DATA/sub/x"\n' + gate("up1")},
            "down": {"script": 'rm -rf "$DATA/sub"\necho v0 > "$DATA/version"\n'},
        },
        {
            "version": V2,
            "up": {
                # writes first, then passes the gate: a failure here leaves half-done work behind
                "script": 'echo v2 > "$DATA/version"\necho "3,Ñandú" >> "$DATA/db/tables/users.csv"\n'
                'rm "$DATA/db/blob.bin"\n' + gate("up2"),
                "backup": gate("backup2") + 'cp -a "$DATA" "$BACKUP/data"\n',
                "restore": gate("restore2") + 'rm -rf "$DATA"\ncp -a "$BACKUP/data" "$DATA"\n',
            },
            "down": {
                "script": 'echo v1 > "$DATA/version"\nsed -i "/Ñandú/d" "$DATA/db/tables/users.csv"\n'
                'head -c 1024 /dev/zero > "$DATA/db/blob.bin"\n'
            },
        },
        {
            "version": V3,
            "up": {
                "script": 'echo v3 > "$DATA/version"\necho new > "$DATA/new.txt"\n' + gate("up3"),
                "warn": "v3 rewrites the version file",
            },
            # no down script: going back restores the backup taken before the up step
        },
    ]


@dataclass
class App:
    """A throwaway service under the `scripts` plugin with its data, manifest and control dir."""

    root: Path
    data: Path
    ctl: Path
    builder: ManifestBuilder
    spec: dict[str, Any] = field(default_factory=dict)
    name: str = "app"

    @property
    def manifest(self) -> Path:
        return self.builder.write()

    def cli(self, *args: str, **kwargs: Any) -> CliResult:
        return run_cli(self.manifest, *args, **kwargs)

    def digest(self) -> str:
        return tree_digest(self.data)

    def entries(self) -> dict[str, str]:
        return tree_entries(self.data)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start the CLI in its own process group (so a test can kill it and its scripts)."""
        return subprocess.Popen(
            cli_command(self.manifest, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def block(self, name: str) -> None:
        (self.ctl / f"block-{name}").touch()

    def unblock(self, name: str) -> None:
        (self.ctl / f"block-{name}").unlink(missing_ok=True)

    def fail(self, name: str) -> None:
        (self.ctl / f"fail-{name}").touch()

    def heal(self, name: str) -> None:
        (self.ctl / f"fail-{name}").unlink(missing_ok=True)

    def wait_started(self, name: str, timeout: float = 30) -> None:
        wait_for(lambda: (self.ctl / f"{name}-started").exists(), timeout, f"{name} to start")


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def make_app(manifest_builder: ManifestBuilder, migrate_root: Path) -> Callable[..., App]:
    def make(target: str = V3, verify: str | None = None, **extra: Any) -> App:
        data = migrate_root / "data"
        ctl = migrate_root / "ctl"
        ctl.mkdir()
        data.mkdir()
        seed_tree(data)
        settings: dict[str, Any] = {"paths": [str(data)], "environment": {"DATA": str(data)}}
        settings["verify"] = (
            verify
            if verify is not None
            else (
                f'test -f "$DATA/version"\nif [ -e "{ctl}/block-verify" ]; then touch "{ctl}/verify-started"; '
                f'while [ -e "{ctl}/block-verify" ]; do sleep 0.05; done; fi\n'
                # fail-verify holds the content of the version file that verify rejects
                f'if [ -e "{ctl}/fail-verify" ] && cmp -s "{ctl}/fail-verify" "$DATA/version"; then exit 1; fi\n'
            )
        )
        spec = manifest_builder.service(
            "app",
            plugin="scripts",
            target=target,
            settings=settings,
            migrations=standard_migrations(ctl),
            **extra,
        )
        return App(migrate_root, data, ctl, manifest_builder, spec)

    return make
