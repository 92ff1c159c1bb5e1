"""Plugin discovery through entry points, allow/deny lists, and plugins that break the contract.

Third-party plugins are simulated the way pip installs them: a distribution's `.dist-info`
with an `entry_points.txt` on `PYTHONPATH`, so discovery runs through importlib.metadata.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nixos_migrate.testing.cli import run_cli

GOOD = """
from nixos_migrate.hookspecs import hookimpl

@hookimpl
def detect_version(service):
    return "1"

@hookimpl
def plan(service, current, target):
    return []
"""
BROKEN = "raise ImportError('libfoo.so.1: cannot open shared object file')\n"
UNKNOWN_HOOK = """
from nixos_migrate.hookspecs import hookimpl

@hookimpl
def upp(service, step):
    return True
"""


def _dist(site: Path, name: str, module_source: str) -> None:
    module = f"nm_{name}"
    (site / f"{module}.py").write_text(module_source)
    info = site / f"nixos_migrate_{name}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nixos-migrate-{name}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[nixos_migrate]\n{name} = {module}\n")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    _dist(site, "good", GOOD)
    _dist(site, "broken", BROKEN)
    _dist(site, "typo", UNKNOWN_HOOK)
    return site


def test_plugins_lists_loaded_and_failed(site):
    result = run_cli(None, "plugins", "--json", env={"PYTHONPATH": str(site)})
    assert result.code == 0, result.output
    loaded = {p["name"]: p for p in result.json["loaded"]}
    failed = {p["name"]: p for p in result.json["failed"]}
    assert loaded["good"]["distribution"] == "nixos-migrate-good"
    assert loaded["good"]["version"] == "0.3"
    assert loaded["good"]["hooks"] == ["detect_version", "plan"]
    assert "scripts" in loaded
    assert "libfoo.so.1" in failed["broken"]["error"]
    assert "upp" in failed["typo"]["error"] and "rejected" in failed["typo"]["error"]


def test_a_broken_plugin_does_not_break_other_services(site, make_app):
    app = make_app()
    result = app.cli("status", "--json", env={"PYTHONPATH": str(site)})
    assert result.code == 0, result.output
    assert result.json[0]["plugin"] == "scripts"


def test_a_service_on_a_broken_plugin_fails_clearly(site, manifest_builder):
    manifest_builder.service("x", plugin="broken", target="1")
    result = run_cli(manifest_builder.write(), "plan", env={"PYTHONPATH": str(site)})
    assert result.code == 2
    assert "services.x.plugin: plugin 'broken' (nixos-migrate-broken) could not be loaded" in result.stderr
    assert "nixos-migrate plugins" in result.stderr


def test_third_party_plugin_serves_a_service(site, manifest_builder):
    manifest_builder.service("x", plugin="good", target="1")
    result = run_cli(manifest_builder.write(), "plan", "--json", env={"PYTHONPATH": str(site)})
    assert result.code == 0, result.output
    assert result.json[0]["current"] == "1"
    assert result.json[0]["steps"] == []


def test_allow_and_deny_lists(site):
    env = {"PYTHONPATH": str(site), "NIXOS_MIGRATE_PLUGINS": "good,scripts"}
    names = {p["name"] for p in run_cli(None, "plugins", "--json", env=env).json["loaded"]}
    assert names == {"good", "scripts"}
    env = {"PYTHONPATH": str(site), "NIXOS_MIGRATE_DISABLE_PLUGINS": "good"}
    result = run_cli(None, "plugins", "--json", env=env).json
    assert "good" not in {p["name"] for p in result["loaded"]}
    assert {p["name"] for p in result["failed"]} == {"broken", "typo"}


def test_denied_plugin_is_unknown_to_the_manifest(site, manifest_builder):
    manifest_builder.service("x", plugin="good", target="1")
    env = {"PYTHONPATH": str(site), "NIXOS_MIGRATE_DISABLE_PLUGINS": "good"}
    result = run_cli(manifest_builder.write(), "plan", env=env)
    assert result.code == 2
    assert "unknown plugin 'good'" in result.stderr
    assert "NIXOS_MIGRATE_DISABLE_PLUGINS" in result.stderr
