"""O(1) backups on real filesystems: btrfs snapshots and reflink clones (btrfs, XFS), copy on ext4.

Filesystems are created in image files and loop-mounted for each test (root; btrfs-progs and
xfsprogs, which `./run tests` installs), and always unmounted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nixos_migrate.fingerprint import tree_entries, tree_size
from nixos_migrate.testing import provision
from nixos_migrate.testing.cli import run_cli
from nixos_migrate.testing.manifests import ManifestBuilder
from tests.conftest import V1, V2, seed_tree


@pytest.fixture
def fs(tmp_path, request):
    with provision.loop_filesystem(request.param, tmp_path, 512) as mnt:
        yield mnt


def _service(root: Path, data: Path, backup_dir: Path, ctl: Path) -> Path:
    builder = ManifestBuilder(root)
    builder.data["backup_dir"] = str(backup_dir)
    gate = f'if [ -e "{ctl}/fail" ]; then exit 1; fi\n'
    builder.service(
        "app",
        plugin="scripts",
        target=V2,
        settings={"paths": [str(data)]},
        migrations=[
            # the first step fails while `ctl/fail` exists, after changing the data
            {"version": V1, "up": {"script": f'rm -rf "{data}/db"\necho v1 > "{data}/version"\n' + gate}},
            {"version": V2, "up": {"script": f'echo v2 > "{data}/version"\n'}},
        ],
    )
    return builder.write()


def _subvolume_service(fs: Path, tmp_path: Path, backup_dir: Path) -> tuple[Path, Path, Path]:
    """Data seeded in a btrfs subvolume under `fs`, a scripts service over it; (data, ctl, manifest)."""
    data = fs / "data"
    subprocess.run(["btrfs", "subvolume", "create", str(data)], check=True, capture_output=True)
    seed_tree(data)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    return data, ctl, _service(tmp_path, data, backup_dir, ctl)


def _free(path: Path) -> int:
    os.sync()  # btrfs and XFS account freshly written data lazily
    subprocess.run(["btrfs", "filesystem", "sync", str(path)], capture_output=True, check=False)
    return shutil.disk_usage(path).free


@pytest.mark.parametrize("fs", ["btrfs"], indirect=True)
def test_btrfs_subvolume_gets_snapshots_and_restores_exactly(fs, tmp_path):
    data = fs / "data"
    subprocess.run(["btrfs", "subvolume", "create", str(data)], check=True, capture_output=True)
    seed_tree(data)
    (data / "big.bin").write_bytes(os.urandom(64 << 20))
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    manifest = _service(tmp_path, data, fs / "backups", ctl)

    plan = run_cli(manifest, "plan", "--json")
    backup_checks = [c for c in plan.json[0]["checks"] if c["name"].startswith("backup of")]
    assert backup_checks[0]["detail"].startswith("btrfs-snapshot: a btrfs subvolume")
    assert plan.json[0]["backup_bytes"] < 8 << 20  # no room needed for a copy of 64 MiB

    (ctl / "fail").touch()
    before = tree_entries(data)
    free = _free(fs)
    result = run_cli(manifest, "up")
    assert result.code == 1, result.output
    assert tree_entries(data) == before
    assert free - _free(fs) < 16 << 20  # a snapshot of 64 MiB costs (almost) nothing

    backups = run_cli(manifest, "backups", "--json").json
    assert [b["kind"] for b in backups] == ["btrfs-snapshot"]
    assert all(b["size"] == 0 for b in backups)
    (ctl / "fail").unlink()
    assert run_cli(manifest, "up").code == 0
    assert (data / "version").read_text() == "v2\n"

    listed = subprocess.run(["btrfs", "subvolume", "list", str(fs)], capture_output=True, text=True, check=True)
    assert listed.stdout.count("backups/app/step-") == 3
    assert run_cli(manifest, "backups", "prune", "app", "--keep", "0").code == 0
    listed = subprocess.run(["btrfs", "subvolume", "list", str(fs)], capture_output=True, text=True, check=True)
    assert "backups/app/step-" not in listed.stdout


@pytest.mark.parametrize("fs", ["xfs", "btrfs"], indirect=True)
def test_reflink_clones_cost_no_room_and_restore_exactly(fs, tmp_path):
    data = fs / "data"  # a plain directory: cloned file by file
    data.mkdir()
    seed_tree(data)
    (data / "big.bin").write_bytes(os.urandom(96 << 20))
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    manifest = _service(tmp_path, data, fs / "backups", ctl)
    (ctl / "fail").touch()
    before = tree_entries(data)
    free = _free(fs)
    assert run_cli(manifest, "up").code == 1
    assert tree_entries(data) == before
    assert free - _free(fs) < 24 << 20  # a copy would have taken 96 MiB
    assert [b["kind"] for b in run_cli(manifest, "backups", "--json").json] == ["reflink"]


@pytest.mark.parametrize("fs", ["btrfs"], indirect=True)
def test_snapshot_lands_beside_the_data_when_backups_live_elsewhere(fs, tmp_path):
    data, ctl, manifest = _subvolume_service(fs, tmp_path, tmp_path / "backups-on-ext4")
    (ctl / "fail").touch()
    before = tree_entries(data)
    assert run_cli(manifest, "up").code == 1
    assert tree_entries(data) == before
    hidden = sorted(p.name for p in fs.iterdir() if p.name.startswith(".data.nixos-migrate-"))
    assert len(hidden) == 1
    assert run_cli(manifest, "backups", "prune", "app", "--keep", "0").code == 0
    assert not [p for p in fs.iterdir() if p.name.startswith(".data.nixos-migrate-")]


def test_ext4_falls_back_to_a_checksummed_copy(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    seed_tree(data)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    manifest = _service(tmp_path, data, tmp_path / "backups", ctl)
    plan = run_cli(manifest, "plan", "--json").json[0]
    detail = next(c["detail"] for c in plan["checks"] if c["name"].startswith("backup of"))
    assert detail.startswith("copy: ")
    assert run_cli(manifest, "up").code == 0
    backups = run_cli(manifest, "backups", "--json").json
    assert [b["kind"] for b in backups] == ["copy", "copy"]
    assert all(b["checksum"] for b in backups)


@pytest.mark.parametrize("fs", ["btrfs"], indirect=True)
def test_rollback_after_a_kill_during_backup_deletes_the_snapshot(fs, tmp_path):
    data, _ctl, manifest = _subvolume_service(fs, tmp_path, fs / "backups")
    before = tree_entries(data)
    killed = run_cli(manifest, "up", env={"NIXOS_MIGRATE_FAULT": "kill:backup"})
    assert killed.code == -9
    listed = subprocess.run(["btrfs", "subvolume", "list", str(fs)], capture_output=True, text=True, check=True)
    assert "backups/app/step-1" in listed.stdout  # the unrecorded snapshot of the interrupted step
    rolled = run_cli(manifest, "up", "--rollback")
    assert rolled.code == 0, rolled.output
    listed = subprocess.run(["btrfs", "subvolume", "list", str(fs)], capture_output=True, text=True, check=True)
    assert "backups/app/step-1" not in listed.stdout
    assert tree_entries(data) == before
    assert run_cli(manifest, "up").code == 0


# -- ZFS ----------------------------------------------------------------------------------------
# No ZFS here: this kernel has no zfs module and Debian ships it only as DKMS sources. The stand-in
# below is a `zfs` command on PATH that keeps what the real one keeps: datasets with mountpoints,
# snapshots whose files appear under MOUNTPOINT/.zfs/snapshot/NAME (read-only there, which the
# stand-in cannot enforce), `rollback` refused while later snapshots exist, as ZFS refuses it
# without -r. nixos-migrate's code path is the real one: it only runs `zfs` argv and reads
# `.zfs/snapshot`.
FAKE_ZFS = r"""#!/bin/bash
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"; echo "$*" >> "$root/calls"  # its state beside it
mnt_of() { awk -F'\t' -v d="$1" '$1 == d {print $2}' "$root/datasets"; }
case "$1" in
  list)
    if [ "$3" = -t ]; then grep -qxF "$7" "$root/snapshots"; exit; fi
    path=$(realpath "$5")
    while IFS=$'\t' read -r name mnt; do
      if [ "$path" = "$mnt" ] || [[ "$path" == "$mnt"/* ]]; then printf '%s\t%s\n' "$name" "$mnt"; exit 0; fi
    done < "$root/datasets"
    echo "cannot open '$5': not a ZFS filesystem" >&2; exit 1 ;;
  snapshot)
    ds="${2%@*}"; snap="${2#*@}"; mnt=$(mnt_of "$ds")
    mkdir -p "$mnt/.zfs/snapshot/$snap"
    (cd "$mnt" && find . -mindepth 1 -maxdepth 1 ! -name .zfs -exec cp -a {} "$mnt/.zfs/snapshot/$snap/" \;)
    echo "$2" >> "$root/snapshots" ;;
  rollback)
    ds="${2%@*}"; snap="${2#*@}"; mnt=$(mnt_of "$ds")
    if grep -A1000 -xF "$2" "$root/snapshots" | tail -n +2 | grep -q "^$ds@"; then
      echo "refused rollback $2" >> "$root/calls"
      echo "cannot rollback to '$2': more recent snapshots or bookmarks exist" >&2; exit 1
    fi
    find "$mnt" -mindepth 1 -maxdepth 1 ! -name .zfs -exec rm -rf {} +
    cp -a "$mnt/.zfs/snapshot/$snap/." "$mnt/" ;;
  destroy)
    ds="${2%@*}"; snap="${2#*@}"; mnt=$(mnt_of "$ds")
    grep -qxF "$2" "$root/snapshots" || { echo "could not find any snapshots to destroy" >&2; exit 1; }
    rm -rf "$mnt/.zfs/snapshot/$snap"; grep -vxF "$2" "$root/snapshots" > "$root/s.new" || true
    mv "$root/s.new" "$root/snapshots" ;;
  *) echo "fake zfs: unsupported: $*" >&2; exit 2 ;;
esac
"""


def _zfs(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A dataset `tank/data` mounted at tmp/data (seeded), the stand-in on PATH; (data, root, env)."""
    root = tmp_path / "zfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "zfs").write_text(FAKE_ZFS)
    (root / "bin" / "zfs").chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    seed_tree(data)
    (root / "datasets").write_text(f"tank/data\t{data.resolve()}\n")
    (root / "snapshots").write_text("")
    return data, root, {"PATH": f"{root / 'bin'}:{os.environ['PATH']}"}


def _data_entries(data: Path) -> dict[str, str]:
    """The data as a reader sees it: ZFS hides .zfs from directory listings."""
    return {k: v for k, v in tree_entries(data).items() if not k.startswith(".zfs")}


def test_zfs_dataset_gets_snapshots_restored_by_rollback_and_pruned(tmp_path):
    data, root, env = _zfs(tmp_path)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    manifest = _service(tmp_path, data, tmp_path / "backups", ctl)
    plan = run_cli(manifest, "plan", "--json", env=env).json[0]
    detail = next(c["detail"] for c in plan["checks"] if c["name"].startswith("backup of"))
    assert "zfs-snapshot: the mountpoint of ZFS dataset tank/data" in detail
    before = _data_entries(data)
    (ctl / "fail").touch()  # the first step changes the data, then fails: rolled back
    failed = run_cli(manifest, "up", env=env)
    assert failed.code == 1, failed.output
    assert _data_entries(data) == before
    calls = (root / "calls").read_text().splitlines()
    assert any(c.startswith("snapshot tank/data@nixos-migrate-") for c in calls)
    assert any(c.startswith("rollback tank/data@nixos-migrate-") for c in calls)
    (ctl / "fail").unlink()
    assert run_cli(manifest, "up", env=env).code == 0
    backups = run_cli(manifest, "backups", "--json", env=env).json
    assert [b["kind"] for b in backups][-2:] == ["zfs-snapshot", "zfs-snapshot"]
    assert run_cli(manifest, "backups", "prune", "app", "--keep", "0", env=env).code == 0
    assert (root / "snapshots").read_text() == ""  # every snapshot destroyed with its backup


def test_zfs_restore_of_an_older_backup_copies_from_the_snapshot_directory(tmp_path):
    """Rolling back past later snapshots would destroy them (they are other backups): the older
    backup is copied back from .zfs/snapshot instead, and the later snapshots stay."""
    data, root, env = _zfs(tmp_path)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    manifest = _service(tmp_path, data, tmp_path / "backups", ctl)
    assert run_cli(manifest, "up", env=env).code == 0  # two steps, two snapshots
    taken_at_v1 = run_cli(manifest, "backups", "--json", env=env).json[1]  # before V1 -> V2
    snapshot = taken_at_v1["detail"]["slots"][0]["location"]
    assert snapshot.startswith("tank/data@nixos-migrate-")
    expected = _data_entries(data / ".zfs" / "snapshot" / snapshot.partition("@")[2])
    restored = run_cli(manifest, "restore", "app", str(taken_at_v1["id"]), "--accept-data-loss", env=env)
    assert restored.code == 0, restored.output
    assert _data_entries(data) == expected and (data / "version").read_text() == "v1\n"
    assert len((root / "snapshots").read_text().split()) == 3  # none destroyed; one more taken first
    assert f"refused rollback {snapshot}" in (root / "calls").read_text().splitlines()


def test_zfs_rollback_after_a_kill_during_backup_destroys_the_snapshot(tmp_path):
    data, root, env = _zfs(tmp_path)
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    manifest = _service(tmp_path, data, tmp_path / "backups", ctl)
    before = _data_entries(data)
    killed = run_cli(manifest, "up", env={**env, "NIXOS_MIGRATE_FAULT": "kill:backup"})
    assert killed.code == -9
    assert (root / "snapshots").read_text().strip().startswith("tank/data@nixos-migrate-step-1")  # unrecorded
    rolled = run_cli(manifest, "up", "--rollback", env=env)
    assert rolled.code == 0, rolled.output
    assert (root / "snapshots").read_text() == ""
    assert _data_entries(data) == before
    assert run_cli(manifest, "up", env=env).code == 0


def test_tree_size_counts_regular_files_once_and_follows_no_link(tmp_path):
    """The free-space checks and backup records rest on it: the bytes of the regular files in
    the tree, none reached through a symbolic link."""
    root = tmp_path / "data"
    (root / "a" / "b").mkdir(parents=True)
    (root / "top").write_bytes(b"x" * 1000)
    (root / "a" / "b" / "deep").write_bytes(b"y" * 234)
    (root / "a" / "empty").write_bytes(b"")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"z" * 10_000)
    (root / "a" / "link-to-dir").symlink_to(outside)
    (root / "link-to-file").symlink_to(outside / "big")
    os.mkfifo(root / "fifo")
    assert tree_size(root) == 1000 + 234


def test_a_copy_is_summed_as_it_was_while_the_body_changes_the_original(tmp_path):
    """`backing_up`: the body runs while the copy goes to disk and is summed (ext4: a copy);
    the checksum is the copy's, as the original was before the body, and restore takes it."""
    from nixos_migrate import filebackup
    from nixos_migrate.fingerprint import tree_digest
    from nixos_migrate.progress import NullProgress
    from nixos_migrate.runner import CommandRunner, Identity

    data = tmp_path / "data"
    data.mkdir()
    seed_tree(data)
    (data / "big.bin").write_bytes(os.urandom(32 << 20))
    before, size = tree_digest(data), tree_size(data)
    runner = CommandRunner(Identity.lookup(None))
    (tmp_path / "backup").mkdir()
    with filebackup.backing_up([data], tmp_path / "backup", runner, NullProgress()) as files:
        (data / "big.bin").write_bytes(b"changed by the body")
    info = files.result()
    assert info.kind == "copy" and info.size == size
    assert info.checksum == before != tree_digest(data)
    assert tree_digest(tmp_path / "backup" / "path-0") == before


def test_backing_up_ends_its_threads_when_the_body_fails_and_reports_a_failed_sync(tmp_path, monkeypatch):
    import threading

    from nixos_migrate import filebackup
    from nixos_migrate.errors import CommandFailed
    from nixos_migrate.progress import NullProgress
    from nixos_migrate.runner import CommandRunner, Identity

    data = tmp_path / "data"
    data.mkdir()
    seed_tree(data)
    runner = CommandRunner(Identity.lookup(None))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with (
        pytest.raises(RuntimeError, match="the body"),
        filebackup.backing_up([data], tmp_path / "one", runner, NullProgress()),
    ):
        raise RuntimeError("the body failed")
    assert not [t for t in threading.enumerate() if t.name.startswith("backup")]

    real = runner.run

    def failing_sync(argv, **kwargs):
        if argv[0] == "sync":
            raise CommandFailed(list(argv), 1, "sync: I/O error")
        return real(argv, **kwargs)

    monkeypatch.setattr(runner, "run", failing_sync)
    with filebackup.backing_up([data], tmp_path / "two", runner, NullProgress()) as files:
        pass
    with pytest.raises(CommandFailed, match="I/O error"):
        files.result()
