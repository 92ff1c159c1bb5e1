"""The releases the plugin knows: Redis from 6.0, Valkey from 7.2, and what each can load.

A version is a release series: `7.0` is Redis 7.0, `valkey-8.0` is Valkey 8.0. They are ordered
by the RDB format they write, which is what a server can load: any file of its own format or an
older one, never a newer one ("Can't handle RDB format version 10"). Valkey forked from Redis
7.2 and kept its format (RDB 11), so Valkey 7.2-8.1 sit between Redis 7.2 and Redis 7.4, whose
format 12 they cannot read. An up step (to a later version in this order) lets the newer server
load the files; a down step copies every key with commands (content.py, copy.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from nixos_migrate.errors import MigrateError

#: series -> RDB format version it writes, in load order
RDB: dict[str, int] = {
    "6.0": 9,
    "6.2": 9,
    "7.0": 10,
    "7.2": 11,
    "valkey-7.2": 11,
    "valkey-8.0": 11,
    "valkey-8.1": 11,
    "7.4": 12,
    "8.0": 12,
    "8.2": 12,
}
ORDER = list(RDB)
VALKEY = "valkey-"
#: the server types every version stores; anything else is a module's type (or a newer built-in)
CORE_TYPES = frozenset({"string", "list", "set", "zset", "hash", "stream"})
#: RDB versions that only Valkey writes beyond Redis's numbering (Valkey 9 writes 80)
_VALKEY_RDB_MIN = 80


def known() -> str:
    return ", ".join(ORDER)


def key(version: str) -> int:
    """The version's place in load order; MigrateError names the versions known."""
    if version not in RDB:
        raise MigrateError(f"unknown Redis/Valkey version {version!r}", hint=f"known versions: {known()}")
    return ORDER.index(version)


def is_valkey(version: str) -> bool:
    return version.startswith(VALKEY)


def flavour(version: str) -> str:
    return "valkey" if is_valkey(version) else "redis"


def major(version: str) -> str:
    return version.removeprefix(VALKEY).split(".")[0]


def label(version: str) -> str:
    return f"Valkey {version.removeprefix(VALKEY)}" if is_valkey(version) else f"Redis {version}"


def series(release: str, flavour_name: str) -> str:
    """The series of a release number a server reported (`7.0.15`, `8.0.1`) for its flavour."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        raise MigrateError(f"cannot read a version in {release!r}")
    name = f"{match[1]}.{match[2]}"
    if flavour_name == "valkey":
        name = VALKEY + name
    if name not in RDB:
        raise MigrateError(f"{label(name)} is not a version this plugin knows", hint=f"known versions: {known()}")
    return name


def loads(reader: str, rdb_version: int) -> bool:
    """Whether the server of `reader` loads files of `rdb_version`."""
    return rdb_version <= RDB[reader]


def path(current: str, target: str, packaged: Iterable[str]) -> list[str]:
    """The versions an upgrade goes through: current, the newest packaged series of each major
    of the current flavour between them, target. Each hop is loaded by the next server; stopping
    at every major lets each one convert what it knows (AOF layout, encodings) as the release
    notes describe, and keeps a backup per major. A crossing to the other flavour is the last
    hop, never a detour."""
    low, high = key(current), key(target)
    stops: dict[str, str] = {}
    for version in sorted((v for v in packaged if v in RDB and low < key(v) < high), key=key):
        if flavour(version) == flavour(current) and major(version) not in {major(current), major(target)}:
            stops[major(version)] = version
    return [current, *sorted(stops.values(), key=key), target]


def crossing_warning(a: str, b: str) -> str | None:
    if flavour(a) == flavour(b):
        return None
    return (
        f"{label(a)} -> {label(b)} crosses from {flavour(a)} to {flavour(b)}: module data types do not cross, "
        "and clients that check the server's name or INFO fields see the other one"
    )


def rdb_series(rdb_version: int) -> list[str]:
    """The series that write `rdb_version`."""
    return [v for v, r in RDB.items() if r == rdb_version]


def valkey_only(rdb_version: int) -> bool:
    return rdb_version >= _VALKEY_RDB_MIN
