# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""GitLab through its required stops on a real PostgreSQL.

No GitLab server exists here: its commands are the stand-in of gitlab_standin.py, which change
the real database as GitLab's do (migrations, queued and finalized background migrations, its
backup archive); the plugin's code path is the production one."""

from __future__ import annotations

import pytest
from gitlab_env import Rig, make_gitlab

#: the projects' columns of 16.11, every row
PROJECTS = (
    "SELECT md5(string_agg((id, name, path, namespace_id, creator_id, description, visibility_level, archived,"
    " created_at, v16_11)::text, E'\\n' ORDER BY id)) FROM projects"
)


@pytest.fixture
def at_16_11(tmp_path):
    gitlab = make_gitlab(tmp_path, "16.11")
    yield gitlab
    gitlab.stop()


def test_16_11_to_17_8_lands_on_every_stop_and_keeps_every_object(tmp_path, at_16_11):
    gitlab = at_16_11
    before = gitlab.content()
    projects_before = gitlab.psql(PROJECTS)
    rig = Rig(tmp_path, gitlab)
    planned = rig.cli("17.8", "plan", "--json", "--no-checks")
    # the conditional stop needs acceptance: plan lists the steps and says so
    assert planned.code == 3 and "conditional stop" in planned.json[0]["refusals"][0]["message"], planned.output
    steps = planned.json[0]["steps"]
    assert [(s["from_version"], s["to_version"]) for s in steps] == [
        ("16.11", "17.1"), ("17.1", "17.3"), ("17.3", "17.5"), ("17.5", "17.8"),
    ]  # fmt: skip
    assert steps[0]["warning"] and "conditional stop" in steps[0]["warning"]

    refused = rig.cli("17.8", "up")
    assert refused.code == 3 and "conditional stop" in refused.stderr, refused.output
    result = rig.cli("17.8", "up", "--json", accept=["17.1"])
    assert result.code == 0, result.output
    status = rig.cli("17.8", "status", "--json").json[0]
    assert status["data_version"] == "17.8" and status["dirty"] is None

    after = gitlab.content()
    # every hop added its column and backfilled it: the rest is as it was
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {
        "table projects", "columns", "table schema_migrations", "table batched_background_migrations", "file VERSION",
    }, changed  # fmt: skip
    assert gitlab.psql(PROJECTS) == projects_before
    assert (gitlab.state_dir / "VERSION").read_text() == "17.8.4\n"
    assert gitlab.rows("SELECT count(*) FROM projects WHERE v17_5 IS NULL OR v17_3 IS NULL") == [["0"]]
    assert gitlab.rows("SELECT count(*) FROM batched_background_migrations WHERE status NOT IN (3, 6)") == [["0"]]
    calls = [c for c in gitlab.calls() if c["argv"][:2] == ["gitlab-rake", "db:migrate"]]
    # each stop's own gitlab-rake, pre-deployment migrations first
    assert [(c["version"], c["env"].get("SKIP_POST_DEPLOYMENT_MIGRATIONS")) for c in calls[-8:]] == [
        (v, flag) for v in ("17.1", "17.3", "17.5", "17.8") for flag in ("true", None)
    ]
    verify = rig.cli("17.8", "verify", "--json")
    assert verify.code == 0, verify.output
    assert rig.cli("17.8", "up", "--json").json[0]["steps"] == []


def test_down_restores_the_backup_of_each_hop_with_that_versions_tools(tmp_path, at_16_11):
    gitlab = at_16_11
    before = gitlab.content()
    rig = Rig(tmp_path, gitlab)
    assert rig.cli("17.3", "up", accept=["17.1"]).code == 0
    gitlab.psql("INSERT INTO issues (project_id, iid, title, created_at) VALUES (1, 999999, 'after', now())")
    refused = rig.cli("17.3", "down", "gitlab", "--to", "16.11")
    assert refused.code == 3 and "--accept-data-loss" in refused.stderr, refused.output
    result = rig.cli("17.3", "down", "gitlab", "--to", "16.11", "--accept-data-loss", "--json")
    assert result.code == 0, result.output
    assert gitlab.content() == before
    restores = [c for c in gitlab.calls() if c["argv"][-1] == "restore"]
    assert [c["version"] for c in restores] == ["17.1", "16.11"]
    assert all(c["env"].get("force") == "yes" for c in restores)
    status = rig.cli("16.11", "status", "--json").json[0]
    assert status["data_version"] == "16.11" and status["dirty"] is None
    assert rig.cli("16.11", "verify").code == 0
