"""The content of a dataset as a fingerprint every version computes alike, and its comparison.

Every key is read by SCAN; per key the server computes a digest of its value, so that values do
not cross the socket: `DEBUG DIGEST-VALUE` for strings, lists, sets and hashes (built for
comparing replicas, independent of the encoding, the same from 6.0 to 8.x and in Valkey), and a
Lua script with `redis.sha1hex` for sorted sets (7.2 changed how DEBUG digests their scores) and
streams (entries, last id, consumer groups, their consumers and pending entries; idle times
excluded, they change by themselves). The expiry of a key is its absolute time in milliseconds:
PEXPIRETIME from 7.0; before it, PTTL read between two readings of the server's clock that fall
in the same millisecond, which makes it exact too.

Per database the fingerprint holds the count and an order-independent digest (a sum of
per-key hashes) of the keys without expiry, and the keys with one grouped by the minute they
expire in: after a step, the minutes still ahead must match exactly; the minutes already
passed may have lost keys to their expiry, which is no loss of the migration's making. Beside
the keys it holds the function libraries (7.0+), each library's name with a digest of its code.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nixos_migrate.model import Check
from nixos_migrate.progress import Progress
from nixos_migrate_redis import versions
from nixos_migrate_redis.server import Server

MINUTE = 60_000
#: keys whose values a fingerprint of depth `sample` digests (see `sampled`)
SAMPLE_KEYS = 16_384
_MOD = 1 << 128

# per key: type and absolute expiry in ms (-1: none); ARGV[1] = "1" when PEXPIRETIME exists
META = """
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  local e = -1
  if ARGV[1] == '1' then
    e = redis.call('PEXPIRETIME', k)
  else
    for _ = 1, 20 do
      local a = redis.call('TIME')
      local p = redis.call('PTTL', k)
      local b = redis.call('TIME')
      if p < 0 then e = p break end
      local ma = a[1] * 1000 + math.floor(a[2] / 1000)
      if ma == b[1] * 1000 + math.floor(b[2] / 1000) then e = ma + p break end
    end
  end
  out[#out + 1] = t
  out[#out + 1] = e
end
return out
"""

# a digest of each sorted set: members in rank order with scores written one way
ZSET = """
local out = {}
for i, k in ipairs(KEYS) do
  local parts = {}
  local n = redis.call('ZCARD', k)
  for start = 0, n - 1, 1000 do
    local r = redis.call('ZRANGE', k, start, start + 999, 'WITHSCORES')
    for j = 1, #r, 2 do
      parts[#parts + 1] = #r[j] .. ':' .. r[j] .. '=' .. string.format('%.17g', tonumber(r[j + 1]))
    end
  end
  out[#out + 1] = redis.sha1hex(table.concat(parts, ','))
end
return out
"""

# a digest of each stream: entries, last id, groups with their last delivered id, consumers and
# pending entries (id, consumer, deliveries)
STREAM = """
local function field(list, name)
  for j = 1, #list, 2 do if list[j] == name then return list[j + 1] end end
  return nil
end
local function flat(parts, value)
  if type(value) == 'table' then
    parts[#parts + 1] = '[' .. #value
    for _, v in ipairs(value) do flat(parts, v) end
  else
    local s = tostring(value)
    parts[#parts + 1] = #s .. ':' .. s
  end
end
local out = {}
for i, k in ipairs(KEYS) do
  local parts = {}
  local info = redis.call('XINFO', 'STREAM', k)
  flat(parts, field(info, 'last-generated-id'))
  local from = '-'
  while true do
    local r = redis.call('XRANGE', k, from, '+', 'COUNT', 1000)
    local first = 1
    if from ~= '-' and #r > 0 and r[1][1] == from then first = 2 end
    for j = first, #r do flat(parts, r[j]) end
    if #r < 1000 then break end
    from = r[#r][1]
  end
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do
    local name = field(g, 'name')
    flat(parts, {'group', name, field(g, 'last-delivered-id')})
    local consumers = {}
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', k, name)) do consumers[#consumers + 1] = field(c, 'name') end
    table.sort(consumers)
    flat(parts, consumers)
    local start = '-'
    while true do
      local p = redis.call('XPENDING', k, name, start, '+', 1000)
      local first = 1
      if start ~= '-' and #p > 0 and p[1][1] == start then first = 2 end
      for j = first, #p do flat(parts, {p[j][1], p[j][2], p[j][4]}) end
      if #p < 1000 then break end
      start = p[#p][1]
    end
  end
  out[#out + 1] = redis.sha1hex(table.concat(parts, ','))
end
return out
"""


@dataclass(slots=True)
class Key:
    name: bytes
    type: str
    expire: int  # absolute ms, -1 none
    digest: bytes = b""  # the value's digest, when asked for
    value: bytes | None = None  # a string's value, when asked for


def scan(server: Server, db: int, batch: int, *, digested: bool = False) -> Iterator[list[Key]]:
    """Every key of `db` in batches, with type, absolute expiry and, when `digested`, the
    server's digest of its value; the type, expiry and digests of a batch come in one round trip."""
    client = server.client(db)
    meta = client.script_load(META)
    cursor = 0
    while True:
        cursor, names = client.scan(cursor, count=batch)
        if names:
            # a key gone between SCAN and the script has type "none": it expired or was deleted
            yield [k for k in describe(server, db, names, digested=digested, meta=meta) if k.type != "none"]
        if cursor == 0:
            return


def describe(
    server: Server, db: int, names: list[bytes], *, digested: bool, meta: str | None = None, values: bool = False
) -> list[Key]:
    """`names` of `db` with type ("none": no such key), absolute expiry and, when `digested`, the
    server's digest of the value, in one round trip (two for sorted sets and streams). With
    `values`, strings come with their value and the digest of a string is computed here from the
    value it comes with (`string_digest`), which spares the server hashing what crosses the socket
    anyway; the others' digests take a second round trip."""
    client = server.client(db)
    pipe = client.pipeline(transaction=False)
    pipe.evalsha(meta or client.script_load(META), len(names), *names, "1" if server.modern else "0")
    if values:
        pipe.mget(names)
    elif digested:
        # every type has one; those of sorted sets and streams are replaced below
        pipe.execute_command("DEBUG", "DIGEST-VALUE", *names)
    replies = pipe.execute()
    found = replies[0]
    digests = replies[1] if digested and not values else [b""] * len(names)
    keys = [Key(bytes(n), found[2 * i].decode(), int(found[2 * i + 1]), digests[i] or b"") for i, n in enumerate(names)]
    if values:
        for key, value in zip(keys, replies[1], strict=True):
            if key.type == "string":
                if value is None:
                    key.type = "none"  # gone between the two reads
                key.value = value
        if digested:
            _value_digests(server, client, keys)
    if digested:
        _script_digests(client, [k for k in keys if k.type != "none"])
    return keys


def _value_digests(server: Server, client: Any, keys: list[Key]) -> None:
    """Digests of keys read with their values: strings hashed here once the server was seen to
    digest them as `string_digest` does (`Server.strings_digested_alike`, asked of the first
    strings read; by the server otherwise), the other types by the server."""
    strings = [k for k in keys if k.value is not None]
    if strings and server.strings_digested_alike is None:
        # keys without an expiry first: one that expires before the server digests it differs
        shown = sorted(strings, key=lambda k: k.expire >= 0)[:16]
        answers = client.execute_command("DEBUG", "DIGEST-VALUE", *[k.name for k in shown])
        server.strings_digested_alike = all(
            a == string_digest(k.value or b"", k.expire >= 0) for k, a in zip(shown, answers, strict=True)
        )
    alike = bool(server.strings_digested_alike)
    for key in strings if alike else []:
        key.digest = string_digest(key.value or b"", key.expire >= 0)
    asked = [k for k in keys if k.type not in ("none", "zset", "stream") and not (alike and k.value is not None)]
    if asked:
        answers = client.execute_command("DEBUG", "DIGEST-VALUE", *[k.name for k in asked])
        for key, answer in zip(asked, answers, strict=True):
            key.digest = answer or b""


def _script_digests(client: object, keys: list[Key]) -> None:
    """Digests of sorted sets and streams, computed by scripts every version runs alike."""
    for kind, script in (("zset", ZSET), ("stream", STREAM)):
        chosen = [k for k in keys if k.type == kind]
        if chosen:
            digests = client.register_script(script)(keys=[k.name for k in chosen])  # type: ignore[attr-defined]
            for key, digest in zip(chosen, digests, strict=True):
                key.digest = digest


def _ahead(batches: Iterator[list[Key]]) -> Iterator[list[Key]]:
    """The batches, the next one read by a thread while the caller digests this one: the server
    works while Python hashes (the socket waits release the GIL)."""
    ready: queue.Queue[list[Key] | BaseException | None] = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for batch in batches:
                ready.put(batch)
            ready.put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    while True:
        item = ready.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def _sha1(data: bytes) -> int:
    return int.from_bytes(hashlib.sha1(data, usedforsecurity=False).digest(), "big")


# DEBUG DIGEST-VALUE of a string, as debug.c computes it: d = 0; d = SHA1(d ^ SHA1(type, 4 bytes
# big-endian: 0 for strings)); d = SHA1(d ^ SHA1(value)); with an expiry, d ^= SHA1("!!expire!!")
_STRING_START = _sha1(_sha1((0).to_bytes(4, "big")).to_bytes(20, "big"))
_EXPIRE = _sha1(b"!!expire!!")


def string_digest(value: bytes, expires: bool) -> bytes:
    """What `DEBUG DIGEST-VALUE` answers for a string key holding `value` (`expires`: it has an
    expiry), computed here from the value: the same from 6.0 to 8.x and in Valkey (a test asks
    every server), and checked against the server's own answer by the copy that uses it."""
    mixed = _STRING_START ^ _sha1(value)
    digest = _sha1(mixed.to_bytes(20, "big"))
    if expires:
        digest ^= _EXPIRE
    return b"%040x" % digest


def _hash(*parts: bytes) -> int:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return int.from_bytes(h.digest(), "little")


class _Sum:
    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def add(self, value: int) -> None:
        self.count += 1
        self.total = (self.total + value) % _MOD

    def merge(self, other: _Sum) -> None:
        self.count += other.count
        self.total = (self.total + other.total) % _MOD

    def pair(self) -> list[Any]:
        return [self.count, f"{self.total:032x}"]


class Tally:
    """A fingerprint built key by key (`add`), database by database (`db` first); `result` is it."""

    def __init__(self) -> None:
        self.dbs: dict[int, tuple[_Sum, dict[int, _Sum]]] = {}
        self.types: dict[str, int] = {}
        self.other: dict[str, list[str]] = {}

    def db(self, db: int) -> None:
        self.dbs.setdefault(db, (_Sum(), {}))

    def add(self, db: int, keys: list[Key]) -> None:
        persistent, expiring = self.dbs[db]
        types = self.types
        for key in keys:
            types[key.type] = types.get(key.type, 0) + 1
            if key.type not in versions.CORE_TYPES:
                names = self.other.setdefault(key.type, [])
                if len(names) < 10:
                    names.append(key.name.decode(errors="backslashreplace"))
            if key.expire < 0:
                persistent.add(_hash(key.name, key.type.encode(), key.digest))
            else:
                bucket = expiring.setdefault(key.expire // MINUTE, _Sum())
                bucket.add(_hash(key.name, key.type.encode(), key.digest, str(key.expire).encode()))

    def merge(self, other: Tally) -> None:
        """`other`'s keys added to these (the sums are order-independent)."""
        for db, (persistent, expiring) in other.dbs.items():
            self.db(db)
            mine, buckets = self.dbs[db]
            mine.merge(persistent)
            for minute, bucket in expiring.items():
                buckets.setdefault(minute, _Sum()).merge(bucket)
        for kind, count in other.types.items():
            self.types[kind] = self.types.get(kind, 0) + count
        for kind, names in other.other.items():
            self.other[kind] = (self.other.get(kind, []) + names)[:10]

    def result(self) -> dict[str, Any]:
        dbs = {
            str(db): {
                "keys": persistent.count + sum(b.count for b in expiring.values()),
                "persistent": persistent.pair(),
                "expiring": {str(m): b.pair() for m, b in sorted(expiring.items())},
            }
            for db, (persistent, expiring) in sorted(self.dbs.items())
        }
        return {"dbs": dbs, "types": self.types, "other_types": self.other, "taken": int(time.time() * 1000)}


def libraries(server: Server) -> list[tuple[bytes, bytes]]:
    """(name, code) of every function library the server holds (Redis 7.0+, Valkey; none before:
    there were no functions), sorted."""
    if not server.modern:
        return []
    found = []
    for library in server.client(raw=True).execute_command("FUNCTION", "LIST", "WITHCODE"):
        fields = dict(zip(library[::2], library[1::2], strict=True))
        found.append((bytes(fields[b"library_name"]), bytes(fields[b"library_code"])))
    return sorted(found)


def functions(server: Server, found: list[tuple[bytes, bytes]] | None = None) -> dict[str, str]:
    """The function libraries as a fingerprint holds them (`found`, else the server's): name ->
    digest of its code (what `FUNCTION LOAD` was given, the engine's first line included)."""
    return {name.decode(errors="backslashreplace"): hashlib.sha256(code).hexdigest()[:32]
            for name, code in (libraries(server) if found is None else found)}  # fmt: skip


def _functions_differ(expected: dict[str, Any], found: dict[str, str] | None) -> str | None:
    """What differs between the libraries of a fingerprint and `found` (None: not read); a
    fingerprint taken before libraries were part of it holds none to compare."""
    if "functions" not in expected or found is None:
        return None
    want = expected["functions"]
    if want == found:
        return None
    missing = sorted(set(want) - set(found))
    changed = sorted(n for n in set(want) & set(found) if want[n] != found[n])
    added = sorted(set(found) - set(want))
    said = [f"{what}: {', '.join(names)}" for what, names in
            (("missing", missing), ("changed", changed), ("added", added)) if names]  # fmt: skip
    return "function libraries differ (" + "; ".join(said) + ")"


def fingerprint(
    server: Server, batch: int, progress: Progress, what: str, *, each: Callable[[int, list[Key]], None] | None = None
) -> dict[str, Any]:
    """{"dbs": {db: {"keys": n, "persistent": [count, digest], "expiring": {minute: [count,
    digest]}}}, "types": {type: count}, "other_types": {type: [first keys]}}; `each` is shown
    every batch of keys (database, keys) as it is read, for a look at them in the same pass."""
    tally = Tally()
    databases = server.databases()
    with progress.task(what, total=sum(databases.values())) as task:
        for db in sorted(databases):
            tally.db(db)
            for keys in _ahead(scan(server, db, batch, digested=True)):
                if each is not None:
                    each(db, keys)
                tally.add(db, keys)
                task.advance(len(keys))
    return tally.result() | {"functions": functions(server)}


def sampled(server: Server, batch: int, progress: Progress, what: str) -> dict[str, Any]:
    """The fingerprint of depth `sample`: {"depth": "sample", "dbs": {db: {"keys": n, "expires":
    n, "sample": {key (hex): [type, expiry, digest]}}}}. The counts are the server's own (exact);
    the sample is the keys SCAN returns first, which the server's hash of the names spreads over
    the keyspace, about SAMPLE_KEYS of them in all, shared by the databases by their size."""
    counts = server.keyspace()
    total = sum(keys for keys, _ in counts.values())
    wants = {db: min(keys, max(256, SAMPLE_KEYS * keys // max(total, 1))) for db, (keys, _) in counts.items()}
    dbs: dict[str, Any] = {}
    with progress.task(what, total=sum(wants.values())) as task:
        for db, (keys, expires) in sorted(counts.items()):
            sample: dict[str, list[Any]] = {}
            for found in scan(server, db, min(batch, wants[db]), digested=True):
                taken = found[: wants[db] - len(sample)]
                for key in taken:
                    sample[key.name.hex()] = [key.type, key.expire, key.digest.decode()]
                task.advance(len(taken))
                if len(sample) >= wants[db]:
                    break
            dbs[str(db)] = {"keys": keys, "expires": expires, "sample": sample}
    return {"depth": "sample", "dbs": dbs, "functions": functions(server), "taken": int(time.time() * 1000)}


def compare_sampled(expected: dict[str, Any], server: Server, batch: int) -> Check:
    """The server's content against a sampled fingerprint: per database the keys without an expiry
    exactly as many, those with one as many or fewer (the rest expired meanwhile), and every
    sampled key of the same type, expiry and value, or gone after its expiry passed."""
    problems: list[str] = []
    counts = server.keyspace()
    expired = sampled_keys = 0
    for db in sorted(set(expected["dbs"]) | {str(d) for d in counts}, key=int):
        want = expected["dbs"].get(db, {"keys": 0, "expires": 0, "sample": {}})
        keys, expires = counts.get(int(db), (0, 0))
        if keys - expires != want["keys"] - want["expires"]:
            problems.append(f"db{db}: {keys - expires} keys without expiry, {want['keys'] - want['expires']} before")
        if expires > want["expires"]:
            problems.append(f"db{db}: {expires} keys with an expiry, {want['expires']} before")
        names = list(want["sample"])
        differ: list[str] = []
        for start in range(0, len(names), batch):
            chunk = names[start : start + batch]
            found = describe(server, int(db), [bytes.fromhex(n) for n in chunk], digested=True)
            now = int(time.time() * 1000)
            for name, key in zip(chunk, found, strict=True):
                kind, expire, digest = want["sample"][name]
                if key.type == "none" and 0 <= expire <= now:
                    expired += 1
                elif [key.type, key.expire, key.digest.decode()] != [kind, expire, digest]:
                    differ.append(key.name.decode(errors="backslashreplace"))
        sampled_keys += len(names)
        if differ:
            shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            problems.append(f"db{db}: sampled keys missing or changed: {shown}")
    library_problem = _functions_differ(expected, functions(server))
    if library_problem:
        problems.append(library_problem)
    if problems:
        return Check("content equals the fingerprint", False, "; ".join(problems))
    total = sum(keys for keys, _ in counts.values())
    gone = f"; {expired} sampled keys expired meanwhile" if expired else ""
    return Check(
        "content equals the fingerprint",
        True,
        f"{total} keys in {len(counts)} databases, counts exact, {sampled_keys} sampled keys equal{gone}",
    )


def summary(found: dict[str, Any]) -> str:
    dbs = found["dbs"]
    keys = sum(d["keys"] for d in dbs.values())
    libraries = f", {len(found['functions'])} function libraries" if found.get("functions") else ""
    if found.get("depth") == "sample":
        return f"{keys} keys in {len(dbs)} databases ({sum(len(d['sample']) for d in dbs.values())} sampled){libraries}"
    types = ", ".join(f"{n} {t}" for t, n in sorted(found["types"].items()))
    return f"{keys} keys in {len(dbs)} databases ({types or 'none'}){libraries}"


def compare(expected: dict[str, Any], found: dict[str, Any], since: int) -> Check:
    """`found` (read from `since`, ms) against `expected`: every database's keys without expiry
    equal; keys expiring after `since` equal minute by minute; keys that expired in between may
    be gone, and are counted."""
    problems = []
    expired = 0
    for db in sorted(set(expected["dbs"]) | set(found["dbs"]), key=int):
        want = expected["dbs"].get(db, {"keys": 0, "persistent": [0, "0" * 32], "expiring": {}})
        have = found["dbs"].get(db, {"keys": 0, "persistent": [0, "0" * 32], "expiring": {}})
        if want["persistent"] != have["persistent"]:
            problems.append(
                f"db{db}: keys without expiry differ ({want['persistent'][0]} before, {have['persistent'][0]} now)"
            )
        ahead_differs = []
        for minute in sorted(set(want["expiring"]) | set(have["expiring"]), key=int):
            w, h = want["expiring"].get(minute, [0, ""]), have["expiring"].get(minute, [0, ""])
            if int(minute) * MINUTE <= since:
                if h[0] > w[0]:
                    ahead_differs.append(minute)
                expired += w[0] - h[0]
            elif w != h:
                ahead_differs.append(minute)
        if ahead_differs:
            problems.append(f"db{db}: keys with an expiry differ (expiring in {len(ahead_differs)} minutes)")
    library_problem = _functions_differ(expected, found.get("functions"))
    if library_problem:
        problems.append(library_problem)
    if problems:
        return Check("content equals the fingerprint", False, "; ".join(problems))
    gone = f"; {expired} keys expired meanwhile" if expired else ""
    return Check("content equals the fingerprint", True, summary(found) + gone)
