"""A logical copy of every key from one server into another that cannot load the first's files.

An older server refuses a newer RDB file and a newer DUMP payload alike, so every key is read
by type and written with commands every version knows, in pipelined batches: strings with MSET,
lists with RPUSH, sets with SADD, sorted sets with ZADD (scores as exact decimal), hashes with
HSET, streams entry by entry with XADD at their own ids, then XSETID (the last id survives
deleted entries), consumer groups (XGROUP CREATE at their last delivered id), their consumers
and pending entries (XCLAIM ... FORCE with the delivery count), and expiries with PEXPIREAT at
their absolute millisecond. Big values go in chunks, never in one command. Function libraries
(7.0+) are loaded as their code.

`refusals` names, before anything changes, the keys the older server could not hold.
"""

from __future__ import annotations

from typing import Any

from nixos_migrate.progress import Progress
from nixos_migrate_redis import content, versions
from nixos_migrate_redis.server import Server
from nixos_migrate_redis.workers import Workers, copied, spec

CHUNK = 1000

# one SCAN batch looked at by the server: the keys a refusal may concern (any type but strings,
# lists, sets and sorted sets; hashes only when ARGV[3] is '1') with their type, the cursor, and
# how many keys the batch held; the others do not cross the socket
KINDS = """
local found = redis.call('SCAN', ARGV[1], 'COUNT', ARGV[2])
local out = {}
for _, k in ipairs(found[2]) do
  local t = redis.call('TYPE', k)['ok']
  local plain = t == 'string' or t == 'list' or t == 'set' or t == 'zset' or t == 'none'
  if not plain and (t ~= 'hash' or ARGV[3] == '1') then
    out[#out + 1] = k
    out[#out + 1] = t
  end
end
return {found[1], out, #found[2]}
"""


def _field(pairs: list[Any], name: bytes) -> Any:
    for i in range(0, len(pairs) - 1, 2):
        if pairs[i] == name:
            return pairs[i + 1]
    return None


def _has_field_expiry(source: Server, db: int) -> bool:
    """Redis 7.4+ counts hash fields with an expiry per database in INFO keyspace (subexpiry)."""
    fields = source.info("keyspace").get(f"db{db}", {})
    return int(fields.get("subexpiry", 0) or 0) > 0


def _field_expiries(source: Server, db: int, key: bytes) -> dict[bytes, int]:
    client = source.client(db, raw=True)
    found: dict[bytes, int] = {}
    cursor = 0
    while True:
        cursor, pairs = client.execute_command("HSCAN", key, cursor, "COUNT", CHUNK)
        cursor = int(cursor)
        names = pairs[::2]
        if names:
            times = client.execute_command("HPEXPIRETIME", key, "FIELDS", len(names), *names)
            found.update({n: int(t) for n, t in zip(names, times, strict=True) if int(t) > 0})
        if cursor == 0:
            return found


class Refusals:
    """What the server of `target` cannot hold, gathered batch by batch from `source`'s keys
    (`see`, also a fingerprint's per-batch hook); `found` names each kind's keys (ten at most).
    `by_commands`: the keys go by this module's commands, not in a rewritten snapshot (which
    keeps a stream's pending entries whatever became of their entries)."""

    def __init__(self, source: Server, target: str, *, by_commands: bool = True) -> None:
        self.source = source
        self.by_commands = by_commands
        self.field_expiry = versions.key(target) < versions.key("7.4")
        self.functions = versions.key(target) < versions.key("7.0")
        self.problems: dict[str, list[str]] = {}
        self._fields: dict[int, bool] = {}

    def _note(self, what: str, db: int, key: bytes) -> None:
        names = self.problems.setdefault(what, [])
        if len(names) < 10:
            names.append(f"db{db}:{key.decode(errors='backslashreplace')}")

    def see(self, db: int, keys: list[content.Key]) -> None:
        if db not in self._fields:
            self._fields[db] = self.field_expiry and _has_field_expiry(self.source, db)
        for key in keys:
            if key.type not in versions.CORE_TYPES:
                self._note(f"keys of type {key.type} (a module's or a newer built-in type)", db, key.name)
            elif key.type == "hash" and self._fields[db] and _field_expiries(self.source, db, key.name):
                self._note("hash fields with an expiry (Redis 7.4+)", db, key.name)
            elif key.type == "stream" and self.by_commands and _pending_deleted(self.source, db, key.name):
                self._note("pending entries of deleted stream entries (XCLAIM cannot recreate them)", db, key.name)

    def found(self) -> list[str]:
        named = [f"{what}: {', '.join(names)}" for what, names in self.problems.items()]
        if self.functions:
            libraries = [name.decode(errors="backslashreplace") for name, _ in content.libraries(self.source)]
            if libraries:
                named.append(f"function libraries (7.0+; the target has no functions): {', '.join(libraries)}")
        return named


def refusals(source: Server, target: str, batch: int, progress: Progress, *, by_commands: bool = True) -> list[str]:
    """What the server of `target` cannot hold, each naming its keys (at most ten of each)."""
    seen = Refusals(source, target, by_commands=by_commands)
    databases = source.databases()
    with progress.task(f"what {versions.label(target)} cannot hold", total=sum(databases.values())) as task:
        for db in sorted(databases):
            client = source.client(db)
            kinds = client.script_load(KINDS)
            hashes = "1" if seen.field_expiry and _has_field_expiry(source, db) else "0"
            cursor = b"0"
            while True:
                cursor, found, scanned = client.evalsha(kinds, 0, cursor, batch, hashes)
                pairs = list(zip(found[::2], found[1::2], strict=True))
                seen.see(db, [content.Key(bytes(name), kind.decode(), -1) for name, kind in pairs])
                task.advance(int(scanned))
                if cursor == b"0":
                    break
    return seen.found()


def _pending_deleted(source: Server, db: int, key: bytes) -> bool:
    client = source.client(db, raw=True)
    for group in client.execute_command("XINFO", "GROUPS", key):
        name = _field(group, b"name")
        if not int(_field(group, b"pending") or 0):
            continue
        for entry in _pending(source, db, key, name):
            if not client.execute_command("XRANGE", key, entry[0], entry[0]):
                return True
    return False


def _pending(source: Server, db: int, key: bytes, group: bytes) -> list[list[Any]]:
    client = source.client(db, raw=True)
    found: list[list[Any]] = []
    start: bytes = b"-"
    while True:
        page = client.execute_command("XPENDING", key, group, start, "+", CHUNK)
        found += [e for e in page if not (start != b"-" and e[0] == start)]
        if len(page) < CHUNK:
            return found
        start = page[-1][0]


def copy(source: Server, target: Server, batch: int, workers: Workers, progress: Progress) -> dict[str, Any]:
    """Every key of `source` into `target` (empty), by the worker processes; returns the
    fingerprint of what they read (`content.fingerprint`'s form, strings hashed from the values
    read), for the comparison of the copy."""
    databases = source.databases()
    read = content.Tally()
    with progress.task(f"copy {versions.label(source.version)} -> {versions.label(target.version)}",
                       total=sum(databases.values())) as task:  # fmt: skip
        for db in sorted(databases):
            field_ttl = versions.key(target.version) >= versions.key("7.4") and _has_field_expiry(source, db)
            args = (spec(source), spec(target), db, field_ttl)
            workers.shared(source, db, batch, copied, args, read, task.advance)
    found = content.libraries(source)
    for _, code in found:  # the code names its library and engine
        target.client(raw=True).execute_command("FUNCTION", "LOAD", code)
    return read.result() | {"functions": content.functions(source, found)}


def write_batch(source: Server, target: Server, db: int, keys: list[content.Key], field_ttl: bool) -> None:
    """`keys` (read with their values) written into `target`, in pipelined commands."""
    read = source.client(db)
    write = target.client(db, raw=True).pipeline(transaction=False)  # replies unread: none parsed
    pairs: list[bytes] = []
    for key in keys:
        if key.value is not None:
            pairs += [key.name, key.value]
    if pairs:
        write.execute_command("MSET", *pairs)  # one command for the batch's strings
    for key in keys:
        if key.type == "list":
            _copy_list(read, write, key.name)
        elif key.type == "set":
            _copy_scanned(read.sscan, write.sadd, key.name)
        elif key.type == "zset":
            _copy_zset(read, write, key.name)
        elif key.type == "hash":
            _copy_scanned(read.hscan, lambda k, *p: write.hset(k, mapping=dict(zip(p[::2], p[1::2], strict=True))),
                          key.name, pairs=True)  # fmt: skip
            if field_ttl:
                for name, when in _field_expiries(source, db, key.name).items():
                    write.execute_command("HPEXPIREAT", key.name, when, "FIELDS", 1, name)
        elif key.type == "stream":
            _copy_stream(source, target, db, key.name, write)
        if key.expire >= 0:
            write.execute_command("PEXPIREAT", key.name, key.expire)
        if len(write) >= CHUNK:
            write.execute()
    write.execute()


def _copy_list(read: Any, write: Any, key: bytes) -> None:
    length = read.llen(key)
    for start in range(0, length, CHUNK):
        write.rpush(key, *read.lrange(key, start, start + CHUNK - 1))


def _copy_scanned(scan: Any, add: Any, key: bytes, *, pairs: bool = False) -> None:
    cursor = 0
    while True:
        cursor, found = scan(key, cursor, count=CHUNK)
        items = [x for kv in found.items() for x in kv] if pairs else list(found)
        if items:
            add(key, *items)
        if cursor == 0:
            return


def _copy_zset(read: Any, write: Any, key: bytes) -> None:
    length = read.zcard(key)
    for start in range(0, length, CHUNK):
        members = read.zrange(key, start, start + CHUNK - 1, withscores=True, score_cast_func=bytes)
        args: list[Any] = []
        for member, score in members:
            args += [score, member]  # the server's own decimal of the double: exact both ways
        write.execute_command("ZADD", key, *args)


def _copy_stream(source: Server, target: Server, db: int, key: bytes, write: Any) -> None:
    read = source.client(db, raw=True)
    info = read.execute_command("XINFO", "STREAM", key)
    start: bytes = b"-"
    first = True
    while True:
        entries = read.execute_command("XRANGE", key, start, "+", "COUNT", CHUNK)
        for entry_id, fields in entries:
            if start != b"-" and entry_id == start:
                continue
            write.execute_command("XADD", key, entry_id, *fields)
            first = False
        if len(entries) < CHUNK:
            break
        start = entries[-1][0]
    last = _field(info, b"last-generated-id")
    if first:
        # a stream with no entries (all deleted, or made by XGROUP CREATE ... MKSTREAM): made the
        # same way, by a group created and destroyed
        write.execute_command("XGROUP", "CREATE", key, "nixos-migrate", "0", "MKSTREAM")
        write.execute_command("XGROUP", "DESTROY", key, "nixos-migrate")
    setid: list[Any] = ["XSETID", key, last]
    if target.modern and source.modern:
        setid += ["ENTRIESADDED", _field(info, b"entries-added"), "MAXDELETEDID", _field(info, b"max-deleted-entry-id")]
    write.execute_command(*setid)
    for group in read.execute_command("XINFO", "GROUPS", key):
        name = _field(group, b"name")
        create: list[Any] = ["XGROUP", "CREATE", key, name, _field(group, b"last-delivered-id")]
        read_count = _field(group, b"entries-read")
        if target.modern and read_count is not None:
            create += ["ENTRIESREAD", read_count]
        write.execute_command(*create)
        for entry_id, consumer, _idle, deliveries in _pending(source, db, key, name):
            write.execute_command(
                "XCLAIM", key, name, consumer, 0, entry_id, "RETRYCOUNT", deliveries, "FORCE", "JUSTID"
            )
        for consumer in read.execute_command("XINFO", "CONSUMERS", key, name):
            if int(_field(consumer, b"pending") or 0):
                continue  # XCLAIM made it
            who = _field(consumer, b"name")
            if versions.key(target.version) >= versions.key("6.2"):
                write.execute_command("XGROUP", "CREATECONSUMER", key, name, who)
            else:
                # before 6.2, reading one's own history (id 0) creates a consumer; with nothing
                # pending it delivers nothing
                write.execute_command("XREADGROUP", "GROUP", name, who, "COUNT", 1, "STREAMS", key, "0")
