"""Shared by the mongodb plugin's tests: packages of the stand-in mongod (mongod_standin.py: no
real MongoDB server exists on these machines), a dbpath owned by an unprivileged user with a
mongod of one major running on it, manifests.

A package is a prefix whose `bin/mongod` runs the stand-in of one release with this Python; it
has no mongodump, so the plugin's own pymongo dump is what these tests exercise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import site
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mongo_corpus import fingerprint, load
from mongod_standin import RELEASES, prefix_script

from nixos_migrate.fingerprint import tree_entries
from nixos_migrate.testing import provision
from nixos_migrate.testing.manifests import ServiceRig

ALL = tuple(RELEASES)
TESTS = Path(__file__).resolve().parent


def package(version: str) -> Path:
    """The stand-in's prefix of `version` (made once per machine and Python)."""
    root = Path(tempfile.gettempdir()) / f"nixos-migrate-mongod-standin-{os.getuid()}" / version
    program = root / "bin" / "mongod"
    text = prefix_script(str(provision.shared_python()), [str(TESTS), *site.getsitepackages()], RELEASES[version][0])
    if not program.is_file() or program.read_text() != text:
        program.parent.mkdir(parents=True, exist_ok=True)
        tmp = program.with_name(f"mongod.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.rename(program)
    provision.traversable(program.parent)
    return root


@dataclass
class Instance:
    """A dbpath under `root` owned by an unprivileged user, as NixOS's services.mongodb makes it."""

    root: Path
    user: pwd.struct_passwd = field(default_factory=provision.server_user)

    @property
    def db_path(self) -> Path:
        return self.root / "db"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def create(self) -> Instance:
        self.db_path.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        provision.traversable(self.root)
        provision.chown_tree(self.root, self.user)
        os.chmod(self.db_path, 0o700)
        return self

    def settings(self, versions: tuple[str, ...] = ALL, **extra: object) -> dict[str, object]:
        return {"db_path": str(self.db_path), "packages": {v: str(package(v)) for v in versions}} | extra

    @contextlib.contextmanager
    def running(self, version: str) -> Iterator[Any]:
        """mongod `version` on the dbpath, as a pymongo client; shut down cleanly after."""
        import pymongo

        sock = self.run_dir / "test.sock"
        argv = [str(package(version) / "bin" / "mongod"), "--dbpath", str(self.db_path), "--bind_ip", str(sock)]
        server = provision.Server(argv, user=self.user, log=self.run_dir / "test.log")
        client: Any = pymongo.MongoClient(f"mongodb://{quote(str(sock), safe='')}/?directConnection=true",
                                     serverSelectionTimeoutMS=2000)  # fmt: skip

        def ready() -> bool:
            try:
                client.admin.command("ping")
            except pymongo.errors.PyMongoError:
                return False
            return True

        server.start(ready, timeout=60)
        try:
            yield client
        finally:
            with contextlib.suppress(pymongo.errors.PyMongoError):
                client.admin.command("shutdown")
            client.close()
            server.stop(timeout=60)


def make_instance(root: Path, version: str, *, orders: int = 20_000, big: bool = True) -> Instance:
    instance = Instance(root / "mongodb").create()
    with instance.running(version) as client:
        load(client, orders, big)
    return instance


def content(instance: Instance, version: str) -> str:
    """The corpus digest as mongod `version` reads it."""
    with instance.running(version) as client:
        return fingerprint(client)


def fcv(instance: Instance, version: str) -> dict[str, Any]:
    with instance.running(version) as client:
        found = client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})
        return dict(found["featureCompatibilityVersion"])


def files(instance: Instance) -> dict[str, str]:
    """Every file of the dbpath, digested (failures must leave it exactly as it was)."""
    return tree_entries(instance.db_path)


class Rig(ServiceRig):
    """An instance with a manifest (service `docs`) and the CLI bound to it."""

    plugin = "mongodb"
    service_name = "docs"

    versions = ALL


def state(instance: Instance) -> str:
    """The FCV and the corpus digest, read by the first stand-in that opens the data ("no data"
    for an empty dbpath): what the conformance suite compares."""
    from nixos_migrate_mongodb import installation

    if not installation.has_data(instance.db_path):
        return "no data"
    for version in ALL:
        try:
            with instance.running(version) as client:
                found = client.admin.command({"getParameter": 1, "featureCompatibilityVersion": 1})
                return f"{dict(found['featureCompatibilityVersion'])}: {fingerprint(client)}"
        except provision.ProvisionError:
            continue
    raise AssertionError(f"no stand-in mongod opens {instance.db_path}")
