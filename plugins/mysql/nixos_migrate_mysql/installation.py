"""What is on disk: the programs of one version, and the data directory read offline.

Install layouts differ: nixpkgs has everything in `bin/`; Debian has the server in `usr/sbin`;
MySQL's tarballs in `bin/`. Names differ by family and age (mariadbd/mysqld, mariadb-dump/
mysqldump, mariadb-upgrade/mysql_upgrade, mariadb-install-db/mysql_install_db): each tool is
looked for under every name, newest first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
from pathlib import Path

from nixos_migrate import datadirs
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.model import Step
from nixos_migrate_mysql import versions
from nixos_migrate_mysql.settings import MysqlSettings

_DIRS = ("bin", "sbin", "libexec")
TOOLS = {
    "server": ("mariadbd", "mysqld"),
    "client": ("mariadb", "mysql"),
    "dump": ("mariadb-dump", "mysqldump"),
    "upgrade": ("mariadb-upgrade", "mysql_upgrade"),
    "install-db": ("mariadb-install-db", "mysql_install_db"),
    "check": ("mariadb-check", "mysqlcheck"),
}
#: files the server writes with the version that last upgraded the data (MariaDB 11 renamed it)
UPGRADE_INFO = ("mariadb_upgrade_info", "mysql_upgrade_info")
#: databases that are the server's own, never carried by a dump
SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")


def settings_of(service: Service) -> MysqlSettings:
    settings = service.settings
    if not isinstance(settings, MysqlSettings):
        raise MigrateError("the mysql plugin got settings it did not validate")
    return settings


def sampled(settings: MysqlSettings, step: Step | None) -> bool:
    """Whether the fingerprint the backup keeps across `step`, and the checks against it, read a
    sample of the big tables (settings.verify_depth). An in-place upgrade rewrites no row; a
    logical step compares its copy in full all the same, with the rows it read during the dump."""
    return step is not None and settings.verify_depth != "full"


def prefix(settings: MysqlSettings, version: str) -> Path:
    if version not in settings.packages:
        have = ", ".join(sorted(settings.packages, key=versions.key)) or "none"
        raise UsageError(
            f"no package for {versions.label(version)} in settings.packages (have {have})",
            hint="add it to settings.packages (NixOS: services.nixos-migrate.mysql.previousPackages)",
        )
    return settings.packages[version]


def tool(root: Path, kind: str) -> Path:
    """The program of `kind` (TOOLS) in the install prefix `root`."""
    for name in TOOLS[kind]:
        for sub in _DIRS:
            candidate = root / sub / name
            if os.access(candidate, os.X_OK):
                return candidate
    names = "/".join(TOOLS[kind])
    raise MigrateError(f"{names} not found in {root} ({', '.join(_DIRS)})")


def share_dir(root: Path) -> Path | None:
    """Where the error messages (english/errmsg.sys) are: share/mysql, share/mariadb or share."""
    for sub in ("share/mysql", "share/mariadb", "share"):
        if (root / sub / "english" / "errmsg.sys").is_file():
            return root / sub
    return None


def has_data(data_dir: Path) -> bool:
    try:
        return any(data_dir.iterdir())
    except FileNotFoundError:
        return False


def foreign(data_dir: Path) -> str | None:
    """The service whose data `data_dir` holds when it is not MySQL/MariaDB data, else None."""
    other = datadirs.foreign(data_dir, "MySQL/MariaDB")
    if other is not None:
        return other
    if not (data_dir / "mysql").is_dir() and not (data_dir / "ibdata1").exists():
        return "something that is not MySQL/MariaDB data (no mysql/ system database, no ibdata1)"
    return None


def upgrade_info(data_dir: Path) -> str | None:
    """The release in the upgrade-info file (`10.11.18-MariaDB`), or None."""
    for name in UPGRADE_INFO:
        with contextlib.suppress(OSError):
            text = (data_dir / name).read_bytes().decode("ascii", "replace").strip("\0 \n")
            if text:
                return text
    return None


def redo_log_creator(data_dir: Path) -> str | None:
    """The release that created the InnoDB redo log (its header names it: `MariaDB 10.5.23`,
    `MySQL 8.0.36`), or None."""
    candidates = [data_dir / "ib_logfile0", *sorted((data_dir / "#innodb_redo").glob("#ib_redo*"))]
    for path in candidates:
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            head = handle.read(4096).decode("latin-1")
            match = re.search(r"(MariaDB|MySQL) (\d+\.\d+\.\d+)", head)
            if match:
                return f"{match[2]}-{match[1]}"
    return None


def running_pid(settings: MysqlSettings) -> int | None:
    """The pid of a live server on the data directory, or None: the process holding InnoDB's lock
    on ibdata1 (wherever its pid file is), else a pid file in the data directory."""
    holder = _lock_holder(settings.data_dir / "ibdata1")
    if holder is not None:
        return holder
    for pid_file in settings.data_dir.glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except PermissionError:
            return pid  # alive, another user's
        except (OSError, ValueError):
            continue
        return pid
    return None


def _lock_holder(path: Path) -> int | None:
    """The pid holding a POSIX lock on `path` (F_GETLK: asks, takes nothing), or None."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        kind, _whence, _start, _length, pid = struct.unpack("hhqqi4x", answer)
        return pid if kind != fcntl.F_UNLCK and pid > 0 else None
    except OSError:
        return None
    finally:
        os.close(fd)
