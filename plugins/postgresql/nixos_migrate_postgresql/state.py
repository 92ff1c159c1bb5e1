"""Where a step keeps its files and records, and what a step is (logical or physical, how deep
it is checked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.model import BackupRecord, Step
from nixos_migrate_postgresql import fingerprint
from nixos_migrate_postgresql.cluster import current_dir, major_of
from nixos_migrate_postgresql.server import private_dir
from nixos_migrate_postgresql.settings import PostgresSettings

RETAINED = "retained-cluster"
COPY_LIKE = ("copy", "clone", "copy-file-range", "dump")


def settings_of(service: Service) -> PostgresSettings:
    return service.settings  # type: ignore[no-any-return]


def socket(service: Service) -> Path:
    return private_dir(service, settings_of(service).socket_dir)


def expected_file(service: Service) -> Path:
    return service.state_dir / "expected-fingerprint.json"


def inspection_file(service: Service) -> Path:
    return service.state_dir / "inspection.json"


def target_dir(service: Service, step: Step) -> Path:
    """Where the step's result goes: `data_dir`, unless the data is there now; then the other one.

    So `down` with the upgrade's manifest goes back to old_data_dir, and a NixOS configuration
    switched back to the older major (data_dir = the older major's directory) goes to data_dir."""
    s = settings_of(service)
    return s.source_dir if source_dir(service, step) == s.data_dir else s.data_dir


def source_dir(service: Service, step: Step) -> Path:
    found = current_dir(settings_of(service))
    if found is None or major_of(found) != step.from_version:
        raise MigrateError(
            f"{service.name}: no PostgreSQL {step.from_version} cluster in "
            f"{settings_of(service).data_dir} or {settings_of(service).source_dir}"
        )
    return found


def logical(step: Step) -> bool:
    """Whether the step copies through SQL (every downgrade, the `dump` method)."""
    return step.direction == "down" or step.data.get("method") == "dump"


def depth(service: Service, step: Step) -> fingerprint.Depth:
    """Sampling is exact enough only where pg_upgrade carries the relation files byte for byte."""
    return "full" if logical(step) or settings_of(service).verify_depth == "full" else "sample"


def row_hash(step: Step) -> fingerprint.RowHash:
    """Hashing by columns needs functions of 14 (hash_record_extended for some types) on both sides."""
    return "columns" if min(majors(step)) >= 14 else "text"


def majors(step: Step) -> tuple[int, int]:
    return int(step.from_version or 0), int(step.to_version)


def backup_fingerprint(backup: BackupRecord) -> Any:
    """The fingerprint of the data a backup holds: in its record, or (logical steps) beside it."""
    if backup.detail.get("fingerprint") is not None:
        return backup.detail["fingerprint"]
    sidecar = Path(str(backup.detail.get("fingerprint_file", "")))
    return json.loads(sidecar.read_text()) if sidecar.is_file() else None


def staging_marker(service: Service) -> Path:
    return service.state_dir / "staging.json"


def retained_marker(service: Service) -> Path:
    return service.state_dir / "retained.json"


def verified_file(service: Service) -> Path:
    return service.state_dir / "verified.json"


def settle_file(service: Service) -> Path:
    return service.state_dir / "settle.json"


def expected(service: Service) -> dict[str, Any] | None:
    """Right after a step (or a restore): the fingerprint taken before it."""
    if service.step is None or not expected_file(service).exists():
        return None
    expected = json.loads(expected_file(service).read_text())
    return expected if isinstance(expected, dict) else None
