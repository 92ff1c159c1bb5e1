"""The programs of one version and the version of the data, read offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate_redis import datafiles, versions
from nixos_migrate_redis.settings import RedisSettings

_DIRS = ("bin", "sbin")


def settings_of(service: Service) -> RedisSettings:
    settings = service.settings
    if not isinstance(settings, RedisSettings):
        raise MigrateError("the redis plugin got settings it did not validate")
    return settings


def prefix(settings: RedisSettings, version: str) -> Path:
    if version not in settings.packages:
        have = ", ".join(sorted(settings.packages, key=versions.key)) or "none"
        raise UsageError(
            f"no package for {versions.label(version)} in settings.packages (have {have})",
            hint="add it to settings.packages (NixOS: services.nixos-migrate.redis.previousPackages)",
        )
    return settings.packages[version]


def tool(root: Path, kind: str, version: str) -> Path:
    """`kind` (server, cli) of the package at `root`: valkey-* for Valkey (nixpkgs also links the
    redis-* names), redis-* for Redis."""
    names = [f"valkey-{kind}", f"redis-{kind}"] if versions.is_valkey(version) else [f"redis-{kind}"]
    for name in names:
        for sub in _DIRS:
            candidate = root / sub / name
            if candidate.is_file():
                return candidate
    raise UsageError(
        f"{versions.label(version)}: no {' or '.join(names)} in {root}/bin",
        hint=f"settings.packages.{version!r} must be the {versions.flavour(version)} package's prefix",
    )


def release(root: Path, version: str) -> str:
    """What the server of the package says it is (`7.0.15`), checked against the series it is
    given for: a package under the wrong key would load data it must not."""
    server = tool(root, "server", version)
    try:
        out = subprocess.run([str(server), "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        raise MigrateError(f"{server} does not run: {exc}") from None
    words = out.stdout.split()
    found = next((w.removeprefix("v=") for w in words if w.startswith("v=")), None)
    if out.returncode != 0 or found is None or not words:
        raise MigrateError(f"{server} --version did not say a version: {(out.stdout + out.stderr).strip()[:300]}")
    flavour = "valkey" if words[0].lower() == "valkey" else "redis"
    series = versions.series(found, flavour)
    if series != version:
        raise UsageError(
            f"settings.packages.{version!r} holds {versions.label(series)} ({found})",
            hint=f"put it under {series!r}",
        )
    return found


def layout(settings: RedisSettings) -> datafiles.Layout:
    return datafiles.layout(settings.data_dir, settings.dbfilename, settings.appendfilename, settings.appenddirname)


def appendonly(settings: RedisSettings, found: datafiles.Layout | None = None) -> bool:
    if settings.appendonly is not None:
        return settings.appendonly
    return (found or layout(settings)).aof is not None


def initial(settings: RedisSettings) -> str | None:
    """initial_version in the flavour the settings say (`8.0` of valkey is `valkey-8.0`)."""
    version = settings.initial_version
    if version is not None and settings.flavour == "valkey" and not versions.is_valkey(version):
        version = versions.VALKEY + version
        versions.key(version)
    return version


def data_version(service: Service) -> str | None:
    """The series of the data: the release the newest RDB-formatted file names, else the journal,
    else initial_version. None: no data."""
    s = settings_of(service)
    if not s.data_dir.is_dir():
        return None
    datafiles.check_dir(s.data_dir)
    found = layout(s)
    if found.empty:
        return None
    header = found.newest
    if header is not None and header.writer is not None:
        flavour, number = header.writer
        return versions.series(number, flavour)
    if header is not None and versions.valkey_only(header.rdb_version):
        raise MigrateError(
            f"{header.path} is RDB format {header.rdb_version}, which only a Valkey newer than this plugin writes"
        )
    version = service.journal_version or initial(s)
    if version is None:
        what = f"RDB format {header.rdb_version}" if header else f"an AOF ({found.aof}) without an RDB preamble"
        raise MigrateError(
            f"cannot tell which Redis/Valkey version wrote {s.data_dir}: {what} that does not name its writer",
            hint="set settings.initial_version (e.g. '7.0'); later steps are recorded in the journal",
        )
    if header is not None and not versions.loads(version, header.rdb_version):
        raise MigrateError(
            f"{header.path} is RDB format {header.rdb_version}, newer than {versions.label(version)} writes",
            hint="correct settings.initial_version",
        )
    return version
