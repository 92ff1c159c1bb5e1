"""The files whose stamp tells that no MariaDB/MySQL server ran on the data since a step checked
it (nixos_migrate.checkrecord): the redo log, ibdata1's header, Aria's control file and the
upgrade-info file, which every start and stop writes. The same stamp keeps the fingerprint the
check of a logical step took for that step's backup."""

from __future__ import annotations

from pathlib import Path

from nixos_migrate import checkrecord
from nixos_migrate.context import Service
from nixos_migrate.model import Check

FINGERPRINT = "checked-fingerprint.json"
_STAMPED = ("ib_logfile0", "ibdata1", "aria_log_control", "mariadb_upgrade_info", "mysql_upgrade_info")


def _files(data_dir: Path) -> list[Path]:
    return [data_dir / name for name in _STAMPED]


def keep(service: Service, data_dir: Path, version: str, checks: list[Check]) -> None:
    checkrecord.keep(service, _files(data_dir), version, checks)


def take(service: Service, data_dir: Path, version: str) -> list[Check] | None:
    return checkrecord.take(service, _files(data_dir), version)


discard = checkrecord.discard


def keep_fingerprint(service: Service, data_dir: Path, step: str, fingerprint: dict[str, str]) -> None:
    """The fingerprint check took of the data as it is now, for the backup of `step`."""
    checkrecord.note(service, FINGERPRINT, _files(data_dir), step, fingerprint)


def checked_fingerprint(service: Service, data_dir: Path, step: str) -> dict[str, str] | None:
    """That fingerprint when no server ran on the data since, else None; used once."""
    found = checkrecord.noted(service, FINGERPRINT, _files(data_dir), step)
    return None if found is None else dict(found)
