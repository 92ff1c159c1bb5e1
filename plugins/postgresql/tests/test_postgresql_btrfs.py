# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""PostgreSQL upgrades on btrfs: `auto` picks pg_upgrade --clone, and `link` is backed up by a
reflink clone instead of a copy (loop-mounted filesystem; root and btrfs-progs)."""

from __future__ import annotations

import pytest
from conftest import Cluster

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
