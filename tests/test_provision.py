"""The provisioning layer: cached downloads, real servers as an unprivileged user, stopped by pid."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nixos_migrate.testing import provision


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "locks" not in p.parts}


def test_debian_package_of_another_release_unpacks_and_runs():
    root = provision.debian_package("hello", "bullseye")
    out = subprocess.run([root / "usr" / "bin" / "hello", "--version"], capture_output=True, text=True, check=True)
    assert "GNU Hello) 2.10" in out.stdout  # bullseye's version, not this machine's


def _private_cache(tmp_path: Path, monkeypatch) -> Path:
    """A cache of its own, with the bullseye package lists of the shared one (no second update)."""
    import shutil

    shared = provision.cache_dir()
    provision.debian_package("hello", "bullseye")  # the shared lists exist
    cache = tmp_path / "cache"
    lists = shared / "apt" / "bullseye"
    shutil.copytree(lists / "lists", cache / "apt" / "bullseye" / "lists")
    (cache / "apt" / "bullseye" / ".updated").touch()
    monkeypatch.setenv(provision.CACHE_ENV, str(cache))
    return cache


def test_parallel_downloads_of_one_suite_each_get_their_own_package(tmp_path, monkeypatch):
    import concurrent.futures

    _private_cache(tmp_path, monkeypatch)
    packages = ["hello", "liblzf1", "libsnappy1v5", "libaio1"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        roots = list(pool.map(lambda p: provision.debian_package(p, "bullseye"), packages))
    for package, root in zip(packages, roots, strict=True):
        assert (root / ".deb").read_text().startswith(f"{package}_"), (package, (root / ".deb").read_text())


def test_an_entry_holding_another_packages_deb_is_fetched_again(tmp_path, monkeypatch):
    cache = _private_cache(tmp_path, monkeypatch)
    entry = cache / "debian" / "bullseye-hello-latest"
    entry.mkdir(parents=True)
    (entry / ".deb").write_text("liblzf1_3.6-3_amd64.deb")
    (entry / ".complete").touch()
    root = provision.debian_package("hello", "bullseye")
    assert (root / ".deb").read_text().startswith("hello_")
    assert (root / "usr" / "bin" / "hello").exists()
