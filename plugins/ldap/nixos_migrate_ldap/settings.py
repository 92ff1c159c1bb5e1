"""Settings of the `ldap` plugin (`services.<name>.settings`)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nixos_migrate.manifest import AbsolutePath

VERSION = re.compile(r"^2\.[0-9]+$")


class LdapSettings(BaseModel):
    """
    config_dir: the cn=config directory (slapd.d). With config_file too, slapd.conf is converted
        into it at the next step.
    config_file: slapd.conf, for installations that still use one (the source of a conversion).
    data_dir: the directory holding the databases' directories (olcDbDirectory of every database
        must be it or inside it).
    packages: version (2.4, 2.5, 2.6) -> install prefix holding sbin/slapd, slapadd, slapcat,
        slaptest (or bin/, libexec/) and the backend modules.
    suffixes: the suffixes verify counts entries of (default: every database's).
    bind_dn, bind_password_file: the bind verify uses (default: anonymous). The password is read
        from the file, never put in argv.
    port: the loopback port of the private slapd that verify starts.
    max_size: olcDbMaxSize given to mdb databases that have none (LMDB's default is 10 MiB).
    initial_version: the version that wrote existing mdb data the first time nixos-migrate sees
        it (hdb/bdb data is 2.4's; later steps record the version beside the data).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    config_dir: AbsolutePath | None = None
    config_file: AbsolutePath | None = None
    data_dir: AbsolutePath
    packages: dict[str, AbsolutePath] = {}
    suffixes: list[str] | None = None
    bind_dn: str | None = None
    bind_password_file: AbsolutePath | None = None
    port: int = Field(default=20389, ge=1024, le=65535)  # below the kernel's ephemeral range
    max_size: int = Field(default=10 << 30, ge=10 << 20)
    initial_version: str | None = None

    @field_validator("packages")
    @classmethod
    def _versions(cls, packages: dict[str, Path]) -> dict[str, Path]:
        for version in packages:
            if not VERSION.match(version):
                raise ValueError(f"package key {version!r} is not an OpenLDAP version like '2.6'")
        return packages

    @model_validator(mode="after")
    def _a_config(self) -> LdapSettings:
        if self.config_dir is None and self.config_file is None:
            raise ValueError("set config_dir (cn=config) or config_file (slapd.conf)")
        if self.initial_version is not None and not VERSION.match(self.initial_version):
            raise ValueError(f"initial_version {self.initial_version!r} is not a version like '2.5'")
        return self
