"""Shared by the mysql plugin's tests: a MariaDB instance holding the corpus, its manifest, and
the independent digest of its content."""

from __future__ import annotations

from pathlib import Path

from mariadb_corpus import corpus_sql, digest

from nixos_migrate.fingerprint import tree_entries
from nixos_migrate.testing.manifests import ServiceRig
from nixos_migrate_mysql.testing import Instance

ALL = ("10.5", "10.11", "11.8")


def make_instance(root: Path, version: str, *, rows: int = 100_000, history: bool = True) -> Instance:
    """A data directory of `version` holding the corpus, shut down slowly."""
    instance = Instance(root / "mysql", version).create()
    with instance.server() as server:
        server.execute(corpus_sql(rows, history=history))
    return instance


def content(instance: Instance, version: str) -> dict[str, str]:
    """The corpus digest read by the server of `version` (the data must be at that version)."""
    with instance.server(version) as server:
        connection = server.connect()
        try:
            return digest(connection)
        finally:
            connection.close()


def files(instance: Instance) -> dict[str, str]:
    """Every file of the data directory, digested (for failures, which must leave it exactly as
    it was; a difference names the files)."""
    return tree_entries(instance.data_dir)


class Rig(ServiceRig):
    """An instance with a manifest (service `db`) and the CLI bound to it."""

    plugin = "mysql"
    service_name = "db"

    versions = ALL
