"""What the data holds, read through a private server: the fingerprint compared across a step,
and the health checks of the data as it is.

The fingerprint names every object of the user databases (everything but the server's own
`mysql`, `information_schema`, `performance_schema`, `sys`) with what identifies its content:
a table's engine, row count and a sum of hashes of every row's values (and the count of its
history rows, system-versioned);
a routine's, trigger's and event's definition; a view's existence; every account beyond those a
fresh install makes. A step must carry all of it: an in-place upgrade does not rewrite rows, and
a logical copy loads the same values (the comparison runs before the copy replaces anything).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import itertools
import threading
from collections.abc import Mapping
from typing import Any

from nixos_migrate.model import Check
from nixos_migrate_mysql.installation import SYSTEM_DATABASES
from nixos_migrate_mysql.server import Server

#: accounts every fresh data directory has (install-db's, MySQL's system accounts, MariaDB's PUBLIC)
INSTALL_ACCOUNTS = {"root", "mariadb.sys", "mysql.sys", "mysql.session", "mysql.infoschema", "PUBLIC", ""}
#: the condition that leaves out the server's own databases
NOT_SYSTEM = "NOT IN ({})".format(", ".join(f"'{d}'" for d in SYSTEM_DATABASES))
_EVENT_ERROR = "Event Scheduler: An error occurred"


def ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _hash(text: Any) -> str:
    data = text if isinstance(text, bytes) else str(text).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def user_databases(server: Server) -> list[str]:
    rows = server.query(f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME {NOT_SYSTEM}")
    return sorted(str(r[0]) for r in rows)


#: tables at least this big are hashed in key ranges, one per worker (or sampled)
SPLIT_ABOVE = 64 << 20
#: a sampled table's key range is cut in SAMPLE_PARTS ranges, and the first SAMPLE_KEYS keys of
#: every SAMPLE_EVERY-th one hashed: the same windows before and after a step, as long as the
#: keys' bounds are the same; at most 1/SAMPLE_EVERY of the table and at most
#: SAMPLE_PARTS / SAMPLE_EVERY * SAMPLE_KEYS rows of it, however big it grows
SAMPLE_PARTS, SAMPLE_EVERY, SAMPLE_KEYS = 64, 8, 2048


def _row_sql(qualified: str, columns: list[str], where: str = "") -> str:
    """Row count and a sum of 64-bit row hashes over the values as text (`QUOTE` keeps NULL apart
    from 'NULL'; timestamps read in UTC). Not `CHECKSUM TABLE`: it hashes the storage format,
    which changes between series (TIMESTAMP in 11.5), not the values. 64 bits of each row's MD5
    as an integer, summed exactly (DECIMAL): CONV alone yields a string that SUM would add as a
    double, losing the low bits."""
    if not columns:
        return f"SELECT COUNT(*), 0 FROM {qualified}{where}"
    row = "CONCAT_WS(0x1f, " + ", ".join(f"QUOTE({ident(c)})" for c in columns) + ")"
    return f"SELECT COUNT(*), SUM(CAST(CONV(LEFT(MD5({row}), 16), 16, 10) AS UNSIGNED)) FROM {qualified}{where}"


def _ranges(
    server: Server, qualified: str, key: str, parts: int, every: int = 1, keys: int | None = None
) -> tuple[str, list[str]]:
    """The key's bounds as text, and WHERE clauses that split a table on its integer primary
    key into `parts` ranges; with `every` and `keys`, only every `every`-th range, cut to its
    first `keys` keys (a sample)."""
    low, high = server.query(f"SELECT MIN({ident(key)}), MAX({ident(key)}) FROM {qualified}")[0]
    if low is None or parts < 2:
        return "empty", [""]
    low, high = int(low), int(high)
    width = (high - low) // parts + 1
    bounds = [low + i * width for i in range(parts)] + [high + 1]
    ranges = list(itertools.pairwise(bounds))[::every]
    ends = [b if keys is None else min(b, a + keys) for a, b in ranges]
    clauses = [f" WHERE {ident(key)} >= {a} AND {ident(key)} < {end}" for (a, _), end in zip(ranges, ends, strict=True)]
    return f"{low}..{high}", clauses


def _hash_rows(server: Server, work: list[tuple[str, str]], jobs: int) -> dict[str, tuple[int, int]]:
    """Run the (table, SQL) items on `jobs` connections; per table, the summed count and hash."""
    totals: dict[str, tuple[int, int]] = {}
    lock = threading.Lock()
    local = threading.local()
    extra: list[Any] = []

    def run(item: tuple[str, str]) -> None:
        table, sql = item
        if getattr(local, "connection", None) is None:
            local.connection = server.new_connection()
            extra.append(local.connection)
        cursor = local.connection.cursor()
        cursor.execute(sql)
        count, total = cursor.fetchall()[0]
        cursor.close()
        with lock:
            before = totals.get(table, (0, 0))
            totals[table] = (before[0] + int(count), before[1] + int(total or 0))

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            list(pool.map(run, work))
    finally:
        for connection in extra:
            with contextlib.suppress(Exception):
                connection.close()
    return totals


def fingerprint(server: Server, service_user: str, jobs: int = 2, sample: bool = False) -> dict[str, str]:
    """Object -> what identifies its content (see the module's docstring). Rows are hashed on
    `jobs` connections, big tables with an integer primary key split into key ranges; with
    `sample`, only the first SAMPLE_KEYS keys of every SAMPLE_EVERY-th of SAMPLE_PARTS ranges of
    those are read, and their entry names the sample and the key's bounds."""
    objects: dict[str, str] = {}
    tables: dict[str, list[str]] = {}
    for schema, name, kind, engine in server.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES"
        f" WHERE TABLE_SCHEMA {NOT_SYSTEM} ORDER BY 1, 2"
    ):
        if kind == "VIEW":
            objects[f"view {schema}.{name}"] = "view"
        elif kind == "SEQUENCE":
            objects[f"sequence {schema}.{name}"] = "sequence"
        else:
            tables.setdefault(str(schema), []).append(str(name))
            objects[f"table {schema}.{name}"] = f"engine {engine}"
    versioned = {
        (str(a), str(b))
        for a, b in server.query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES"
            f" WHERE TABLE_TYPE = 'SYSTEM VERSIONED' AND TABLE_SCHEMA {NOT_SYSTEM}"
        )
    }
    columns: dict[tuple[str, str], list[str]] = {}
    for schema, name, column in server.query(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS"
        f" WHERE TABLE_SCHEMA {NOT_SYSTEM} ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION"
    ):
        columns.setdefault((str(schema), str(name)), []).append(str(column))
    big = {
        (str(a), str(b)): str(key)
        for a, b, key in server.query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, MIN(k.COLUMN_NAME) FROM information_schema.TABLES t"
            " JOIN information_schema.KEY_COLUMN_USAGE k ON k.TABLE_SCHEMA = t.TABLE_SCHEMA"
            " AND k.TABLE_NAME = t.TABLE_NAME AND k.CONSTRAINT_NAME = 'PRIMARY'"
            " JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = k.TABLE_SCHEMA AND c.TABLE_NAME = k.TABLE_NAME"
            " AND c.COLUMN_NAME = k.COLUMN_NAME"
            f" WHERE t.TABLE_SCHEMA {NOT_SYSTEM} AND t.DATA_LENGTH >= {SPLIT_ABOVE}"
            " AND c.DATA_TYPE IN ('tinyint', 'smallint', 'mediumint', 'int', 'bigint')"
            " GROUP BY t.TABLE_SCHEMA, t.TABLE_NAME HAVING COUNT(*) = 1"
        )
    }
    work: list[tuple[str, str]] = []
    sampled: dict[str, str] = {}
    for schema, names in tables.items():
        for name in names:
            qualified, label = f"{ident(schema)}.{ident(name)}", f"table {schema}.{name}"
            cols = columns.get((schema, name), [])
            key = big.get((schema, name))
            clauses = [""]
            if key and sample:
                bounds, clauses = _ranges(server, qualified, key, SAMPLE_PARTS, SAMPLE_EVERY, SAMPLE_KEYS)
                sampled[label] = f"keys {bounds}, {len(clauses)} windows of up to {SAMPLE_KEYS} read"
            elif key:
                clauses = _ranges(server, qualified, key, jobs)[1]
            work += [(label, _row_sql(qualified, cols, where)) for where in clauses]
    for table, (count, total) in _hash_rows(server, work, jobs).items():
        if table in sampled:
            objects[table] += f", {sampled[table]}: {count} rows, hash {total:x}"
        else:
            objects[table] += f", {count} rows, hash {total:x}"
    for schema, name in sorted(versioned):
        qualified = f"{ident(schema)}.{ident(name)}"
        history = server.value(f"SELECT COUNT(*) FROM {qualified} FOR SYSTEM_TIME ALL")
        objects[f"table {schema}.{name}"] += f", {history} rows with history"
    for schema, name, kind, body in server.query(
        "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION FROM information_schema.ROUTINES"
        f" WHERE ROUTINE_SCHEMA {NOT_SYSTEM}"
    ):
        objects[f"{str(kind).lower()} {schema}.{name}"] = _hash(body)
    for schema, name, table, body in server.query(
        "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_STATEMENT FROM information_schema.TRIGGERS"
        f" WHERE TRIGGER_SCHEMA {NOT_SYSTEM}"
    ):
        objects[f"trigger {schema}.{name}"] = f"on {table}: {_hash(body)}"
    for schema, name, status, body in server.query(
        "SELECT EVENT_SCHEMA, EVENT_NAME, STATUS, EVENT_DEFINITION FROM information_schema.EVENTS"
        f" WHERE EVENT_SCHEMA {NOT_SYSTEM}"
    ):
        objects[f"event {schema}.{name}"] = f"{status}: {_hash(body)}"
    for user, host in server.query("SELECT User, Host FROM mysql.user"):
        if str(user) not in INSTALL_ACCOUNTS | {service_user}:
            objects[f"account {user}@{host}"] = "account"
    return dict(sorted(objects.items()))


def digest(objects: Mapping[str, str]) -> str:
    return _hash("\n".join(f"{k}\t{v}" for k, v in sorted(objects.items())))


def differences(expected: Mapping[str, str], found: Mapping[str, str], limit: int = 10) -> list[str]:
    """What differs, one line per object, the first `limit`."""
    lines = []
    for name in sorted(set(expected) | set(found)):
        want, have = expected.get(name), found.get(name)
        if want == have:
            continue
        if want is None:
            lines.append(f"{name}: not there before")
        elif have is None:
            lines.append(f"{name}: missing")
        else:
            lines.append(f"{name}: {have}, expected {want}")
    more = len(lines) - limit
    return lines[:limit] + ([f"... and {more} more"] if more > 0 else [])


def compare(expected: Mapping[str, str], found: Mapping[str, str]) -> Check:
    diff = differences(expected, found)
    tables = sum(1 for k in found if k.startswith("table "))
    detail = "; ".join(diff) if diff else f"{len(found)} objects ({tables} tables) as before, digest {digest(found)}"
    return Check("content equals the fingerprint before the step", not diff, detail)


def system_tables(server: Server) -> list[Check]:
    """The failures a server shows on data whose system tables were not upgraded: routines that
    cannot be loaded ("Cannot load from mysql.proc"), an event scheduler disabled at start."""
    checks = []
    broken: list[str] = []
    routines: list[tuple[Any, ...]] = []
    try:
        routines = server.query(
            "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES"
            f" WHERE ROUTINE_SCHEMA {NOT_SYSTEM}"
        )
    except Exception as exc:  # the server's own error is the finding (mysql.proc of an older series)
        broken.append(str(exc))
    for schema, name, kind in routines:
        try:
            server.query(f"SHOW CREATE {kind} {ident(str(schema))}.{ident(str(name))}")
        except Exception as exc:
            broken.append(f"{schema}.{name}: {exc}")
    detail = "; ".join(broken[:5]) if broken else f"{len(routines)} loadable"
    checks.append(Check("stored routines load", not broken, detail))
    log = server.log_text()
    problem = next((line for line in log.splitlines() if _EVENT_ERROR in line), None)
    events = None
    try:
        events = server.value(f"SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA {NOT_SYSTEM}")
    except Exception as exc:  # "Cannot proceed, because event scheduler is disabled"
        problem = problem or str(exc)
    detail = f"the server disabled it: {problem}" if problem else f"{events} events"
    checks.append(Check("event scheduler usable", problem is None, detail))
    return checks


def check_tables(server: Server, databases: list[str], sample: bool = False) -> Check:
    """CHECK TABLE on every table of the user databases and the system database (what
    `mariadb-check --all-databases` does), through the same connection; with `sample`, not on
    the tables the sampled fingerprint reads in part (SPLIT_ABOVE and more)."""
    problems = []
    count = 0
    skipped = 0
    for schema in ["mysql", *databases]:
        names = []
        for name, size in _base_tables(server, schema):
            if sample and size >= SPLIT_ABOVE:
                skipped += 1
            else:
                names.append(name)
        for batch in _lists(schema, names):
            for table, _op, kind, text in server.query(f"CHECK TABLE {batch}"):
                count += 1 if kind == "status" else 0
                if kind == "error" or (kind == "status" and str(text) not in ("OK", "Table is already up to date")):
                    problems.append(f"{table}: {text}")
    detail = "; ".join(problems[:5]) if problems else f"{count} tables OK"
    if skipped:
        detail += f" ({skipped} of {SPLIT_ABOVE >> 20} MiB and more left to the sampled fingerprint)"
    return Check("CHECK TABLE of every table", not problems, detail)


def _base_tables(server: Server, schema: str) -> list[tuple[str, int]]:
    """The tables of `schema` (no views) with their size by the server's statistics."""
    rows = server.query(
        "SELECT TABLE_NAME, DATA_LENGTH FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
        (schema,),
    )
    return [(str(name), int(size or 0)) for name, size in rows]


def _lists(schema: str, names: list[str], size: int = 50) -> list[str]:
    """`names` of `schema` as table lists of `size` for one statement each."""
    return [", ".join(f"{ident(schema)}.{ident(n)}" for n in names[i : i + size]) for i in range(0, len(names), size)]


def after_step(
    server: Server, expected: Mapping[str, str], service_user: str, jobs: int, sample: bool = False
) -> list[Check]:
    """What verify checks, run on the new data while the step's server is up (one start fewer):
    routines and events usable, every table checked, the content equal to the fingerprint."""
    checks = system_tables(server)
    if not all(c.ok for c in checks):
        return [*checks, Check("content equals the fingerprint before the step", False, "not read: see above")]
    try:
        # CHECK TABLE reads on one thread of the server while the rows are hashed on others
        other = server.twin()
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                checked = pool.submit(check_tables, other, user_databases(server), sample)
                found = fingerprint(server, service_user, jobs, sample)
                checks.append(checked.result())
        finally:
            other.close()
        checks.append(compare(expected, found))
    except Exception as exc:  # the server's own error is the finding
        checks.append(Check("content equals the fingerprint before the step", False, f"not readable: {exc}"))
    return checks
