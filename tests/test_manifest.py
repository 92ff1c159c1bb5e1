"""Manifest loading: one schema in JSON and TOML, errors naming the file and the key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nixos_migrate.errors import ManifestError, MigrateError
from nixos_migrate.manifest import Manifest, load_manifest, parse_manifest

TOML = """
state_dir = "/var/lib/nixos-migrate"
generation = 42

[services.postgresql]
target = "17"
unit = "postgresql.service"
user = "postgres"
accept = ["17"]
[services.postgresql.settings]
data_dir = "/var/lib/postgresql/17"

[services.myapp]
plugin = "scripts"
target = "2024-05-01"
after = ["postgresql"]
[[services.myapp.migrations]]
version = "2024-05-01"
up = { script = "echo up", warn = "careful", backup = "cp -a x $BACKUP", restore = "cp -a $BACKUP x" }
down = { script = "echo down" }
[[services.myapp.migrations]]
version = "2024-01-01"
"""


def test_toml_and_json_spell_the_same_manifest(tmp_path):
    toml_path = tmp_path / "m.toml"
    toml_path.write_text(TOML)
    from_toml = load_manifest(toml_path)
    json_path = tmp_path / "m.json"
    json_path.write_text(json.dumps(from_toml.model_dump(mode="json")))
    from_json = load_manifest(json_path)
    assert from_toml == from_json
    assert from_toml.backups_root == Path("/var/lib/nixos-migrate/backups")
    assert from_toml.plugin_of("postgresql") == "postgresql"
    # migrations come ordered by date whatever the order written
    assert [m.version for m in from_toml.services["myapp"].migrations] == ["2024-01-01", "2024-05-01"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"services": {"a": {"target": "1", "colour": "red"}}}', "m.json: services.a.colour: unknown key"),
        ('{"servces": {}}', "m.json: servces: unknown key"),
        ('{"services": {"a": {}}}', "m.json: services.a.target: Field required"),
        ('{"services": {"a": {"target": 17}}}', "m.json: services.a.target: Input should be a valid string"),
        ('{"services": {"a": {"target": ""}}}', "m.json: services.a.target: must not be empty"),
        ('{"state_dir": "relative/dir"}', "state_dir must be an absolute path"),
        ('{"generation": "42"}', "m.json: generation: Input should be a valid integer"),
        ('{"services": {"a": {"target": "1", "after": ["b"]}}}', "services.a.after: unknown service 'b'"),
        (
            '{"services": {"a": {"target": "1", "after": ["b"]}, "b": {"target": "1", "after": ["a"]}}}',
            "services form a cycle through `after`: a -> b -> a",
        ),
        ('{"services": {"bad/name": {"target": "1"}}}', "service name 'bad/name'"),
        (
            '{"services": {"a": {"target": "1", "migrations": [{"version": "2024-13-01"}]}}}',
            "m.json: services.a.migrations[0].version: '2024-13-01' is not a date (YYYY-MM-DD)",
        ),
        (
            '{"services": {"a": {"target": "1", "migrations": [{"version": "2024-1-1"}]}}}',
            "services.a.migrations[0].version: '2024-1-1' is not a date",
        ),
        (
            '{"services": {"a": {"target": "1", "migrations": '
            '[{"version": "2024-01-01"}, {"version": "2024-01-01"}]}}}',
            "migration version 2024-01-01 appears twice",
        ),
        (
            '{"services": {"a": {"target": "1", "migrations": [{"version": "2024-01-01", "up": {"scrpt": "x"}}]}}}',
            "services.a.migrations[0].up.scrpt: unknown key",
        ),
        ('{"services": ', "m.json: not valid JSON"),
        ("[1, 2]", "the top level must be a table/object"),
    ],
)
def test_bad_manifests_name_file_and_key_path(tmp_path, text, message):
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert message in str(info.value)
    assert str(info.value).startswith(str(path))


def test_bad_toml(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[services.a\ntarget = 1")
    with pytest.raises(ManifestError, match=r"m\.toml: not valid TOML"):
        load_manifest(path)


def test_missing_manifest_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "nope.json")
    assert "no such manifest" in info.value.message
    assert "NIXOS_MIGRATE_MANIFEST" in (info.value.hint or "")


def test_plugin_settings_errors_name_the_settings_path(make_app, manifest_builder):
    app = make_app()
    app.spec["settings"]["paths"] = ["relative/path"]
    app.spec["settings"]["colour"] = "red"
    result = app.cli("plan")
    assert result.code == 2
    assert f"{app.manifest}: services.app.settings.paths[0]: " in result.stderr
    assert "'relative/path' is not an absolute path" in result.stderr
    assert f"{app.manifest}: services.app.settings.colour: unknown key" in result.stderr


def test_unknown_plugin_is_a_manifest_error(manifest_builder):
    manifest_builder.service("db", plugin="no-such-plugin", target="1")
    from nixos_migrate.testing.cli import run_cli

    result = run_cli(manifest_builder.write(), "plan")
    assert result.code == 2
    assert "services.db.plugin: unknown plugin 'no-such-plugin' (installed: " in result.stderr
    assert "scripts" in result.stderr


# -- fuzz: random documents never raise anything but the project's error type ----------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12)
keys = st.sampled_from(
    [
        "state_dir",
        "backup_dir",
        "generation",
        "services",
        "plugin",
        "target",
        "unit",
        "user",
        "accept",
        "after",
        "settings",
        "migrations",
        "version",
        "up",
        "down",
        "script",
        "warn",
        "backup",
        "restore",
        "a",
        "b",
        "scripts",
        "2024-01-01",
        "",
    ]
) | st.text(max_size=8)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=30,
)


def _parses_or_explains(text: str, fmt: str) -> None:
    """Either a valid manifest, or a project error whose message starts with the source's name."""
    error: MigrateError | None = None
    try:
        result = parse_manifest(text, "fuzz", fmt)
    except MigrateError as exc:
        error = exc
    if error is None:
        assert isinstance(result, Manifest)
    else:
        assert error.message.startswith("fuzz"), error.message
        assert error.exit_code == 2


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_json_documents_raise_only_manifest_errors(doc):
    _parses_or_explains(json.dumps(doc), "json")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_text_raises_only_manifest_errors(text):
    _parses_or_explains(text, "json")
    _parses_or_explains(text, "toml")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), documents, max_size=3), st.text(max_size=10))
def test_random_services_raise_only_manifest_errors(service, target):
    _parses_or_explains(json.dumps({"services": {"svc": {"target": target, **service}}}), "json")
