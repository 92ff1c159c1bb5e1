"""Settings of the `mongodb` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pydantic import Field

from nixos_migrate.manifest import AbsolutePath, VersionedSettings
from nixos_migrate_mongodb import versions


class MongoSettings(VersionedSettings):
    """
    db_path: mongod's dbPath (NixOS: services.mongodb.dbpath, /var/lib/mongodb).
    packages: major ("6.0") -> install prefix holding bin/mongod, and bin/mongodump and
        bin/mongorestore when the prefix has the database tools.
    port: a loopback TCP port for the private servers the plugin starts (default: none; they
        listen on a unix socket in a 0700 directory only).
    socket: that unix socket (default: in the service's private run directory).
    replica_set: the replica set this mongod belongs to (NixOS: services.mongodb.replSetName).
        `plan` then gives the rolling order of the set as data; the plugin performs standalone
        servers only and refuses to act on a member.
    initial_version: the major that last ran on the data, the first time nixos-migrate sees it;
        it is started first to read the FCV (default: the journal, then every package newest
        first).
    mongodump: back up with the package's mongodump/mongorestore when it has them (default), or
        always with the plugin's own pymongo dump (False).
    batch: documents per insert in the plugin's own restore.
    There is no password setting: the private servers run without access control on a socket
    only the service's user reaches; the service's own server is stopped before a step, never
    talked to.
    """

    @staticmethod
    def version_key(version: str) -> object:
        return versions.key(version)

    db_path: AbsolutePath
    packages: dict[str, AbsolutePath] = {}
    port: int | None = Field(default=None, ge=1024, le=65535)
    socket: AbsolutePath | None = None
    replica_set: str | None = None
    initial_version: str | None = None
    mongodump: bool = True
    batch: int = Field(default=1000, ge=1, le=100_000)
