"""Settings of the `postgresql` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nixos_migrate.manifest import AbsolutePath

Method = Literal["auto", "link", "copy", "clone", "copy-file-range", "swap", "dump"]


class PostgresSettings(BaseModel):
    """
    data_dir: where the cluster of the target major lives (NixOS: /var/lib/postgresql/<major>).
    old_data_dir: where the current cluster lives, when it is another directory (default:
        data_dir). The data is in data_dir when data_dir holds a cluster, else in old_data_dir.
    packages: major -> install prefix holding bin/ (pg_upgrade, initdb, postgres, ...).
    method: how pg_upgrade moves the files: auto (clone where the filesystem has reflinks, else
        copy-file-range from 17, else copy), link, copy, clone, copy-file-range (17+), swap (18+),
        or dump (pg_dumpall into the new cluster).
    jobs: parallel jobs for pg_upgrade, vacuumdb, the fingerprint and the tables of a logical copy.
    expected_databases: refuse when the cluster holds databases not in this list.
    socket_dir: private socket directory of the servers the plugin starts (default: the
        service's state directory); they never listen on TCP.
    port: port number of those private servers (names the socket; the new one uses port + 1).
    password_file: a file holding the superuser's password, for clusters whose pg_hba.conf
        requires one on the local socket (pg_upgrade connects with it). Never put it in argv.
    superuser: the cluster's bootstrap superuser (default: found by asking the cluster).
    service_socket_dir, service_port: where the service's own server listens once it runs again
        (default /run/postgresql and 5432, NixOS's): `settle` computes the planner statistics
        through it, as the service's user (peer authentication, or password_file).
    verify_depth: how much of the content the fingerprint before a step and the comparison after
        it read: full (every row of every table), sample (tables above 64 MiB by exact size and a
        repeatable sample of their blocks; only for pg_upgrade's methods, which carry the files
        byte for byte), or auto (sample for pg_upgrade, full for dump and downgrades).
    direct_copy_above: in a logical copy (dump, downgrades), tables of at least this many bytes
        are each copied by their own COPY stream, `jobs` at a time, beside pg_dump's stream of the
        rest (default 64 MiB; null: every table through pg_dump).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    data_dir: AbsolutePath
    old_data_dir: AbsolutePath | None = None
    packages: dict[str, AbsolutePath] = {}
    method: Method = "auto"
    jobs: int = Field(default=2, ge=1, le=256)
    expected_databases: list[str] | None = None
    socket_dir: AbsolutePath | None = None
    port: int = Field(default=50432, ge=1024, le=65000)
    password_file: AbsolutePath | None = None
    superuser: str | None = None
    verify_depth: Literal["auto", "full", "sample"] = "auto"
    service_socket_dir: AbsolutePath = Path("/run/postgresql")
    service_port: int = Field(default=5432, ge=1, le=65535)
    direct_copy_above: int | None = Field(default=64 << 20, ge=0)

    @field_validator("packages")
    @classmethod
    def _majors(cls, packages: dict[str, Path]) -> dict[str, Path]:
        for major in packages:
            if not major.isdigit():
                raise ValueError(f"package key {major!r} is not a PostgreSQL major version (like '17')")
        return packages

    @property
    def source_dir(self) -> Path:
        return self.old_data_dir or self.data_dir
