"""What a data directory holds, told by the files each service keeps at its top.

Plugins refuse to act on a directory that holds another service's data (a `data_dir` setting
pointing at the wrong place must not be upgraded, copied over or restored into).
"""

from __future__ import annotations

from pathlib import Path

#: file at the top of a data directory -> the service whose data it is
MARKERS = {
    "PG_VERSION": "PostgreSQL",
    "ibdata1": "MySQL/MariaDB",
    "mysql": "MySQL/MariaDB",
    "data.mdb": "OpenLDAP (LMDB)",
    "cn=config": "OpenLDAP (configuration)",
    "dump.rdb": "Redis",
    "appendonlydir": "Redis",
    "WiredTiger": "MongoDB",
    "storage.bson": "MongoDB",
}


def foreign(data_dir: Path, own: str) -> str | None:
    """The service other than `own` (a MARKERS value) whose data `data_dir` holds, or None."""
    for name, service in MARKERS.items():
        if service != own and (data_dir / name).exists():
            return service
    return None


def holds(data_dir: Path, service: str) -> bool:
    """Whether `data_dir` has a marker of `service`."""
    return any(s == service and (data_dir / name).exists() for name, s in MARKERS.items())
