# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""What the gitlab plugin refuses, and failures that must leave GitLab's data as it was.

No GitLab server exists here: its commands are the stand-in of gitlab_standin.py acting on a
real PostgreSQL; the comparisons read the database and the state dir without the plugin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gitlab_env import VERSIONS, Rig, make_gitlab, settings


@pytest.fixture
def at_17_3(tmp_path):
    gitlab = make_gitlab(tmp_path, "17.3", rows=3_000)
    yield gitlab
    gitlab.stop()


def test_an_unfinished_background_migration_refuses_the_hop_and_names_it(tmp_path, at_17_3):
    gitlab = at_17_3
    gitlab.psql("UPDATE batched_background_migrations SET status = 1 WHERE job_class_name = 'Backfill17x3'")
    before = gitlab.content()
    result = Rig(tmp_path, gitlab).cli("17.5", "up")
    assert result.code == 3, result.output
    assert "Backfill17x3 on projects.id [] (active)" in result.stderr
    assert "gitlab:background_migrations:finalize[Backfill17x3,projects,id,[]]" in result.stderr
    assert gitlab.content() == before
    assert not [c for c in gitlab.calls() if c["argv"][:2] == ["gitlab-rake", "db:migrate"] and c["version"] == "17.5"]


def test_a_hop_that_fails_in_its_migrations_is_restored_exactly(tmp_path, at_17_3):
    gitlab = at_17_3
    broken = gitlab.package("17.5") / "share" / "gitlab" / "db" / "post_migrate" / "20170599000000_broken.sql"
    broken.write_text("ALTER TABLE no_such_table ADD COLUMN x int\n")
    before = gitlab.content()
    rig = Rig(tmp_path, gitlab)
    result = rig.cli("17.5", "up")
    assert result.code == 1, result.output
    assert "no_such_table" in result.stderr
    assert gitlab.content() == before
    status = rig.cli("17.3", "status", "--json").json[0]
    assert status["data_version"] == "17.3" and status["dirty"] is None
    assert rig.cli("17.3", "verify").code == 0


def test_a_stop_without_its_package_is_named_and_nothing_runs(tmp_path, at_17_3):
    gitlab = at_17_3
    rig = Rig(tmp_path, gitlab, versions=("17.3", "17.8"))
    result = rig.cli("17.8", "up")
    assert result.code == 2, result.output
    assert "goes through 17.5, 17.8" in result.stderr and "settings.packages lacks 17.5" in result.stderr
    assert gitlab.calls()[-1]["argv"][:1] != ["gitlab-backup"]


def test_a_damaged_backup_is_not_restored(tmp_path, at_17_3):
    gitlab = at_17_3
    rig = Rig(tmp_path, gitlab)
    assert rig.cli("17.5", "up").code == 0
    after = gitlab.content()
    backups = rig.cli("17.5", "backups", "--json").json
    archive = next(p for b in backups for p in Path(b["path"]).glob("*_gitlab_backup.tar"))
    with archive.open("r+b") as f:
        f.seek(4096)
        f.write(b"damage")
    result = rig.cli("17.5", "down", "gitlab", "--to", "17.3", "--accept-data-loss")
    assert result.code != 0 and "is damaged" in result.stderr, result.output
    assert gitlab.content() == after


def test_missing_secrets_refuse_the_hop(tmp_path, at_17_3):
    gitlab = at_17_3
    (gitlab.state_dir / "config" / "secrets.yml").unlink()
    before = gitlab.content()
    result = Rig(tmp_path, gitlab).cli("17.5", "up")
    assert result.code == 3 and "secrets.yml" in result.stderr and "encrypted columns" in result.stderr, result.output
    assert gitlab.content() == before


def test_bad_settings_are_named(tmp_path, at_17_3):
    result = Rig(tmp_path, at_17_3, backup_skip=["repositories", "everything"]).cli("17.5", "plan")
    assert result.code == 2 and "everything" in result.stderr and "gitlab-backup can skip" in result.stderr


def test_the_backup_leaves_out_what_backup_skip_says_and_keeps_the_secrets(tmp_path, at_17_3):
    gitlab = at_17_3
    rig = Rig(tmp_path, gitlab, backup_skip=["repositories"])
    assert rig.cli("17.5", "up").code == 0
    create = next(c for c in gitlab.calls() if c["argv"] == ["gitlab-backup", "create"])
    assert create["env"]["SKIP"] == "repositories" and create["version"] == "17.3"
    backup = rig.cli("17.5", "backups", "--json").json[0]
    manifest = json.loads((Path(backup["path"]) / "gitlab-backup.json").read_text())
    kept = {f["path"].rsplit("/", 1)[1] for f in manifest["files"]}
    assert {"secrets.yml", "database.yml", "gitlab.yml", ".gitlab_shell_secret", "VERSION"} <= kept
    assert manifest["missing"] == [str(gitlab.state_dir / ".gitlab_kas_secret")]


def test_gitlab_migrates_after_its_postgresql(tmp_path, at_17_3):
    gitlab = at_17_3
    rig = Rig(tmp_path, gitlab)
    rig.builder.service(
        "postgresql",
        target="16",
        settings={"data_dir": str(gitlab.root / "pgdata"), "packages": {"16": str(gitlab.pg)}},
    )
    result = rig.cli("17.5", "plan", "--json", "--no-checks", after=["postgresql"])
    assert result.code == 0, result.output
    assert [p["service"] for p in result.json] == ["postgresql", "gitlab"]
    assert settings(gitlab)["packages"]["17.5"]


def test_a_postgresql_too_old_for_the_target_refuses_the_hop_and_says_to_migrate_it_first(tmp_path):
    gitlab = make_gitlab(tmp_path, "17.11", rows=1_000, pg_major="14", versions=(*VERSIONS, "17.11", "18.2"))
    try:
        before = gitlab.content()
        result = Rig(tmp_path, gitlab).cli("18.2", "up")
        assert result.code == 3, result.output
        assert "GitLab 18.2 needs PostgreSQL 16 or newer, the database runs 14" in result.stderr
        assert "migrate the postgresql service first" in result.stderr
        assert gitlab.content() == before
    finally:
        gitlab.stop()


def test_a_package_without_gitlab_rake_and_an_unknown_version_are_named(tmp_path, at_17_3):
    gitlab = at_17_3
    (gitlab.package("17.5") / "bin" / "gitlab-rake").unlink()
    before = gitlab.content()
    rig = Rig(tmp_path, gitlab)
    missing = rig.cli("17.5", "up")
    assert missing.code == 3 and f"missing {gitlab.package('17.5')}/bin/gitlab-rake" in missing.stderr, missing.output
    unknown = rig.cli("seventeen", "up")
    assert unknown.code == 2 and "'seventeen' is not a GitLab version" in unknown.stderr, unknown.output
    assert gitlab.content() == before
