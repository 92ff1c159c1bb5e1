"""`nixos-migrate new-plugin`: the generated distribution installs and passes its own tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nixos_migrate.testing.cli import run_cli

REPO = Path(__file__).resolve().parents[1]


def _uv() -> str:
    found = os.environ.get("NIXOS_MIGRATE_UV") or shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is needed to build a fresh venv (./run sets NIXOS_MIGRATE_UV)")
    return found


def test_generated_plugin_installs_is_listed_and_passes_the_conformance_suite(tmp_path):
    result = run_cli(None, "new-plugin", "acme_cache", "--dir", str(tmp_path / "plugin"), "--json")
    assert result.code == 0, result.output
    assert sorted(Path(p).name for p in result.json["files"]) == [
        "README.md",
        "__init__.py",
        "nixos-defaults.nix",
        "nixos.nix",
        "plugin.py",
        "py.typed",
        "pyproject.toml",
        "test_conformance.py",
    ]
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    venv = tmp_path / "venv"
    subprocess.run([_uv(), "venv", "-q", "--python", "python3", str(venv)], check=True, env=env)
    subprocess.run(
        [
            _uv(),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            f"{REPO / 'core'}[testing]",
            str(tmp_path / "plugin"),
            "pytest",
            "pytest-xdist",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    listed = subprocess.run(
        [venv / "bin" / "nixos-migrate", "plugins", "--json"], capture_output=True, text=True, check=True, env=env
    )
    assert "acme_cache" in listed.stdout
    # its NixOS fragment parses, and the defaults it gives a service make a manifest the plugin takes
    nix = shutil.which("nix-instantiate")
    assert nix is not None, "nix-instantiate is missing: install Debian's nix-bin (`./run tests` does)"
    for fragment in ("nixos.nix", "nixos-defaults.nix"):
        parsed = subprocess.run([nix, "--parse", tmp_path / "plugin" / fragment], capture_output=True, text=True)
        assert parsed.returncode == 0, parsed.stderr
    expr = (
        f'(import {REPO / "nixos" / "lib.nix"}).manifest {{ stateDir = "{tmp_path / "state"}";'
        f" defaults.acme_cache = import {tmp_path / 'plugin' / 'nixos-defaults.nix'}"
        f' {{ dataDir = "{tmp_path / "cache-data"}"; }};'
        # the user the defaults name does not exist here: an explicit one wins
        ' services.cache = { plugin = "acme_cache"; target = "1"; user = "root"; }; }'
    )
    manifest = subprocess.run(
        [nix, "--store", "dummy://", "--eval", "--strict", "--json", "-E", expr], capture_output=True, text=True
    )
    assert manifest.returncode == 0, manifest.stderr
    (tmp_path / "manifest.json").write_text(manifest.stdout)
    assert '"unit":"acme_cache.service"' in manifest.stdout.replace(" ", "")
    status = subprocess.run(
        [venv / "bin" / "nixos-migrate", "-m", tmp_path / "manifest.json", "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert status.returncode == 0, status.stderr
    assert '"plugin": "acme_cache"' in status.stdout
    tests = subprocess.run(
        [
            venv / "bin" / "python",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            # its own temporary root: pytest makes /tmp/pytest-of-<user> private again at every
            # start, which took the path to their clusters from the outer run's server users
            "--basetemp",
            str(tmp_path / "inner-pytest"),
            str(tmp_path / "plugin" / "tests"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path / "plugin",
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout
    assert "failed" not in tests.stdout


@pytest.mark.parametrize("name", ["9lives", "has-dash", "Upper", "class", "a" * 41, ""])
def test_invalid_names_write_nothing(tmp_path, name):
    result = run_cli(None, "new-plugin", name, "--dir", str(tmp_path / "out"))
    assert result.code == 2
    assert "is not a valid plugin name" in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_non_empty_dir_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = run_cli(None, "new-plugin", "fine", "--dir", str(tmp_path / "out"))
    assert result.code == 2
    assert "exists and is not an empty directory" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
