"""Settings of the `grafana` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from nixos_migrate.manifest import AbsolutePath, VersionedSettings
from nixos_migrate_grafana import versions


class GrafanaSettings(VersionedSettings):
    """
    data_dir: Grafana's data directory (`[paths] data`; NixOS: services.grafana.dataDir,
        /var/lib/grafana).
    database_type: `[database] type`. Only `sqlite3` is moved by this plugin; a `mysql` or
        `postgres` database is refused by name (migrate it with that database's plugin).
    database_path: the SQLite file (`[database] path`; default data_dir/data/grafana.db, as
        NixOS sets it).
    packages: release series ("10.4") -> a Grafana package (a prefix with bin/grafana and
        share/grafana, as nixpkgs builds it). Each release's list of migrations is read from its
        package.
    config_file: the service's grafana.ini, used by the private Grafana processes (its
        secret_key, feature toggles and settings decide what the migrations do); their address,
        database, paths and provisioning are overridden.
    secret_key_file: a file holding `[security] secret_key`, when there is no config_file (passed
        as `$__file{…}`, never as the secret itself).
    port: the loopback port of the private Grafana processes (default: a free one).
    """

    @staticmethod
    def version_key(version: str) -> object:
        return versions.key(version)

    data_dir: AbsolutePath
    database_type: Literal["sqlite3", "mysql", "postgres"] = "sqlite3"
    database_path: AbsolutePath | None = None
    packages: dict[str, AbsolutePath] = {}
    config_file: AbsolutePath | None = None
    secret_key_file: AbsolutePath | None = None
    port: int | None = Field(default=None, ge=1024, le=65535)

    @property
    def database(self) -> Path:
        return self.database_path or self.data_dir / "data" / "grafana.db"
