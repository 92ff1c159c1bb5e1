"""The logical content of a cluster, comparable across majors and across dump/restore.

Per database: encoding and collation, the names of relations, indexes, functions and extensions,
and for every table and materialized view its row count and an order-independent content hash
(the sum of each row's 64-bit `hashtextextended` of its text form; large tables are hashed in
block ranges in parallel); sequences by value; large objects by count and hash. Per cluster: the
roles and their attributes. Output settings that change a row's text
(dates, time zones, intervals, bytea, floats, money) are fixed first, so the same rows hash the
same on every major.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from psycopg import sql

from nixos_migrate_postgresql.server import PrivateServer

Fingerprint = dict[str, Any]

_STABLE_OUTPUT = (
    "SET datestyle = 'ISO, YMD'; SET timezone = 'UTC'; SET intervalstyle = 'postgres';"
    " SET bytea_output = 'hex'; SET extra_float_digits = 3; SET lc_monetary = 'C'"
)
_ROW_HASH = "coalesce(sum(hashtextextended({row}::text, 0)), 0)::text"
#: tables larger than this many blocks are hashed in block ranges by several connections at once
_CHUNK_BLOCKS = 8192
_USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"


def _database_shape(server: PrivateServer, db: str) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    with server.connect(db) as conn:
        relations = conn.execute(
            "SELECT n.nspname, c.relname,"
            " CASE WHEN c.relkind = 'm' AND NOT c.relispopulated THEN 'm-unpopulated' ELSE c.relkind::text END"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            f" WHERE c.relkind IN ('r', 'm', 'S', 'v', 'i', 'p', 'f') AND {_USER_SCHEMAS} ORDER BY 1, 2"
        ).fetchall()
        functions = conn.execute(
            "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'"
            f" FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_SCHEMAS}"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY 1"
        ).fetchall()
        extensions = conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()
        conn.execute(_STABLE_OUTPUT)
        lo = conn.execute(
            "SELECT count(*), " + _ROW_HASH.format(row="md5(lo_get(oid))") + " FROM pg_largeobject_metadata"
        ).fetchone()
        rows = conn.execute(
            "SELECT n.nspname || '.' || c.relname, c.relpages FROM pg_class c JOIN pg_namespace n"
            f" ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') AND {_USER_SCHEMAS}"
        ).fetchall()
        sizes = {str(k): int(str(v)) for k, v in rows}
    shape: dict[str, Any] = {
        "relations": {f"{s}.{r}": kind for s, r, kind in relations},
        "functions": [f for (f,) in functions],
        "extensions": [e for (e,) in extensions],
        "large_objects": list(lo) if lo else None,
        "tables": {},
    }
    tables = [(db, str(s), str(r)) for s, r, kind in relations if kind in ("r", "m", "S")]
    kinds = {f"{s}.{r}": kind for s, r, kind in relations}
    return shape | {"kinds": kinds, "sizes": sizes}, tables


def _table(
    server: PrivateServer, db: str, schema: str, name: str, kind: str, blocks: tuple[int, int] | None
) -> tuple[str, list[int]]:
    """Row count and hash sum of a table (or of the block range `blocks` of it); a sequence's value."""
    ident = sql.Identifier(schema, name)
    with server.connect(db) as conn:
        conn.execute(_STABLE_OUTPUT)
        if kind == "S":
            row = conn.execute(sql.SQL("SELECT last_value, is_called::int FROM {}").format(ident)).fetchone()
        else:
            where: sql.Composable = sql.SQL("")
            if blocks is not None:
                where = sql.SQL(" WHERE t.ctid >= {} AND t.ctid < {}").format(
                    sql.Literal(f"({blocks[0]},0)"), sql.Literal(f"({blocks[1]},0)")
                )
            query = sql.SQL("SELECT count(*), " + _ROW_HASH.format(row="t") + "::numeric FROM ONLY {} t{}").format(
                ident, where
            )
            row = conn.execute(query).fetchone()
    return f"{db}/{schema}.{name}", [int(str(v)) for v in (row or ())]


def _pieces(
    work: list[tuple[str, str, str, str]], sizes: dict[str, int], jobs: int, chunk_blocks: int
) -> list[tuple[Any, ...]]:
    """Split large tables into block ranges (TID range scans) so that `jobs` connections share them."""
    pieces: list[tuple[Any, ...]] = []
    for db, schema, name, kind in work:
        pages = sizes.get(f"{db}/{schema}.{name}", 0)
        if kind == "S" or pages <= chunk_blocks or jobs < 2:
            pieces.append((db, schema, name, kind, None))
            continue
        step = max(chunk_blocks, -(-pages // (jobs * 2)))
        starts = list(range(0, pages, step))
        for i, start in enumerate(starts):
            # the last range is open-ended: the table may have grown since relpages was counted
            end = starts[i + 1] if i + 1 < len(starts) else 2**32 - 1
            pieces.append((db, schema, name, kind, (start, end)))
    return pieces


def take(server: PrivateServer, jobs: int = 2, chunk_blocks: int = _CHUNK_BLOCKS) -> Fingerprint:
    """The fingerprint of everything the running `server` holds."""
    with server.connect("postgres") as conn:
        databases = conn.execute(
            "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype, datallowconn FROM pg_database"
            " WHERE datname <> 'template0' ORDER BY 1"
        ).fetchall()
        roles = conn.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,"
            " rolconnlimit FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"
        ).fetchall()
    result: Fingerprint = {
        "roles": [[str(v) for v in r] for r in roles],
        "databases": {},
    }
    work = []
    sizes: dict[str, int] = {}
    for name, encoding, collate, ctype, allowconn in databases:
        entry: dict[str, Any] = {"encoding": encoding, "collate": collate, "ctype": ctype}
        if allowconn:
            shape, tables = _database_shape(server, str(name))
            kinds = shape.pop("kinds")
            sizes |= {f"{name}/{rel}": int(pages) for rel, pages in shape.pop("sizes").items()}
            entry |= shape
            work += [(db, s, r, kinds[f"{s}.{r}"]) for db, s, r in tables]
        result["databases"][str(name)] = entry
    totals: dict[str, list[int]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for key, values in pool.map(lambda w: _table(server, *w), _pieces(work, sizes, jobs, chunk_blocks)):
            if key in totals and len(values) == 2 and len(totals[key]) == 2:
                totals[key] = [totals[key][0] + values[0], totals[key][1] + values[1]]
            else:
                totals[key] = values
    for key, values in totals.items():
        db, _, table = key.partition("/")
        result["databases"][db]["tables"][table] = [str(v) for v in values]
    return result


def digest(fp: Fingerprint) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()


def differences(expected: Fingerprint, actual: Fingerprint, limit: int = 10) -> list[str]:
    """Human-readable differences, most specific first, at most `limit` of them."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in b:
                    out.append(f"{path}{key}: missing after")
                elif key not in a:
                    out.append(f"{path}{key}: new after")
                else:
                    walk(a[key], b[key], f"{path}{key}/")
        elif a != b:
            out.append(f"{path.rstrip('/')}: {a!r} -> {b!r}")

    walk(expected, actual, "")
    return out
