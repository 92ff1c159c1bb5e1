# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""A stand-in `mongod` for the mongodb plugin's tests: no MongoDB server exists on these machines
(no mongod, mongodump or FerretDB in any reachable registry; SERVERS.md).

It is the most faithful one PyPI allows: `mockupdb` speaks MongoDB's wire protocol (OP_MSG) to
the real pymongo the plugin uses, `mongomock` stores the documents and answers queries, and this
module plays the parts of mongod the plugin depends on, with the rules of the real server:

- `mongod --version` says `db version vX.Y.Z`; unknown options are refused as mongod refuses them;
- `--dbpath` must exist; `mongod.lock` holds the pid while it runs (a second server on the same
  dbpath is refused), emptied on a clean shutdown;
- the data's featureCompatibilityVersion lives in `admin.system.version`; a server starts only on
  data whose FCV is its own major or the one before (mid-transition documents included), and
  refuses other data with mongod's "UPGRADE PROBLEM" words and exit code 62;
- `setFeatureCompatibilityVersion` accepts only those two values and, from 7.0 on, only with
  `confirm: true` (error 7369100 otherwise);
- `hello`, `buildInfo`, `getParameter`, `listDatabases`, `listCollections`, `listIndexes`,
  `create` (collection options and views), `createIndexes` (unique indexes enforced), `insert`,
  `find`/`getMore`/`killCursors` with batches, `update`, `delete`, `count`, `drop`,
  `dropDatabase`, `createUser`, `_mergeAuthzCollections` (as mongorestore uses it), `validate`
  (which really checks: BSON, `_id`, unique indexes) and `shutdown`;
- writes reach the disk at checkpoints (every second and at shutdown) as WiredTiger's journal
  would bound them; a SIGKILL loses at most the last ones.

Its files are its own (`standin.bson` beside `storage.bson`, `WiredTiger`, `WiredTiger.turtle`),
so the plugin's file-level backup and restore work on it as on real data. It lives in tests only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

#: major -> (release, maxWireVersion)
RELEASES = {
    "4.4": ("4.4.29", 9),
    "5.0": ("5.0.31", 13),
    "6.0": ("6.0.20", 17),
    "7.0": ("7.0.16", 21),
    "8.0": ("8.0.4", 25),
}
MAJORS = list(RELEASES)
DATA = "standin.bson"
EXIT_NEED_UPGRADE = 62
EXIT_BAD_OPTIONS = 2
EXIT_DBPATH = 100
#: collections of the stand-in's own: never data
_INTERNAL = {"local": {"startup_log"}}


def prefix_script(python: str, paths: list[str], release: str) -> str:
    """The text of `bin/mongod` of a stand-in package of `release`, run by `python` with `paths`
    (this directory, the site-packages holding mockupdb, mongomock and pymongo) first."""
    return (
        f"#!{python}\nimport sys\nsys.path[:0] = {paths!r}\n"
        f"import mongod_standin\nsys.exit(mongod_standin.main({release!r}, sys.argv[1:]))\n"
    )


class Options:
    def __init__(self, argv: list[str]) -> None:
        self.version = False
        self.dbpath: Path | None = None
        self.port = 27017
        self.bind_ip = "127.0.0.1"
        self.logpath: Path | None = None
        flags = {"--version", "--nounixsocket", "--quiet"}
        valued = {"--dbpath", "--port", "--bind_ip", "--logpath", "--filePermissions", "--setParameter"}
        args = iter(argv)
        for arg in args:
            name, _, inline = arg.partition("=")
            if name in flags:
                self.version |= name == "--version"
                continue
            if name not in valued:
                raise SystemExit(f"Error parsing command line: unrecognised option '{name}'")
            value = inline or next(args, None)
            if value is None:
                raise SystemExit(f"Error parsing command line: the required argument for option '{name}' is missing")
            if name == "--dbpath":
                self.dbpath = Path(value)
            elif name == "--port":
                self.port = int(value)
            elif name == "--bind_ip":
                self.bind_ip = value
            elif name == "--logpath":
                self.logpath = Path(value)


class Store:
    """The data of one dbpath: documents in mongomock, collection options and index specs here."""

    def __init__(self, dbpath: Path) -> None:
        import mongomock

        self.dbpath = dbpath
        self.client: Any = mongomock.MongoClient()
        #: (db, collection) -> {"options": {...}, "indexes": [...], "type": "collection"|"view"}
        self.catalog: dict[tuple[str, str], dict[str, Any]] = {}
        self.dirty = False
        self.lock = threading.RLock()
        #: (ns, index name) -> (fields, sparse, the keys present)
        self.unique: dict[tuple[tuple[str, str], str], tuple[list[str], bool, set[bytes]]] = {}

    # -- persistence ---------------------------------------------------------------------------

    def load(self) -> bool:
        import bson

        path = self.dbpath / DATA
        if not path.is_file():
            return False
        with path.open("rb") as f:
            current: tuple[str, str] | None = None
            batch: list[dict[str, Any]] = []
            for doc in bson.decode_file_iter(f):
                if "$standin" in doc:
                    self._flush(current, batch)
                    meta = doc["$standin"]
                    current = (meta["db"], meta["name"])
                    self.catalog[current] = {k: meta[k] for k in ("options", "indexes", "type")}
                else:
                    batch.append(doc)
                    if len(batch) >= 1000:
                        self._flush(current, batch)
            self._flush(current, batch)
        for ns, meta in self.catalog.items():
            for spec in meta["indexes"]:
                self._enforce(ns, spec)
        return True

    def _flush(self, ns: tuple[str, str] | None, batch: list[dict[str, Any]]) -> None:
        """Documents read back from the file, put straight into mongomock's store: they were
        checked when they were inserted, and its insert costs ten times the reading."""
        from mongomock import helpers

        if ns is not None and batch:
            store = self.coll(ns)._store
            if not store.is_created:
                store.create()
            for doc in batch:
                key = doc["_id"]
                store[helpers.hashdict(key) if isinstance(key, dict) else key] = doc
        batch.clear()

    def checkpoint(self) -> None:
        import bson

        with self.lock:
            if not self.dirty:
                return
            tmp = self.dbpath / f"{DATA}.tmp"
            with tmp.open("wb") as f:
                for ns, meta in sorted(self.catalog.items()):
                    f.write(bson.encode({"$standin": {"db": ns[0], "name": ns[1], **meta}}))
                    store = self.coll(ns)._store
                    if meta["type"] == "collection" and store.is_created:
                        for doc in store.documents:
                            f.write(bson.encode(doc))
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(self.dbpath / DATA)
            turtle = self.dbpath / "WiredTiger.turtle"
            count = int(turtle.read_text().split()[-1]) + 1 if turtle.is_file() else 1
            turtle.write_text(f"WiredTiger version string\ncheckpoint {count}\n")
            self.dirty = False

    # -- collections ---------------------------------------------------------------------------

    def coll(self, ns: tuple[str, str]) -> Any:
        return self.client[ns[0]][ns[1]]

    def ensure(self, ns: tuple[str, str], options: dict[str, Any] | None = None, kind: str = "collection") -> None:
        if ns not in self.catalog:
            indexes = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}] if kind == "collection" else []
            self.catalog[ns] = {"options": dict(options or {}), "indexes": indexes, "type": kind}
            self.dirty = True

    def _enforce(self, ns: tuple[str, str], spec: dict[str, Any]) -> None:
        """Keep the keys of a unique index (mongomock's own check scans the collection on every
        insert: hours for a corpus)."""
        if spec.get("unique") and spec["name"] != "_id_":
            self.unique[ns, spec["name"]] = (list(spec["key"]), bool(spec.get("sparse")), set())
            self.reindex(ns)

    def _key(self, fields: list[str], sparse: bool, doc: dict[str, Any]) -> bytes | None:
        import bson

        values = []
        for name in fields:
            value: Any = doc
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values.append(value)
        if sparse and all(v is None for v in values):
            return None
        return bytes(bson.encode({"k": values}))

    def admit(self, ns: tuple[str, str], doc: dict[str, Any]) -> str | None:
        """The unique index `doc` would violate, or None (then its keys are taken)."""
        keys = []
        for (index_ns, name), (fields, sparse, taken) in self.unique.items():
            if index_ns != ns:
                continue
            key = self._key(fields, sparse, doc)
            if key is not None and key in taken:
                return name
            keys.append((taken, key))
        for taken, key in keys:
            if key is not None:
                taken.add(key)
        return None

    def reindex(self, ns: tuple[str, str]) -> None:
        for (index_ns, _), (fields, sparse, taken) in self.unique.items():
            if index_ns == ns:
                taken.clear()
                for doc in self.coll(ns)._store.documents if self.coll(ns)._store.is_created else []:
                    key = self._key(fields, sparse, doc)
                    if key is not None:
                        taken.add(key)

    def databases(self) -> list[str]:
        return sorted({db for db, _ in self.catalog} | {"admin", "config", "local"})

    def fcv(self) -> dict[str, Any] | None:
        found = self.coll(("admin", "system.version")).find_one({"_id": "featureCompatibilityVersion"})
        return dict(found) if found else None

    def set_fcv(self, doc: dict[str, Any]) -> None:
        ns = ("admin", "system.version")
        self.ensure(ns)
        self.coll(ns).replace_one({"_id": "featureCompatibilityVersion"}, doc, upsert=True)
        self.dirty = True


class Standin:
    def __init__(self, release: str, options: Options) -> None:
        self.release = release
        self.major = ".".join(release.split(".")[:2])
        self.options = options
        self.store = Store(options.dbpath or Path("/data/db"))
        self.cursors: dict[int, tuple[str, list[Any], int]] = {}
        self.cursor_ids = itertools.count(1000)
        self.stopping = threading.Event()

    # -- start and stop ------------------------------------------------------------------------

    def allowed(self) -> list[str]:
        index = MAJORS.index(self.major)
        return MAJORS[max(index - 1, 0) : index + 1]

    def start(self) -> int:
        dbpath = self.store.dbpath
        if not dbpath.is_dir():
            log(f"NonExistentPath: Data directory {dbpath} not found.")
            return EXIT_DBPATH
        lock = dbpath / "mongod.lock"
        if lock.is_file():
            text = lock.read_text().strip()
            if text.isdigit() and Path(f"/proc/{text}").exists():
                log(f"DBPathInUse: Unable to lock the lock file: {lock} (Resource temporarily unavailable). "
                    f"Another mongod instance is already running on the {dbpath} directory")  # fmt: skip
                return EXIT_DBPATH
        had_data = self.store.load()
        fcv = self.store.fcv()
        if had_data:
            problem = self._fcv_problem(fcv)
            if problem:
                log(f"UPGRADE PROBLEM: Found an invalid featureCompatibilityVersion document (ERROR: {problem}). "
                    f"If the current featureCompatibilityVersion is below {self.allowed()[0]}, see the "
                    "documentation on upgrading.")  # fmt: skip
                return EXIT_NEED_UPGRADE
        else:
            self.store.set_fcv({"_id": "featureCompatibilityVersion", "version": self.major})
            import bson

            (dbpath / "storage.bson").write_bytes(bson.encode({"storage": {"engine": "wiredTiger"}}))
            (dbpath / "WiredTiger").write_text(f"WiredTiger\nWiredTiger 11.2.0 (stand-in for mongod {self.release})\n")
        self.store.ensure(("local", "startup_log"))
        self.store.coll(("local", "startup_log")).insert_one({"_id": f"standin-{os.getpid()}", "release": self.release})
        self.store.dirty = True
        lock.write_text(f"{os.getpid()}\n")
        self.store.checkpoint()
        return 0

    def _fcv_problem(self, fcv: dict[str, Any] | None) -> str | None:
        if fcv is None:
            return "Unable to find a featureCompatibilityVersion document in admin.system.version"
        values = {fcv.get("version"), fcv.get("targetVersion"), fcv.get("previousVersion")} - {None}
        allowed = self.allowed()
        if not values <= set(allowed):
            bad = sorted(str(v) for v in values - set(allowed))[0]
            return (f"Invalid featureCompatibilityVersion document in admin.system.version: {fcv}. "
                    f"Invalid feature compatibility version value '{bad}'; expected "
                    + " or ".join(f"'{v}'" for v in allowed))  # fmt: skip
        return None

    def shutdown(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.store.dirty = True
        self.store.checkpoint()
        (self.store.dbpath / "mongod.lock").write_text("")
        if "/" in self.options.bind_ip:
            Path(self.options.bind_ip).unlink(missing_ok=True)  # mongod removes its sockets
        log("shutting down with code:0")

    def serve(self) -> int:
        import mockupdb

        # mockupdb formats every request and reply for its log even when it logs nothing: as
        # JSON, which costs more than the work and fails on some BSON values
        for cls in (mockupdb.Request, mockupdb.OpReply, mockupdb.OpMsgReply):
            cls.__repr__ = lambda self: type(self).__name__
        _, wire = RELEASES[self.major]
        hello = {"ismaster": True, "isWritablePrimary": True, "maxWireVersion": wire, "minWireVersion": 0,
                 "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
                 "maxWriteBatchSize": 100_000, "logicalSessionTimeoutMinutes": 30}  # fmt: skip
        uds = self.options.bind_ip if "/" in self.options.bind_ip else None
        if uds:
            Path(uds).unlink(missing_ok=True)
        server = mockupdb.MockupDB(port=None if uds else self.options.port, auto_ismaster=hello, uds_path=uds,
                          request_timeout=10**7)  # fmt: skip
        server.run()
        if uds:
            os.chmod(uds, 0o700)
        log(f"Waiting for connections on {uds or self.options.port}")

        def checkpoints() -> None:
            while not self.stopping.wait(1.0):
                self.store.checkpoint()

        threading.Thread(target=checkpoints, daemon=True).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._exit())
        while True:
            request = server.receives()
            try:
                with self.store.lock:
                    reply = self.handle(request)
                if reply is SHUTDOWN:
                    self.shutdown()
                    request.hangs_up()
                    os._exit(0)
                request.ok(**reply)
            except CommandError as exc:
                request.reply({"ok": 0, "errmsg": exc.message, "code": exc.code})
            except Exception as exc:
                request.reply({"ok": 0, "errmsg": f"stand-in: {type(exc).__name__}: {exc}", "code": 1})

    def _exit(self) -> None:
        self.shutdown()
        os._exit(0)

    # -- commands ------------------------------------------------------------------------------

    def handle(self, request: Any) -> Any:
        doc = dict(request.doc)
        name = request.command_name
        db = doc.get("$db", "admin")
        handler = getattr(self, f"cmd_{name.lower().lstrip('_')}", None)
        if handler is None:
            raise CommandError(f"no such command: '{name}'", 59)
        return handler(db, doc, request)

    def cmd_ping(self, db, doc, request):
        return {}

    def cmd_endsessions(self, db, doc, request):
        return {}

    def cmd_buildinfo(self, db, doc, request):
        parts = [int(p) for p in self.release.split(".")]
        return {"version": self.release, "versionArray": [*parts, 0], "gitVersion": "stand-in", "bits": 64,
                "storageEngines": ["devnull", "wiredTiger"]}  # fmt: skip

    def cmd_getparameter(self, db, doc, request):
        if doc.get("featureCompatibilityVersion"):
            fcv = self.store.fcv() or {}
            return {"featureCompatibilityVersion": {k: v for k, v in fcv.items() if k != "_id"}}
        raise CommandError("no option found to get", 72)

    def cmd_setfeaturecompatibilityversion(self, db, doc, request):
        if db != "admin":
            raise CommandError("setFeatureCompatibilityVersion may only be run against the admin database.", 13)
        wanted = doc["setFeatureCompatibilityVersion"]
        allowed = self.allowed()
        if wanted not in allowed:
            raise CommandError(f"Invalid feature compatibility version value '{wanted}'; expected "
                               + " or ".join(f"'{v}'" for v in allowed), 2)  # fmt: skip
        if MAJORS.index(self.major) >= MAJORS.index("7.0") and not doc.get("confirm"):
            raise CommandError(
                f"Once you have upgraded to {wanted}, you will not be able to downgrade FCV and binary version "
                "without support assistance. Please re-run this command with 'confirm: true' to acknowledge "
                "this and continue with the FCV upgrade.",
                7369100,
            )
        self.store.set_fcv({"_id": "featureCompatibilityVersion", "version": wanted})
        self.store.checkpoint()
        return {}

    def cmd_listdatabases(self, db, doc, request):
        names = self.store.databases()
        if doc.get("nameOnly"):
            return {"databases": [{"name": n} for n in names]}
        return {"databases": [{"name": n, "sizeOnDisk": 8192, "empty": False} for n in names], "totalSize": 0}

    def cmd_listcollections(self, db, doc, request):
        wanted = (doc.get("filter") or {}).get("name")
        found = []
        for (d, name), meta in sorted(self.store.catalog.items()):
            if d != db or (wanted is not None and name != wanted):
                continue
            entry: dict[str, Any] = {"name": name, "type": meta["type"], "options": meta["options"]}
            if meta["type"] == "collection":
                entry["info"] = {"readOnly": False, "uuid": bson_uuid(uuid.uuid5(uuid.NAMESPACE_URL, f"{d}.{name}"))}
                entry["idIndex"] = meta["indexes"][0]
            else:
                entry["info"] = {"readOnly": True}
            found.append(entry)
        return self._cursor(f"{db}.$cmd.listCollections", found, doc)

    def cmd_listindexes(self, db, doc, request):
        ns = (db, doc["listIndexes"])
        if ns not in self.store.catalog:
            raise CommandError(f"ns does not exist: {db}.{ns[1]}", 26)
        return self._cursor(f"{db}.{ns[1]}", list(self.store.catalog[ns]["indexes"]), doc)

    def cmd_create(self, db, doc, request):
        ns = (db, doc["create"])
        if ns in self.store.catalog:
            raise CommandError(f"Collection {db}.{ns[1]} already exists.", 48)
        options = {k: v for k, v in doc.items() if k not in ("create", "$db", "lsid", "$clusterTime", "writeConcern")}
        if "viewOn" in options:
            options.setdefault("pipeline", [])
            self.store.ensure(ns, options, "view")
            self.store.ensure((db, "system.views"))
            self.store.coll((db, "system.views")).insert_one({"_id": f"{db}.{ns[1]}", **options})
        else:
            self.store.ensure(ns, options)
        return {}

    def cmd_createindexes(self, db, doc, request):
        ns = (db, doc["createIndexes"])
        self.store.ensure(ns)
        meta = self.store.catalog[ns]
        names = {spec["name"] for spec in meta["indexes"]}
        before = len(meta["indexes"])
        for spec in doc["indexes"]:
            spec = {"v": 2, **spec}
            if spec["name"] in names:
                continue
            self.store._enforce(ns, spec)
            meta["indexes"].append(spec)
            names.add(spec["name"])
        self.store.dirty = True
        return {
            "numIndexesBefore": before,
            "numIndexesAfter": len(meta["indexes"]),
            "createdCollectionAutomatically": False,
        }

    def cmd_insert(self, db, doc, request):
        import pymongo.errors

        ns = (db, doc["insert"])
        if self.store.catalog.get(ns, {}).get("type") == "view":
            raise CommandError(f"Namespace {db}.{ns[1]} is a view, not a collection", 166)
        self.store.ensure(ns)
        errors, n = [], 0
        for i, d in enumerate(doc.get("documents") or []):
            d = dict(d)
            index = self.store.admit(ns, d)
            try:
                if index is not None:
                    raise pymongo.errors.DuplicateKeyError(f"index: {index}")
                self.store.coll(ns).insert_one(d)
                n += 1
            except pymongo.errors.DuplicateKeyError as exc:
                errors.append({"index": i, "code": 11000, "errmsg": f"E11000 duplicate key error collection: "
                               f"{db}.{ns[1]} {exc}"})  # fmt: skip
                if doc.get("ordered", True):
                    break
        self.store.dirty = True
        return {"n": n, "writeErrors": errors} if errors else {"n": n}

    def cmd_update(self, db, doc, request):
        ns = (db, doc["update"])
        self.store.ensure(ns)
        coll = self.store.coll(ns)
        matched = modified = 0
        for u in doc.get("updates") or []:
            q, change = u.get("q", {}), u["u"]
            is_operator = isinstance(change, dict) and any(k.startswith("$") for k in change)
            if u.get("multi"):
                result = coll.update_many(q, change, upsert=u.get("upsert", False))
            elif is_operator:
                result = coll.update_one(q, change, upsert=u.get("upsert", False))
            else:
                result = coll.replace_one(q, change, upsert=u.get("upsert", False))
            matched += result.matched_count
            modified += result.modified_count
        self.store.reindex(ns)
        self.store.dirty = True
        return {"n": matched, "nModified": modified}

    def cmd_delete(self, db, doc, request):
        ns = (db, doc["delete"])
        coll = self.store.coll(ns)
        n = 0
        for d in doc.get("deletes") or []:
            result = coll.delete_one(d["q"]) if d.get("limit") == 1 else coll.delete_many(d["q"])
            n += result.deleted_count
        self.store.reindex(ns)
        self.store.dirty = True
        return {"n": n}

    def cmd_count(self, db, doc, request):
        return {"n": self.store.coll((db, doc["count"])).count_documents(doc.get("query") or {})}

    def cmd_aggregate(self, db, doc, request):
        ns = (db, doc["aggregate"])
        meta = self.store.catalog.get(ns)
        pipeline = list(doc.get("pipeline") or [])
        if meta is not None and meta["type"] == "view":
            ns = (db, meta["options"]["viewOn"])
            pipeline = [*meta["options"]["pipeline"], *pipeline]
        return self._cursor(f"{db}.{doc['aggregate']}", list(self.store.coll(ns).aggregate(pipeline)), doc)

    def cmd_find(self, db, doc, request):
        ns = (db, doc["find"])
        meta = self.store.catalog.get(ns)
        coll = self.store.coll(ns)
        query = doc.get("filter") or {}
        if meta is not None and meta["type"] == "view":
            source = self.store.coll((db, meta["options"]["viewOn"]))
            docs = list(source.aggregate([*meta["options"]["pipeline"], {"$match": query}]))
        elif not query and not any(doc.get(k) for k in ("sort", "projection", "skip", "limit")):
            # a whole collection in natural order, as dumps read it: mongomock's find would copy
            # and match every document, which costs more than everything else together
            docs = list(coll._store.documents) if coll._store.is_created else []
        else:
            sort = list((doc.get("sort") or {}).items()) or None
            cursor = coll.find(query, doc.get("projection"), sort=sort, skip=doc.get("skip", 0))
            docs = list(cursor.limit(doc["limit"]) if doc.get("limit") else cursor)
        return self._cursor(f"{db}.{ns[1]}", docs, doc)

    def _cursor(self, ns: str, docs: list[dict[str, Any]], doc: dict[str, Any]) -> dict[str, Any]:
        import bson
        from bson.raw_bson import RawBSONDocument

        # encoded once: the batches are cut by their size as mongod cuts them (16 MiB)
        raw = [RawBSONDocument(bson.encode(d)) for d in docs]
        size = (doc.get("cursor") or {}).get("batchSize", doc.get("batchSize", 101))
        cursor_id = next(self.cursor_ids)
        self.cursors[cursor_id] = (ns, raw, 0)
        first = self._batch(cursor_id, size)
        return {"cursor": {"id": cursor_id if cursor_id in self.cursors else 0, "ns": ns, "firstBatch": first}}

    def _batch(self, cursor_id: int, size: int) -> list[Any]:
        ns, docs, at = self.cursors.pop(cursor_id)
        end, total = at, 0
        while end < len(docs) and end - at < size and (end == at or total + len(docs[end].raw) <= 16 << 20):
            total += len(docs[end].raw)
            end += 1
        if end < len(docs):
            self.cursors[cursor_id] = (ns, docs, end)
        return docs[at:end]

    def cmd_getmore(self, db, doc, request):
        cursor_id = int(doc["getMore"])
        if cursor_id not in self.cursors:
            raise CommandError(f"cursor id {cursor_id} not found", 43)
        ns = self.cursors[cursor_id][0]
        batch = self._batch(cursor_id, doc.get("batchSize") or 1 << 30)
        return {"cursor": {"id": cursor_id if cursor_id in self.cursors else 0, "ns": ns, "nextBatch": batch}}

    def cmd_killcursors(self, db, doc, request):
        killed = [c for c in doc.get("cursors", []) if self.cursors.pop(int(c), None) is not None]
        return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": [], "cursorsUnknown": []}

    def cmd_drop(self, db, doc, request):
        ns = (db, doc["drop"])
        if self.store.catalog.pop(ns, None) is None:
            raise CommandError("ns not found", 26)
        self.store.coll(ns).drop()
        self.store.dirty = True
        return {"ns": f"{db}.{ns[1]}"}

    def cmd_dropdatabase(self, db, doc, request):
        for ns in [ns for ns in self.store.catalog if ns[0] == db]:
            del self.store.catalog[ns]
            self.store.coll(ns).drop()
        self.store.dirty = True
        return {"dropped": db}

    def cmd_createuser(self, db, doc, request):
        import base64
        import hashlib

        ns = ("admin", "system.users")
        self.store.ensure(ns)
        salt = base64.b64encode(os.urandom(28)).decode()
        secret = hashlib.pbkdf2_hmac("sha256", doc.get("pwd", "").encode(), salt.encode(), 15000)
        stored = base64.b64encode(hashlib.sha256(secret).digest()).decode()
        roles = [r if isinstance(r, dict) else {"role": r, "db": db} for r in doc.get("roles", [])]
        user = {"_id": f"{db}.{doc['createUser']}", "userId": bson_uuid(), "user": doc["createUser"], "db": db,
                "credentials": {"SCRAM-SHA-256": {"iterationCount": 15000, "salt": salt,
                                                  "storedKey": stored,
                                                  "serverKey": base64.b64encode(secret).decode()}},
                "roles": roles}  # fmt: skip
        self.store.coll(ns).insert_one(user)
        self.store.dirty = True
        return {}

    def cmd_createrole(self, db, doc, request):
        ns = ("admin", "system.roles")
        self.store.ensure(ns)
        role = {"_id": f"{db}.{doc['createRole']}", "role": doc["createRole"], "db": db,
                "privileges": doc.get("privileges", []), "roles": doc.get("roles", [])}  # fmt: skip
        self.store.coll(ns).insert_one(role)
        self.store.dirty = True
        return {}

    def cmd_mergeauthzcollections(self, db, doc, request):
        for temp, target in (("tempUsersCollection", "system.users"), ("tempRolesCollection", "system.roles")):
            source = doc.get(temp)
            if not source:
                continue
            src_ns = tuple(source.split(".", 1))
            ns = ("admin", target)
            self.store.ensure(ns)
            if doc.get("drop"):
                self.store.coll(ns).delete_many({})
            for d in self.store.coll(src_ns).find({}):
                self.store.coll(ns).replace_one({"_id": d["_id"]}, d, upsert=True)
        self.store.dirty = True
        return {}

    def cmd_validate(self, db, doc, request):
        import bson

        ns = (db, doc["validate"])
        meta = self.store.catalog.get(ns)
        if meta is None or meta["type"] != "collection":
            raise CommandError(f"Collection '{db}.{ns[1]}' does not exist to validate.", 26)
        errors: list[str] = []
        count = 0
        seen_ids: set[bytes] = set()
        store = self.store.coll(ns)._store
        documents = list(store.documents) if store.is_created else []  # as stored, not copied by find
        for d in documents:
            count += 1
            if "_id" not in d:
                errors.append("a document without _id")
            key = bson.encode({"k": d.get("_id")})
            if key in seen_ids:
                errors.append(f"duplicate _id {d.get('_id')!r}")
            seen_ids.add(key)
            if len(bson.encode(d)) > 16 * 1024 * 1024:
                errors.append(f"document {d.get('_id')!r} exceeds the BSON size limit")
        for (index_ns, name), (fields, sparse, _) in self.store.unique.items():
            if index_ns == ns:
                found = [self.store._key(fields, sparse, d) for d in documents]
                present = [k for k in found if k is not None]
                if len(set(present)) != len(present):
                    errors.append(f"unique index {name} holds duplicate keys")
        damage = meta["options"].get("standinCorrupt")  # a test's damage, from a major on
        if damage and MAJORS.index(self.major) >= MAJORS.index(damage.get("from", MAJORS[0])):
            errors.append(damage["error"])
        keys = {spec["name"]: count for spec in meta["indexes"]}
        return {"ns": f"{db}.{ns[1]}", "nInvalidDocuments": 0, "nrecords": count, "nIndexes": len(keys),
                "keysPerIndex": keys, "valid": not errors, "errors": errors[:20], "warnings": []}  # fmt: skip

    def cmd_shutdown(self, db, doc, request):
        return SHUTDOWN


SHUTDOWN = object()


class CommandError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def bson_uuid(value: uuid.UUID | None = None) -> Any:
    from bson.binary import Binary

    return Binary((value or uuid.uuid4()).bytes, 4)


_LOG: Any = sys.stdout


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    _LOG.write(f'{{"t":"{stamp}","s":"I","msg":{message!r}}}\n')
    _LOG.flush()


def main(release: str, argv: list[str]) -> int:
    global _LOG
    try:
        options = Options(argv)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_OPTIONS
    if options.version:
        print(f'db version v{release}\nBuild Info: {{\n    "version": "{release}",\n    "gitVersion": "stand-in"\n}}')
        return 0
    if options.logpath is not None:
        _LOG = options.logpath.open("a")
    standin = Standin(release, options)
    code = standin.start()
    if code:
        return code
    with contextlib.suppress(KeyboardInterrupt):
        standin.serve()
    return 0
