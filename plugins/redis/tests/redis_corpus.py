"""A dataset shaped like a real application's Redis, and its digest read independently of the plugin.

Several databases (a cache, sessions, a job queue, counters); every core type in both of its
encodings (small ones packed, big ones in their full structure): strings of text, integers,
binary bytes and invalid UTF-8, 1 MiB values, HyperLogLogs and bitmaps; lists of 10^5
elements; integer and text sets; sorted sets with scores such as 1/3, -inf and 1e-300 and a geo
index; hashes of 5*10^4 fields; streams with deleted entries, two consumer groups, pending
entries of two consumers, a consumer with nothing pending, an empty stream with a group; keys
with expiries at odd milliseconds, key names beyond the BMP and with bytes that are no UTF-8.

The digest reads every value with plain commands (no DEBUG, no scripts) in Python, and expiry
as the remaining time (PTTL) plus this machine's clock rounded to the second around the
half-seconds the corpus chose, which any version can answer.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

#: expiries lie this far ahead (so that none passes during a test) at these milliseconds
AHEAD_MS = 6 * 3600 * 1000
OFFSETS = (123, 500, 877)


def of_db(client: Any, db: int) -> Any:
    """A client of database `db` of the server `client` talks to (through its socket)."""
    import redis

    return redis.Redis(
        unix_socket_path=client.connection_pool.connection_kwargs["path"], db=db, protocol=2, socket_timeout=600
    )


def expire_at(i: int) -> int:
    base = (int(time.time()) + AHEAD_MS // 1000) * 1000
    return base + (i % 3600) * 1000 + OFFSETS[i % 3]


#: function libraries (7.0+): what FUNCTION LOAD is given, the engine's first line included
LIBRARIES = (
    "#!lua name=shop\n"
    "redis.register_function('greet', function(keys, args) return 'Grüße, ' .. args[1] end)\n"
    "redis.register_function{function_name='stock', callback=function(keys, args)\n"
    "  return redis.call('GET', keys[1]) end, flags={'no-writes'}}\n",
    "#!lua name=audit\nlocal function stamp(keys, args) return redis.call('INCR', keys[1]) end\n"
    "redis.register_function('stamp', stamp)\n",
)


def _functions(client: Any) -> bool:
    """Whether the server has functions (Redis 7.0+; Valkey says it is Redis 7.2)."""
    return int(client.info("server")["redis_version"].split(".")[0]) >= 7


def load(client: Any, keys: int = 100_000, big: bool = True) -> None:
    """Write the corpus through `client` (db 0 selected); function libraries where the server has
    functions."""
    if _functions(client):
        for code in LIBRARIES:
            client.execute_command("FUNCTION", "LOAD", code)
    cache, sessions, jobs = (of_db(client, db) for db in (0, 1, 5))
    n_cache = keys * 6 // 10
    pipe = cache.pipeline(transaction=False)
    for i in range(n_cache):
        kind = i % 5
        name = f"cache:{i}"
        if kind == 0:
            pipe.set(name, f"text {i} ünïcödé 𝄞")
        elif kind == 1:
            pipe.set(name, i * 7919)
        elif kind == 2:
            pipe.set(name, bytes([i % 256, 0, 255, 0xC3]) * (i % 17 + 1))
        elif kind == 3:
            pipe.set(name, f"expiring {i}")
            pipe.pexpireat(name, expire_at(i))
        else:
            pipe.set(name, "x" * (i % 3000))
        if i % 1000 == 999:
            pipe.execute()
    pipe.set("emoji:𝄞🎉", "key beyond the BMP")
    pipe.set(b"raw:\xff\xfe\x00key", b"\x00\x01\x02")
    pipe.pfadd("visitors", *[f"v{i}" for i in range(5000)])
    pipe.setbit("bitmap", 100_000, 1)
    pipe.setbit("bitmap", 7, 1)
    for i in range(300):
        pipe.rpush(f"list:small:{i}", *[f"e{j}" for j in range(i % 20 + 1)])
        pipe.sadd(f"set:int:{i}", *range(i % 30 + 1))
        pipe.sadd(f"set:text:{i}", *[f"m{j}" for j in range(i % 30 + 1)])
        pipe.zadd(f"zset:small:{i}", {f"m{j}": j / 3 for j in range(i % 20 + 1)})
        pipe.hset(f"hash:small:{i}", mapping={f"f{j}": f"v{j}" for j in range(i % 20 + 1)})
    pipe.execute()
    if big:
        for start in range(0, 100_000, 5000):
            cache.rpush("list:big", *[f"item {j}" for j in range(start, start + 5000)])
        for start in range(0, 50_000, 5000):
            cache.sadd("set:big", *[f"member {j}" for j in range(start, start + 5000)])
            cache.hset("hash:big", mapping={f"field {j}": f"value {j}" * 3 for j in range(start, start + 5000)})
            cache.zadd("zset:big", {f"player {j}": j / 3 for j in range(start, start + 5000)})
        for i in range(5):
            cache.set(f"blob:{i}", bytes(range(256)) * 4096)  # 1 MiB
    cache.zadd("zset:odd", {"neg-inf": float("-inf"), "inf": float("inf"), "tiny": 1e-300, "third": 1 / 3, "zero": 0})
    cache.geoadd("geo:cities", [13.4, 52.52, "Berlin", 2.35, 48.86, "Paris", -0.13, 51.51, "London"])
    # a job queue: a stream with history, deletions, two groups, pending and idle consumers
    for i in range(1, 10_001):
        jobs.xadd("jobs", {"job": f"build {i}", "payload": "p" * (i % 50)}, id=f"{1_700_000_000_000 + i}-0")
    jobs.xgroup_create("jobs", "workers", id="0")
    jobs.xgroup_create("jobs", "audit", id=f"{1_700_000_000_000 + 5000}-0")
    taken = jobs.xreadgroup("workers", "alice", {"jobs": ">"}, count=300)
    jobs.xreadgroup("workers", "bob", {"jobs": ">"}, count=200)
    jobs.xack("jobs", "workers", *[entry_id for entry_id, _ in taken[0][1][:250]])
    jobs.xreadgroup("audit", "carol", {"jobs": "0"}, count=1)  # a consumer with nothing pending
    jobs.xdel("jobs", *[f"{1_700_000_000_000 + i}-0" for i in range(9000, 9100)])  # never delivered
    jobs.xgroup_create("empty-stream", "listeners", id="$", mkstream=True)
    pipe = jobs.pipeline(transaction=False)
    for i in range(keys // 10):
        pipe.incrby(f"counter:{i}", i)
    pipe.execute()
    # sessions: hashes with expiries, and plain keys
    pipe = sessions.pipeline(transaction=False)
    rest = keys - n_cache - keys // 10 - 1500
    for i in range(max(rest, 1000)):
        name = f"session:{i:08x}"
        pipe.hset(name, mapping={"user": f"u{i}", "csrf": hashlib.sha1(str(i).encode()).hexdigest()})
        if i % 2:
            pipe.pexpireat(name, expire_at(i))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def _expiry(pttl: int, read_at: int) -> str:
    if pttl < 0:
        return "none"
    measured = read_at + pttl
    # every expiry of the corpus lies at .123, .500 or .877 of a second: rounding the measured
    # time (off by the few ms between the server's answer and `read_at`) back to its second gives
    # the same second whatever read it
    return str(round((measured - 500) / 1000))


def _read(pipe: Any, name: bytes, kind: str) -> None:
    """Queue the commands that read a value of `kind` (streams are read on their own)."""
    if kind == "string":
        pipe.get(name)
    elif kind == "list":
        pipe.lrange(name, 0, -1)
    elif kind == "set":
        pipe.smembers(name)
    elif kind == "zset":
        pipe.zrange(name, 0, -1, withscores=True)
    elif kind == "hash":
        pipe.hgetall(name)
    else:
        raise AssertionError(f"the corpus has no {kind}")


def _canonical(kind: str, value: Any) -> Any:
    if kind == "set":
        return sorted(value)
    if kind == "zset":
        return [(m, repr(float(s))) for m, s in value]
    if kind == "hash":
        return sorted(value.items())
    return value


def _stream(client: Any, name: bytes) -> Any:
    info = client.xinfo_stream(name)
    groups = []
    for group in client.xinfo_groups(name):
        pending = client.xpending_range(name, group["name"], "-", "+", 100_000)
        consumers = sorted(c["name"] for c in client.xinfo_consumers(name, group["name"]))
        groups.append((group["name"], group["last-delivered-id"], consumers,
                       [(p["message_id"], p["consumer"], p["times_delivered"]) for p in pending]))  # fmt: skip
    last = info["last-generated-id"]
    return (last, client.xrange(name), sorted(groups))


def digest(client: Any) -> dict[str, Any]:
    """db -> {"keys": n, "types": {type: n}, "sha256": digest of every key, type, value, expiry};
    "functions" -> [(library, code)] when the server holds any."""
    found: dict[str, Any] = {}
    if _functions(client):
        listed = client.execute_command("FUNCTION", "LIST", "WITHCODE")
        # redis-py may shape the reply into dicts, or leave the server's flat lists
        libraries = sorted((lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2], strict=True))
                            for lib in listed), key=lambda lib: lib[b"library_name"])  # fmt: skip
        if libraries:
            found["functions"] = [(lib[b"library_name"], lib[b"library_code"]) for lib in libraries]
    for name in client.info("keyspace"):
        c = of_db(client, int(name[2:]))
        entries = []
        types: dict[str, int] = {}
        cursor = 0
        while True:
            cursor, keys = c.scan(cursor, count=1000)
            pipe = c.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
                pipe.pttl(key)
            meta = pipe.execute()
            read_at = int(time.time() * 1000)  # the PTTLs were answered just before
            kinds = [k.decode() for k in meta[::2]]
            for key, kind in zip(keys, kinds, strict=True):
                if kind != "stream":
                    _read(pipe, key, kind)
            values = iter(pipe.execute())
            for key, kind, pttl in zip(keys, kinds, meta[1::2], strict=True):
                types[kind] = types.get(kind, 0) + 1
                value = _stream(c, key) if kind == "stream" else _canonical(kind, next(values))
                entries.append(repr((key, kind, value, _expiry(pttl, read_at))))
            if cursor == 0:
                break
        entries.sort()
        found[name[2:]] = {
            "keys": len(entries),
            "types": types,
            "sha256": hashlib.sha256("\n".join(entries).encode()).hexdigest(),
        }
    return found
