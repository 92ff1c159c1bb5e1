"""Bad places for state and backups are refused before anything changes.

These tests mount small tmpfs filesystems and so need root (CI runs as root); without root they
fail with that reason rather than pass silently.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import V1


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("mode=0755", *options)), "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_backup_dir_without_room_is_refused_before_anything_changes(make_app, manifest_builder, migrate_root):
    app = make_app(target=V1)
    (app.data / "big.bin").write_bytes(os.urandom(3 << 20))  # 3 MiB of data, 1 MiB of room
    before = app.entries()
    with tmpfs(migrate_root / "small", "size=1m") as small:
        manifest_builder.data["backup_dir"] = str(small / "backups")
        for command in ("plan", "up"):
            result = app.cli(command)
            assert result.code == 3, result.output
            assert "bytes free; the backups need" in result.stderr
        assert list(small.iterdir()) == []
    assert app.entries() == before
    assert app.cli("history", "app", "--json").json == []


def test_read_only_backup_dir_is_refused(make_app, manifest_builder, migrate_root):
    app = make_app(target=V1)
    before = app.entries()
    with tmpfs(migrate_root / "ro", "size=1m", "ro") as ro:
        manifest_builder.data["backup_dir"] = str(ro / "backups")
        result = app.cli("up")
    assert result.code == 3, result.output
    assert "is not writable" in result.stderr
    assert app.entries() == before


def test_unwritable_state_dir_is_refused(make_app, manifest_builder, migrate_root):
    app = make_app(target=V1)
    before = app.entries()
    with tmpfs(migrate_root / "ro-state", "size=1m", "ro") as ro:
        manifest_builder.data["state_dir"] = str(ro / "state")
        manifest_builder.data["backup_dir"] = str(migrate_root / "backups")
        result = app.cli("up")
    assert result.code == 3, result.output
    assert "cannot hold the journal" in result.stderr or "Read-only file system" in result.stderr
    assert app.entries() == before


def test_state_dir_under_a_file_is_refused(make_app, manifest_builder, migrate_root):
    app = make_app(target=V1)
    (migrate_root / "afile").write_text("")
    manifest_builder.data["state_dir"] = str(migrate_root / "afile" / "state")
    result = app.cli("up")
    assert result.code == 3
    assert "afile" in result.stderr


def test_missing_user_is_refused(make_app):
    app = make_app(target=V1, user="no-such-user-xyz")
    before = app.entries()
    result = app.cli("up")
    assert result.code == 3
    assert "user 'no-such-user-xyz' does not exist" in result.stderr
    assert app.entries() == before


def test_missing_binary_in_a_script_fails_and_restores(make_app):
    app = make_app(target=V1)
    app.spec["migrations"][0]["up"]["script"] = 'echo half > "$DATA/version"\nno-such-binary-xyz --go\n'
    before = app.entries()
    result = app.cli("up")
    assert result.code == 1
    assert "no-such-binary-xyz" in result.stderr
    assert app.entries() == before
