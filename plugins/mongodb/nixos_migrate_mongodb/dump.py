"""Logical backups: the package's `mongodump --archive` when it has the database tools, else the
plugin's own dump through pymongo, in mongodump's directory layout (`DB/NAME.bson` holding the
documents' BSON back to back, `DB/NAME.metadata.json` the options and index definitions in
Extended JSON), so that mongorestore reads it too. Either is checksummed as a tree.

The plugin's restore loads into an empty server: collections with their options, documents in
batches (validation bypassed: they were valid where they came from), then the indexes, then the
views, then users and roles through `_mergeAuthzCollections` as mongorestore does it (the
system collections of authorization take no direct writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate.progress import Progress
from nixos_migrate_mongodb import content
from nixos_migrate_mongodb.server import Server

MANIFEST = "manifest.json"
ARCHIVE = "dump.archive"
FORMAT = "nixos-migrate mongodb dump 1"
#: authorization data: restored through temporary collections and _mergeAuthzCollections
AUTHZ = {"system.users": "tempUsersCollection", "system.roles": "tempRolesCollection"}
#: server-kept collections that a restore does not write (views come from their definitions)
_SERVER_KEPT = frozenset({"system.views", "system.profile"})


def _file_name(name: str) -> str:
    return quote(name, safe=" .-_")


def write(server: Server, dest: Path, progress: Progress) -> dict[str, Any]:
    """Dump everything `content.collections` lists into `dest` (empty); returns the manifest."""
    from bson import json_util

    listed = list(content.collections(server))
    entries = []
    with progress.task("logical dump", total=len(listed)) as task:
        for db, entry in listed:
            name, kind = entry["name"], entry.get("type", "collection")
            folder = dest / _file_name(db)
            folder.mkdir(exist_ok=True)
            meta: dict[str, Any] = {"collectionName": name, "type": kind, "options": dict(entry.get("options") or {})}
            count = 0
            if kind != "view":
                meta["indexes"] = content.index_specs(server, db, name)
                with (folder / f"{_file_name(name)}.bson").open("wb") as f:
                    for doc in content.raw_collection(server, db, name).find({}, batch_size=1000):
                        f.write(doc.raw)
                        count += 1
            metadata = folder / f"{_file_name(name)}.metadata.json"
            metadata.write_text(json_util.dumps(meta, json_options=json_util.CANONICAL_JSON_OPTIONS))
            entries.append({"db": db, "name": name, "type": kind, "count": count,
                            "file": f"{_file_name(db)}/{_file_name(name)}"})  # fmt: skip
            task.advance()
    manifest = {"format": FORMAT, "collections": entries}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def load(server: Server, src: Path, progress: Progress, batch: int) -> None:
    """Load a dump `write` made into `server`, which holds no data of its own."""
    from bson import decode_file_iter, json_util
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    manifest = json.loads((src / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise MigrateError(f"{src} is not a dump this plugin wrote ({manifest.get('format')!r})")
    raw = CodecOptions(document_class=RawBSONDocument)
    entries = manifest["collections"]
    ordered = [e for e in entries if e["type"] != "view"] + [e for e in entries if e["type"] == "view"]
    merge: dict[str, str] = {}
    with progress.task("logical restore", total=sum(e["count"] for e in entries) or None) as task:
        for entry in ordered:
            db, name = entry["db"], entry["name"]
            if name in _SERVER_KEPT:
                continue
            meta = json_util.loads((src / f"{entry['file']}.metadata.json").read_text())
            target = name
            if db == "admin" and name in AUTHZ:
                target = f"nixos_migrate_{name.replace('.', '_')}"
                merge[AUTHZ[name]] = f"admin.{target}"
            server.client[db].command({"create": target, **meta["options"]})
            if entry["type"] == "view":
                continue
            collection = server.client[db].get_collection(target, codec_options=raw)
            docs: list[Any] = []
            with (src / f"{entry['file']}.bson").open("rb") as f:
                for doc in decode_file_iter(f, codec_options=raw):
                    docs.append(doc)
                    if len(docs) >= batch:
                        collection.insert_many(docs, ordered=True, bypass_document_validation=True)
                        task.advance(len(docs))
                        docs = []
            if docs:
                collection.insert_many(docs, ordered=True, bypass_document_validation=True)
                task.advance(len(docs))
            indexes = [spec for spec in meta.get("indexes", []) if spec["name"] != "_id_"]
            if indexes:
                server.client[db].command({"createIndexes": target, "indexes": indexes})
    if merge:
        server.command({"_mergeAuthzCollections": 1, **merge, "drop": True, "db": ""})
        for temp in merge.values():
            server.client.admin.drop_collection(temp.split(".", 1)[1])


def write_archive(service: Service, tools: tuple[Path, Path], server: Server, dest: Path) -> None:
    """`mongodump --archive` of everything into `dest`."""
    service.run.run([str(tools[0]), f"--uri={server.uri}", f"--archive={dest / ARCHIVE}", "--quiet"])


def load_archive(service: Service, tools: tuple[Path, Path], server: Server, src: Path) -> None:
    service.run.run([str(tools[1]), f"--uri={server.uri}", f"--archive={src / ARCHIVE}", "--quiet"])
