"""nixos-migrate: declarative, journalled, reversible data migrations for NixOS services."""

from nixos_migrate.errors import MigrateError
from nixos_migrate.hookspecs import hookimpl
from nixos_migrate.model import BackupInfo, BackupRecord, Check, Step

__version__ = "0.1.0"

__all__ = ["BackupInfo", "BackupRecord", "Check", "MigrateError", "Step", "__version__", "hookimpl"]
