"""A dataset shaped like real MongoDB deployments, and its digest read independently of the plugin.

Several databases of different applications (a shop, a CMS with GridFS, analytics, an empty
one): every BSON type (double, string, embedded document, array, binary of the generic, UUID,
MD5 and user subtypes, ObjectId, bool, date before 1970 and at the millisecond, null, regex with
flags, JavaScript code with and without scope, int32, timestamp, int64 beyond 2^53, decimal128
with trailing zeros, MinKey, MaxKey); documents whose _id is a string, an int, an ObjectId or
an embedded document; 20 000 order documents; a 12 MiB document; documents nested 80 deep;
field names beyond the BMP and in every script; unicode and spaces in collection names; a capped
collection; a collection with a $jsonSchema validator and one with a collation; views (one over
a view); indexes compound, unique, partial, sparse, TTL, text with weights, 2dsphere, hashed,
wildcard and with a collation; a GridFS file of 3 MiB in 255 KiB chunks; stored JavaScript
(system.js); users in two databases and a custom role.

What the stand-in cannot hold (time-series collections, change-stream pre-images) is left out:
it answers neither.

The digest reads every collection with plain `find` as raw BSON, sorts the documents' SHA-1s,
and adds the options and index definitions as the server lists them; `local`, `config` and the
FCV document (which the steps change) are left out.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import random
import uuid
from typing import Any

ORDERS = 20_000


def _values(i: int) -> dict[str, Any]:
    from bson import (
        Binary,
        Code,
        Decimal128,
        Int64,
        MaxKey,
        MinKey,
        ObjectId,
        Regex,
        Timestamp,
    )

    return {
        "double": i / 7,
        "negzero": -0.0,
        "inf": float("inf"),
        "text": f"Bestellung Nr. {i} \u2013 ünïcødé 漢字 \U0001f680",
        "doc": {"nested": {"a": i, "b": [i, str(i)]}},
        "array": [1, "two", {"three": 3}, [4, [5]]],
        "bin": Binary(bytes(range(i % 256)) + b"\x00\xff", 0),
        "uuid": Binary(uuid.UUID(int=i).bytes, 4),
        "md5": Binary(hashlib.md5(str(i).encode()).digest(), 5),
        "user_bin": Binary(b"custom", 0x80),
        "oid": ObjectId(f"{i:024x}"),
        "flag": i % 2 == 0,
        "when": datetime.datetime(1969, 7, 20, 20, 17, 40, (i % 1000) * 1000),
        "nothing": None,
        "pattern": Regex(r"^bestell\w+ \d{1,5}$", "imsx"),
        "code": Code("function () { return 1; }"),
        "scoped": Code("function () { return x; }", {"x": i}),
        "int32": i - 2**31 if i % 3 == 0 else i,
        "ts": Timestamp(1_700_000_000 + i, i % 7),
        "int64": Int64(2**53 + i),
        "decimal": Decimal128(f"{i}.1000"),
        "min": MinKey(),
        "max": MaxKey(),
    }


def load(client: Any, orders: int = ORDERS, big: bool = True) -> None:
    import gridfs
    from bson import Code, Int64, ObjectId
    from pymongo import ASCENDING, DESCENDING, GEOSPHERE, HASHED, TEXT

    rng = random.Random(42)
    shop = client["shop"]
    shop.create_collection(
        "customers",
        validator={"$jsonSchema": {"bsonType": "object", "required": ["name"]}},
        validationLevel="moderate",
    )
    shop.customers.insert_many(
        [{"_id": f"cust-{i}", "name": f"Kunde {i}", "city": rng.choice(["Köln", "Zürich", "Łódź", "東京"]),
          "email": f"k{i}@example.org", "loc": {"type": "Point", "coordinates": [rng.uniform(-180, 180),
                                                                                rng.uniform(-90, 90)]}}
         for i in range(2000)]
    )  # fmt: skip
    shop.customers.create_index([("email", ASCENDING)], unique=True, name="email_unique")
    shop.customers.create_index([("loc", GEOSPHERE)], name="loc_2dsphere")
    shop.customers.create_index([("name", ASCENDING)], name="name_de", collation={"locale": "de", "strength": 2})

    batch = []
    for i in range(orders):
        doc = {"_id": i, "customer": f"cust-{i % 2000}", "total": Int64(i * 100), "status": rng.choice(
            ["open", "paid", "shipped"]), "items": [{"sku": f"SKU-{j}", "qty": j} for j in range(i % 5)]}  # fmt: skip
        if i % 10 == 0:
            doc |= _values(i)
        if i % 97 == 0:
            doc["coupon"] = f"C{i}"
        batch.append(doc)
        if len(batch) == 1000:
            shop.orders.insert_many(batch)
            batch = []
    if batch:
        shop.orders.insert_many(batch)
    shop.orders.create_index([("customer", ASCENDING), ("total", DESCENDING)], name="customer_total")
    shop.orders.create_index([("coupon", ASCENDING)], sparse=True, unique=True, name="coupon_sparse")
    shop.orders.create_index([("status", ASCENDING)], partialFilterExpression={"status": "open"}, name="open_only")
    shop.orders.create_index([("customer", HASHED)], name="customer_hashed")
    shop.orders.create_index([("$**", ASCENDING)], name="wildcard", wildcardProjection={"items": 1})
    shop.create_collection("Bestellungen 2024 \u2013 Archiv")
    shop["Bestellungen 2024 \u2013 Archiv"].insert_many([{"_id": ObjectId(f"{i:024x}"), "n": i} for i in range(100)])
    shop.create_collection("big_orders", viewOn="orders", pipeline=[{"$match": {"total": {"$gte": 1_000_000}}}])
    shop.create_collection("big_open_orders", viewOn="big_orders", pipeline=[{"$match": {"status": "open"}}])
    shop.create_collection("events", capped=True, size=1 << 20, max=500)
    shop.events.insert_many([{"_id": i, "kind": "login", "at": datetime.datetime(2024, 1, 1) + datetime.timedelta(
        seconds=i)} for i in range(600)][-500:])  # fmt: skip
    shop.sessions.insert_many([{"_id": {"user": i, "device": "web"}, "seen": datetime.datetime(2030, 1, 1)}
                               for i in range(300)])  # fmt: skip
    shop.sessions.create_index([("seen", ASCENDING)], expireAfterSeconds=3600, name="ttl")
    shop["system.js"].insert_one({"_id": "vat", "value": Code("function (x) { return x * 1.19; }")})
    shop.create_collection("empty")

    cms = client["cms"]
    cms.pages.insert_many(
        [{"_id": f"page-{i}", "title": f"Seite {i}", "body": "Lorem ipsum dolor sit amet " * 50,
          "tags": ["a", "b"], "lang": rng.choice(["de", "fr", "ja"])} for i in range(1000)]
    )  # fmt: skip
    cms.pages.create_index([("title", TEXT), ("body", TEXT)], weights={"title": 10}, name="fulltext",
                           default_language="german")  # fmt: skip
    fs = gridfs.GridFS(cms)
    fs.put(bytes(rng.getrandbits(8) for _ in range(3 << 20)), filename="Logo \u2013 groß.png", chunkSize=255 * 1024)
    deep: dict[str, Any] = {"leaf": True}
    for level in range(80):
        deep = {f"l{level}": deep}
    scripts = {"\U0001f600": 1, "ключ": 2, "مفتاح": 3, "キー": 4, "clé": 5, "k e y": 6}
    cms.odd.insert_many([{"_id": "deep", **deep}, {"_id": "scripts", **scripts}, {"_id": 1.5, "float_id": True}])

    analytics = client["analytics"]
    analytics.measures.insert_many(
        [{"_id": ObjectId(), "sensor": i % 17, "at": datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=i),
          "value": rng.gauss(20, 5)} for i in range(5000)]
    )  # fmt: skip
    if big:
        analytics.blobs.insert_one({"_id": "twelve-mib", "data": io.BytesIO(bytes(12 << 20)).getvalue()})
    client["archive"].create_collection("nothing_yet")

    client.admin.command({"createRole": "orderReader", "privileges": [
        {"resource": {"db": "shop", "collection": "orders"}, "actions": ["find"]}], "roles": []})  # fmt: skip
    client.admin.command({"createUser": "admin", "pwd": "not-a-secret", "roles": ["root"]})
    shop.command({"createUser": "shopapp", "pwd": "not-a-secret", "roles": ["readWrite"]})


def digest(client: Any) -> dict[str, Any]:
    """Per database and collection: options, indexes and the sorted SHA-1s of the documents."""
    from bson import json_util
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument

    raw = CodecOptions(document_class=RawBSONDocument)
    found: dict[str, Any] = {}
    for db in client.list_database_names():
        if db in ("local", "config"):
            continue
        for entry in client[db].list_collections():
            name = entry["name"]
            if (db, name) == ("admin", "system.version"):
                continue
            item = {"type": entry.get("type"), "options": json_util.dumps(entry.get("options", {}))}
            if entry.get("type") != "view":
                coll = client[db].get_collection(name, codec_options=raw)
                shas = sorted(hashlib.sha1(doc.raw).hexdigest() for doc in coll.find())
                item["docs"] = hashlib.sha256("".join(shas).encode()).hexdigest()
                item["count"] = len(shas)
                item["indexes"] = json_util.dumps(sorted(
                    ({k: v for k, v in spec.items() if k != "v"} for spec in client[db][name].list_indexes()),
                    key=lambda spec: spec["name"]))  # fmt: skip
            found[f"{db}.{name}"] = item
    return found


def fingerprint(client: Any) -> str:
    return json.dumps(digest(client), sort_keys=True)
