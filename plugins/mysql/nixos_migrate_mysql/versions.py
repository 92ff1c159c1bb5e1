"""Versions of MariaDB and MySQL, and the rules of the hops between them.

A version is a release series, `major.minor` ("10.11", "11.8", "8.0"). Series from 10 up are
MariaDB's; below 10 they are MySQL's (MariaDB 5.5 was MySQL 5.5's drop-in and is treated as it).

- MariaDB upgrades in place to any later series; the plan visits every series the package map
  holds on the way (each one runs `mariadb-upgrade` on the data), as MariaDB advises.
- MySQL upgrades one release series at a time and never skips an LTS: 5.6 -> 5.7 -> 8.0 -> 8.4.
  A series on the way without a package refuses the plan, naming it. From 8.0.16 the server
  upgrades its own data dictionary and system tables when it starts (`mysql_upgrade` is gone).
- MySQL 5.x data may move to MariaDB (MariaDB reads it and `mariadb-upgrade` converts the system
  tables), with a warning; MySQL 8 data (its data dictionary) cannot: that hop needs
  `method = "logical"`. MariaDB data never becomes MySQL data in place: MySQL's series numbers
  are below MariaDB's, so such a target plans as a down step, which is always logical.
- Neither server supports an in-place downgrade between series: every down step is logical (a
  dump of the newer server loaded into a fresh data directory of the older one).
"""

from __future__ import annotations

import re

from nixos_migrate.errors import UsageError

_SERIES = re.compile(r"^(\d+)\.(\d+)$")
#: MySQL's release series in order; an upgrade visits each one between its ends
MYSQL_SERIES = ("5.5", "5.6", "5.7", "8.0", "8.4")
#: the first MySQL release whose server upgrades its own system tables when it starts
MYSQL_SELF_UPGRADE = (8, 0)


def key(version: str) -> tuple[int, int]:
    """The sortable form of a series; `UsageError` for anything else."""
    match = _SERIES.match(version)
    if match is None:
        raise UsageError(f"{version!r} is not a MariaDB/MySQL release series like '10.11' or '8.0'")
    return int(match[1]), int(match[2])


def series_of(release: str) -> str:
    """`10.11.18-MariaDB-0+deb12u1` or `8.0.36` -> `10.11` / `8.0`."""
    match = re.match(r"^\s*(\d+)\.(\d+)", release)
    if match is None:
        raise UsageError(f"cannot read a MariaDB/MySQL version from {release!r}")
    return f"{int(match[1])}.{int(match[2])}"


def is_mariadb(version: str) -> bool:
    return key(version) >= (10, 0)


def flavour(version: str) -> str:
    return "MariaDB" if is_mariadb(version) else "MySQL"


def label(version: str) -> str:
    return f"{flavour(version)} {version}"


def path(current: str, target: str, available: set[str], *, logical: bool) -> list[str]:
    """The versions an upgrade visits from `current` to `target` (both included).

    `available`: the series the package map holds. Raises `UsageError` naming what is missing or
    what no method can do.
    """
    if key(target) <= key(current):
        raise UsageError(f"{target} is not above {current}")
    if logical:
        return [current, target]  # a dump of any server loads into a fresh one of any later series
    if not is_mariadb(current) and is_mariadb(target):
        if key(current) >= (8, 0):
            raise UsageError(
                f"MySQL {current} data (its data dictionary) cannot be opened by MariaDB {target}",
                hint='use settings.method = "logical" (a dump loaded into a fresh MariaDB data directory)',
            )
        return [current, target]
    if is_mariadb(current):
        between = sorted((v for v in available if key(current) < key(v) < key(target) and is_mariadb(v)), key=key)
        return [current, *between, target]
    # MySQL: every release series between the ends, each with its package
    series = sorted({*MYSQL_SERIES, current, target}, key=key)
    between = [v for v in series if key(current) < key(v) < key(target)]
    missing = [v for v in between if v not in available]
    if missing:
        raise UsageError(
            f"MySQL upgrades one release series at a time: {current} -> {target} passes through"
            f" {', '.join(between)}, and settings.packages has no {', '.join(missing)}",
            hint="add the missing series to settings.packages (NixOS: services.nixos-migrate.mysql.previousPackages)",
        )
    return [current, *between, target]


def crossing_warning(current: str, target: str) -> str | None:
    """The warning of a hop from MySQL to MariaDB, or between the two by a dump."""
    if is_mariadb(current) == is_mariadb(target):
        return None
    return (
        f"{label(current)} -> {label(target)} changes the server family: the user databases, routines, events"
        " and accounts are carried; authentication plugins, server variables and replication settings of the"
        " other family are not, and the way back is the backup"
    )


def self_upgrading(version: str) -> bool:
    """MySQL 8.0 and later upgrade their own system tables at start (8.0.16+; we ask for 8.0.16+)."""
    return not is_mariadb(version) and key(version) >= MYSQL_SELF_UPGRADE
