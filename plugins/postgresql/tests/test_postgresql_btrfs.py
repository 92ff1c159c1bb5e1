# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""PostgreSQL upgrades on btrfs: `auto` picks pg_upgrade --clone, and `link` is backed up by a
reflink clone instead of a copy; data directories that are subvolumes or mount points of their
own (loop-mounted filesystems; root, btrfs-progs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Cluster

from nixos_migrate import filebackup
from nixos_migrate.testing import provision


@pytest.fixture
def btrfs(tmp_path, pg_user):
    with provision.loop_filesystem("btrfs", tmp_path, 1024) as mnt:
        (mnt / "pg").mkdir()
        provision.chown_tree(mnt / "pg", pg_user)
        yield mnt


@pytest.mark.parametrize(
    ("method", "plan_says", "backup_kind"),
    [
        ("auto", "pg_upgrade --clone", "retained-cluster"),
        ("link", "pg_upgrade --link", "reflink"),
    ],
)
def test_upgrade_on_btrfs(btrfs, cluster_factory, pg_service, method, plan_says, backup_kind):
    old, new = btrfs / "pg" / "16", btrfs / "pg" / "17"
    cluster = cluster_factory("16", old)
    before = cluster.offline_content()
    svc = pg_service(new, ("16", "17"), old_data_dir=str(old), method=method)
    svc.builder.data["backup_dir"] = str(btrfs / "backups")
    plan = svc.cli("17", "plan", "--json")
    assert plan.code == 0, plan.output
    assert plan.json[0]["steps"][0]["description"] == plan_says
    result = svc.cli("17", "up")
    assert result.code == 0, result.output
    assert Cluster("17", new, cluster.sock, cluster.user).offline_content() == before
    [backup] = svc.cli("17", "backups", "--json").json
    assert backup["kind"] == backup_kind


def _subvolume(path, user):
    subprocess.run(["btrfs", "subvolume", "create", str(path)], check=True, capture_output=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o700)


def test_one_subvolume_per_major(btrfs, cluster_factory, pg_service, pg_user):
    """/…/16 and /…/17 each their own subvolume (snapper, btrbk): link cannot cross them and says
    so; auto clones across them; a failed step and a restore leave both subvolumes in place."""
    old, new = btrfs / "pg" / "16", btrfs / "pg" / "17"
    _subvolume(old, pg_user)
    _subvolume(new, pg_user)
    cluster = cluster_factory("16", old)
    before = cluster.offline_content()

    link = pg_service(new, ("16", "17"), old_data_dir=str(old), method="link")
    refused = link.cli("17", "plan", "--json")
    assert refused.code == 3, refused.output
    [why] = [c for c in refused.json[0]["checks"] if c["name"] == "method link"]
    assert "is a btrfs subvolume" in why["detail"] and 'set method = "clone"' in why["detail"], why

    svc = pg_service(new, ("16", "17"), old_data_dir=str(old))
    svc.builder.data["backup_dir"] = str(btrfs / "backups")
    plan = svc.cli("17", "plan", "--json")
    assert plan.code == 0, plan.output
    assert plan.json[0]["steps"][0]["description"] == "pg_upgrade --clone"
    checks = {c["name"]: c for c in plan.json[0]["checks"]}
    assert "is a btrfs subvolume" in checks["layout"]["detail"], checks

    failed = svc.cli("17", "up", env={"NIXOS_MIGRATE_FAULT": "verify@db"})
    assert failed.code == 1, failed.output
    assert cluster.offline_content() == before
    assert filebackup.is_btrfs_subvolume(new) and not any(new.iterdir())

    done = svc.cli("17", "up")
    assert done.code == 0, done.output
    assert filebackup.is_btrfs_subvolume(new) and filebackup.is_btrfs_subvolume(old)
    assert (new / "PG_VERSION").read_text().strip() == "17" and not any(old.iterdir())
    assert Cluster("17", new, cluster.sock, cluster.user).offline_content() == before
    backup = svc.cli("17", "backups", "--json").json[-1]
    assert backup["kind"] == "retained-cluster"
    assert filebackup.is_btrfs_subvolume(Path(backup["path"]))  # a snapshot of the old subvolume

    back = svc.cli("17", "restore", "db", str(backup["id"]), "--accept-data-loss")
    assert back.code == 0, back.output
    assert filebackup.is_btrfs_subvolume(new) and filebackup.is_btrfs_subvolume(old)
    assert (old / "PG_VERSION").read_text().strip() == "16" and not (new / "PG_VERSION").exists()
    assert cluster.offline_content() == before


def test_the_data_directory_is_a_mount_point(tmp_path, cluster_factory, pg_service, pg_user):
    """data_dir is a filesystem of its own (a dedicated disk): upgraded in place, its contents
    move through the backup and back into it; the mount point and its lost+found stay."""
    (tmp_path / "disk").mkdir()
    with provision.loop_filesystem("ext4", tmp_path / "disk", 1024) as mnt:
        os.chown(mnt, pg_user.pw_uid, pg_user.pw_gid)
        mnt.chmod(0o700)
        # initdb refuses a mount point (lost+found): the cluster is made beside it and moved in,
        # as an operator moving data to a dedicated disk does
        seed = cluster_factory("16", tmp_path / "seed")
        subprocess.run(["cp", "-a", f"{seed.data}/.", str(mnt)], check=True)
        shutil.rmtree(seed.data)
        cluster = Cluster("16", mnt, seed.sock, seed.user)
        before = cluster.offline_content()
        svc = pg_service(mnt, ("16", "17"))
        plan = svc.cli("17", "plan", "--json")
        assert plan.code == 0, plan.output
        checks = {c["name"]: c for c in plan.json[0]["checks"]}
        assert "is a mount point" in checks["layout"]["detail"], checks

        failed = svc.cli("17", "up", env={"NIXOS_MIGRATE_FAULT": "apply@db"})
        assert failed.code == 1, failed.output
        assert cluster.offline_content() == before

        done = svc.cli("17", "up")
        assert done.code == 0, done.output
        assert os.path.ismount(mnt) and (mnt / "lost+found").is_dir()
        assert (mnt / "PG_VERSION").read_text().strip() == "17"
        assert Cluster("17", mnt, cluster.sock, cluster.user).offline_content() == before
