"""The fingerprint of a mongod's content: per database and collection the type, the options,
the index definitions, the document count and an order-independent digest of the documents'
BSON bytes exactly as the server returns them (field order and types included).

`local` and `config` are the server's own (startup log, sessions); in `admin` the
featureCompatibilityVersion document is what the steps change, so it is left out; users and
roles are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from nixos_migrate.model import Check
from nixos_migrate.progress import Progress
from nixos_migrate_mongodb.server import Server

SKIPPED_DATABASES = frozenset({"local", "config"})
SKIPPED_COLLECTIONS = frozenset({("admin", "system.version")})
_MOD = 1 << 256


def collections(server: Server) -> Iterator[tuple[str, dict[str, Any]]]:
    """(database, listCollections entry) of every collection and view that holds data."""
    for db in sorted(server.client.list_database_names()):
        if db in SKIPPED_DATABASES:
            continue
        for entry in sorted(server.client[db].list_collections(), key=lambda e: e["name"]):
            if (db, entry["name"]) not in SKIPPED_COLLECTIONS:
                yield db, dict(entry)


def raw_collection(server: Server, db: str, name: str) -> Any:
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    return server.client[db].get_collection(name, codec_options=CodecOptions(document_class=RawBSONDocument))


def canonical(value: Any) -> str:
    """Extended JSON (canonical: types kept) with the top-level fields sorted; nested order
    stays as it is, it means something (a compound index's key order)."""
    from bson import json_util

    if isinstance(value, dict):
        value = {k: value[k] for k in sorted(value)}
    return str(json_util.dumps(value, json_options=json_util.CANONICAL_JSON_OPTIONS))


def index_specs(server: Server, db: str, name: str) -> list[dict[str, Any]]:
    """The collection's index definitions as createIndexes takes them (no `v`, no `ns`)."""
    specs = [
        {k: v for k, v in dict(spec).items() if k not in ("v", "ns")} for spec in server.client[db][name].list_indexes()
    ]
    return sorted(specs, key=lambda spec: str(spec["name"]))


def fingerprint(server: Server, progress: Progress, what: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    listed = list(collections(server))
    with progress.task(what, total=len(listed)) as task:
        for db, entry in listed:
            name, kind = entry["name"], entry.get("type", "collection")
            item: dict[str, Any] = {"type": kind, "options": canonical(dict(entry.get("options") or {}))}
            if kind != "view":
                total, count = 0, 0
                for doc in raw_collection(server, db, name).find({}, batch_size=1000):
                    total += int.from_bytes(hashlib.sha256(doc.raw).digest(), "big")
                    count += 1
                item |= {"count": count, "digest": f"{total % _MOD:064x}",
                         "indexes": [canonical(spec) for spec in index_specs(server, db, name)]}  # fmt: skip
            found.setdefault(db, {})[name] = item
            task.advance()
    return found


def summary(found: dict[str, Any]) -> str:
    names = [(db, name) for db, colls in found.items() for name in colls]
    docs = sum(item.get("count", 0) for colls in found.values() for item in colls.values())
    return f"{len(found)} databases, {len(names)} collections and views, {docs} documents"


def compare(expected: dict[str, Any], found: dict[str, Any]) -> Check:
    """Equal content, or the collections that differ and how."""
    problems = []
    for db in sorted(expected.keys() | found.keys()):
        before, after = expected.get(db, {}), found.get(db, {})
        for name in sorted(before.keys() | after.keys()):
            a, b = before.get(name), after.get(name)
            if a == b:
                continue
            if a is None or b is None:
                problems.append(f"{db}.{name} {'appeared' if a is None else 'is missing'}")
                continue
            diff = [k for k in ("type", "options", "indexes", "count", "digest") if a.get(k) != b.get(k)]
            counts = f" ({a.get('count')} -> {b.get('count')} documents)" if "count" in diff else ""
            problems.append(f"{db}.{name}: {', '.join(diff)} differ{counts}")
    detail = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
    return Check("content equals the fingerprint", not problems, detail or summary(found))


def invalid(server: Server, progress: Progress) -> dict[str, str]:
    """`validate` of every collection (not views), the server's own check of its records and
    indexes: the collections it finds invalid, with its first errors."""
    bad = {}
    listed = [(db, e["name"]) for db, e in collections(server) if e.get("type", "collection") == "collection"]
    with progress.task("validate every collection", total=len(listed)) as task:
        for db, name in listed:
            result = server.command({"validate": name}, db=db)
            if not result.get("valid", False):
                bad[f"{db}.{name}"] = "; ".join(str(e) for e in result.get("errors", [])[:3]) or "not valid"
            task.advance()
    return bad


def validate(server: Server, progress: Progress) -> Check:
    bad = invalid(server, progress)
    listed = sum(1 for _, e in collections(server) if e.get("type", "collection") == "collection")
    detail = "; ".join(f"{name}: {errors}" for name, errors in list(bad.items())[:10])
    return Check(f"validate of {listed} collections", not bad, detail)
