# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""GitLab's required stops as the plugin plans them: logic only (no GitLab exists here)."""

from __future__ import annotations

import itertools

import pytest

from nixos_migrate.errors import UsageError
from nixos_migrate_gitlab import versions

#: GitLab's published path from 13.12 to 18.11, written out by hand from its upgrade docs
PUBLISHED = [
    "14.0", "14.3", "14.9", "14.10", "15.0", "15.4", "15.11", "16.3", "16.7", "16.11",
    "17.1", "17.3", "17.5", "17.8", "17.11", "18.2", "18.5", "18.8", "18.11",
]  # fmt: skip


def test_13_12_to_18_11_lands_on_every_published_stop():
    hops = versions.path("13.12", "18.11", versions.bundled_stops())
    assert [b for _a, b, _stop in hops] == PUBLISHED
    assert hops[0][0] == "13.12"
    for (_a, b, _s), (c, _d, _t) in itertools.pairwise(hops):
        assert b == c


def test_every_pair_of_stops_goes_through_exactly_the_stops_between():
    stops = versions.bundled_stops()
    labels = [s.label for s in stops]
    for i, j in itertools.combinations(range(len(stops)), 2):
        hops = versions.path(labels[i], labels[j], stops)
        assert [b for _a, b, _s in hops] == labels[i + 1 : j + 1], (labels[i], labels[j])


def test_a_target_between_stops_ends_the_path_and_patch_levels_do_not_matter():
    hops = versions.path("17.3.2", "17.7.1", versions.bundled_stops())
    assert [(a, b) for a, b, _s in hops] == [("17.3", "17.5"), ("17.5", "17.7")]
    assert hops[-1][2] is None  # 17.7 is no stop
    assert versions.path("17.8", "17.8.9", versions.bundled_stops()) == []
    assert versions.path("17.8", "17.5", versions.bundled_stops()) == []


def test_the_conditional_stop_is_known_as_one():
    by_label = {s.label: s for s in versions.bundled_stops()}
    assert by_label["17.1"].conditional
    assert not by_label["17.3"].conditional and not by_label["14.0"].conditional


def test_a_packages_own_list_wins_and_a_broken_one_is_named(tmp_path):
    tree = tmp_path / "share" / "gitlab"
    (tree / "config").mkdir(parents=True)
    (tree / "config" / "upgrade_path.yml").write_text("- major: 19\n  minor: 2\n- major: 18\n  minor: 11\n")
    stops, source = versions.stops_for(tree)
    assert [s.label for s in stops] == ["18.11", "19.2"] and source.endswith("upgrade_path.yml")
    assert [b for _a, b, _s in versions.path("18.8", "19.5", stops)] == ["18.11", "19.2", "19.5"]
    (tree / "config" / "upgrade_path.yml").write_text("- major: nineteen\n")
    with pytest.raises(UsageError, match="without integer major and minor"):
        versions.stops_for(tree)
    assert versions.stops_for(tmp_path / "nothing")[1] == "the list shipped with nixos-migrate-gitlab"


@pytest.mark.parametrize("bad", ["seventeen", "17", "17.x", ""])
def test_what_is_no_version_is_refused_by_name(bad):
    with pytest.raises(UsageError, match="is not a GitLab version"):
        versions.key(bad)


def test_postgresql_majors_each_gitlab_major_needs():
    assert versions.min_postgres("16.11") == 13
    assert versions.min_postgres("17.8") == 14
    assert versions.min_postgres("18.2.1") == 16
    assert versions.min_postgres("12.10") is None
