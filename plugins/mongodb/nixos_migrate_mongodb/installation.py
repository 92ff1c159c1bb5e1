"""The programs of one major, and what the dbpath says offline: whether it holds MongoDB data
and whether a mongod works on it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nixos_migrate import datadirs
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate_mongodb import versions
from nixos_migrate_mongodb.settings import MongoSettings

SERVICE = "MongoDB"
LOCK = "mongod.lock"


def settings_of(service: Service) -> MongoSettings:
    settings = service.settings
    if not isinstance(settings, MongoSettings):
        raise MigrateError("the mongodb plugin got settings it did not validate")
    return settings


def prefix(settings: MongoSettings, version: str) -> Path:
    if version not in settings.packages:
        have = ", ".join(sorted(settings.packages, key=versions.key)) or "none"
        raise UsageError(
            f"no package for MongoDB {version} in settings.packages (have {have})",
            hint="add it to settings.packages (NixOS: services.nixos-migrate.mongodb.previousPackages)",
        )
    return settings.packages[version]


def tool(root: Path, name: str) -> Path | None:
    for sub in ("bin", "sbin"):
        candidate = root / sub / name
        if candidate.is_file():
            return candidate
    return None


def mongod(settings: MongoSettings, version: str) -> Path:
    root = prefix(settings, version)
    found = tool(root, "mongod")
    if found is None:
        raise UsageError(
            f"MongoDB {version}: no mongod in {root}/bin",
            hint=f"settings.packages.{version!r} must be the prefix of a mongodb package",
        )
    return found


def release(settings: MongoSettings, version: str) -> str:
    """What the package's mongod says it is (`7.0.14`), checked against the major it is given
    for: a package under the wrong key would open data it must not."""
    program = mongod(settings, version)
    try:
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise MigrateError(f"{program} does not run: {exc}") from None
    words = out.stdout.split()
    found = next((w.removeprefix("v") for w in words if w.startswith("v") and w[1:2].isdigit()), None)
    if out.returncode != 0 or found is None:
        raise MigrateError(f"{program} --version did not say a version: {(out.stdout + out.stderr).strip()[:300]}")
    try:
        major = versions.major(found)
    except UsageError:
        raise UsageError(
            f"settings.packages.{version!r} holds MongoDB {found}, which this plugin does not know"
        ) from None
    if major != version:
        raise UsageError(f"settings.packages.{version!r} holds MongoDB {found}", hint=f"put it under {major!r}")
    return found


def dump_tools(settings: MongoSettings, version: str) -> tuple[Path, Path] | None:
    """mongodump and mongorestore of the package of `version` when it has both and the settings
    let the plugin use them."""
    if not settings.mongodump or version not in settings.packages:
        return None
    root = settings.packages[version]
    dump, load = tool(root, "mongodump"), tool(root, "mongorestore")
    return (dump, load) if dump and load else None


def has_data(db_path: Path) -> bool:
    return db_path.is_dir() and datadirs.holds(db_path, SERVICE)


def check_dir(db_path: Path) -> None:
    other = datadirs.foreign(db_path, SERVICE) if db_path.is_dir() else None
    if other is not None:
        raise UsageError(
            f"{db_path} holds {other} data, not MongoDB's",
            hint="settings.db_path must be mongod's dbPath (NixOS: services.mongodb.dbpath)",
        )


def running_pid(db_path: Path) -> int | None:
    """The pid of a mongod working on `db_path`: mongod keeps its pid in mongod.lock while it
    runs and empties the file when it stops cleanly."""
    try:
        text = (db_path / LOCK).read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # it died: mongod recovers from its journal when started again
    except PermissionError:
        pass
    return pid
