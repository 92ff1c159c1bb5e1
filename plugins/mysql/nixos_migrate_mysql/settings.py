"""Settings of the `mysql` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from nixos_migrate.manifest import AbsolutePath, VersionedSettings
from nixos_migrate_mysql import versions

Method = Literal["inplace", "logical"]
Depth = Literal["auto", "full", "sample"]


class MysqlSettings(VersionedSettings):
    """
    data_dir: the server's datadir (NixOS: services.mysql.dataDir, /var/lib/mysql).
    packages: release series ("10.11", "11.8", "8.0") -> install prefix holding the server
        (bin/mariadbd or bin/mysqld; sbin/ and libexec/ are looked in too) and its clients
        (mariadb/mysql, mariadb-dump/mysqldump, mariadb-upgrade/mysql_upgrade, the install-db
        script) and share/ (error messages).
    method: inplace (the newer server opens the data, `mariadb-upgrade` converts the system
        tables) or logical (a dump of the current server loaded into a fresh data directory of
        the target). Downgrades are always logical.
    socket: the socket of the private servers the plugin starts (default: in the service's
        state directory, or a private temporary directory when that path is too long for a
        socket); they never listen on TCP unless `port` is set.
    port: a loopback TCP port for the private servers (default: none, socket only).
    admin_user: the account the plugin connects as (default root, which NixOS's install lets in
        through the socket by unix_socket authentication: nixos-migrate runs as root).
    password_file: a file holding admin_user's password, for installations where it needs one.
        Passed to clients in a private option file, never in argv.
    config_file: the service's option file (NixOS: /etc/my.cnf): the private servers read it
        first, so that settings the data depends on hold (innodb_page_size, file paths,
        lower_case_table_names); the plugin's own options (datadir, socket, no networking, no
        event scheduler, no replication) come after it.
    initial_version: the series that wrote data with no upgrade-info file and no readable redo
        log header (MySQL 8's data), the first time nixos-migrate sees it.
    jobs: connections that hash rows in parallel for the fingerprint (big tables with an integer
        primary key split into key ranges).
    verify_depth: how much of the rows the fingerprint before a step and the checks after it
        read: full (every row hashed, CHECK TABLE of every table), sample (tables of 64 MiB and
        more with an integer primary key: the rows of a repeatable eighth of their key range,
        hashed, and no CHECK TABLE of them; smaller tables in full), or auto (sample for the
        in-place upgrade, which opens the same files and rewrites no row; full for logical
        steps, which load every row anew).
    service_socket: the socket of the service's own server, to tell that it runs (default
        /run/mysqld/mysqld.sock, NixOS's).
    """

    @staticmethod
    def version_key(version: str) -> object:
        return versions.key(version)

    data_dir: AbsolutePath
    packages: dict[str, AbsolutePath] = {}
    method: Method = "inplace"
    socket: AbsolutePath | None = None
    port: int | None = Field(default=None, ge=1024, le=65535)
    admin_user: str = "root"
    password_file: AbsolutePath | None = None
    config_file: AbsolutePath | None = None
    initial_version: str | None = None
    service_socket: AbsolutePath = Path("/run/mysqld/mysqld.sock")
    jobs: int = Field(default=2, ge=1, le=64)
    verify_depth: Depth = "auto"
