"""Copying a cluster's content through SQL: the `dump` upgrade method and every downgrade.

The dump is always written by the newer pg_dump/pg_dumpall of the two majors (an older pg_dump
refuses a newer server) and loaded by the target's psql with ON_ERROR_STOP, so anything the older
server cannot take fails the step instead of being skipped. Statements known to be only settings
of newer servers are dropped on the way down. Big tables leave pg_dump's stream: each is copied
by its own `psql COPY TO | psql COPY FROM` with pg_dump's session settings, in COPY's binary
format where every column's type allows (`_copy_table`).
"""

from __future__ import annotations

import codecs
import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError
from nixos_migrate_postgresql.server import PrivateServer

#: (first major that knows it, pattern of the line a dump writes for it)
_NEWER_SETTINGS: list[tuple[int, re.Pattern[str]]] = [
    (17, re.compile(r"^SET transaction_timeout = ")),
    (14, re.compile(r"^SET default_toast_compression = ")),
    (12, re.compile(r"^SET default_table_access_method = ")),
]


#: (first major that accepts it, what dumps write, what older majors take instead)
_OLDER_SPELLINGS: list[tuple[int, str, str]] = [
    (15, " LOCALE_PROVIDER = libc", ""),
]


#: psql minors that know pg_dump's `\restrict KEY` / `\unrestrict KEY` (added in August 2025 to
#: every supported branch); older ones stop at "invalid command", so the lines are dropped for them
_RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}
_RESTRICT = re.compile(r"^\\(un)?restrict ")


def psql_knows_restrict(version: str) -> bool:
    """Whether the psql whose `psql --version` printed `version` takes pg_dump's restrict lines."""
    found = re.search(r"(\d+)\.(\d+)", version)
    if not found:
        return False
    major, minor = int(found.group(1)), int(found.group(2))
    return major >= 18 or (major in _RESTRICT_SINCE and minor >= _RESTRICT_SINCE[major])


#: a COPY block of a plain dump: its rows are data and never rewritten
_COPY_START = re.compile(r"^COPY .* FROM stdin;$")
#: ... and the start line split into the table pg_dump writes schema-qualified, the rest
_COPY_TABLE = re.compile(r'^COPY ((?:"(?:[^"]|"")*"|[^\s."]+)\.(?:"(?:[^"]|"")*"|[^\s."]+)) (.*)FROM stdin;$')
#: pg_dump's comment above a table's COPY block (then "--" and an empty line)
_TABLE_DATA = re.compile(r"^-- Data for Name: .*; Type: TABLE DATA; ")
_COPY_END = b"\\.\n"
_CHUNK = 1 << 20


def _adapt_line(line: str, target_major: int, superuser: str, restrict: bool = True) -> str | None:
    """The line (outside COPY data) as the target major takes it, or None to drop it."""
    if not restrict and _RESTRICT.match(line):
        return None
    if any(target_major < since and pattern.match(line) for since, pattern in _NEWER_SETTINGS):
        return None
    if line.rstrip() == f"CREATE ROLE {_quote(superuser)};":
        return None  # the bootstrap superuser exists in every new cluster
    for before, old, new in _OLDER_SPELLINGS:
        if target_major < before:
            line = line.replace(old, new)
    return line


def _quote(name: str) -> str:
    """`name` quoted only where it needs to be, as pg_dump writes it."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else _ident(name)


class DumpRewriter:
    """Rewrites a plain dump on its way into the target, as a stream of byte chunks.

    Lines outside COPY blocks go through `_adapt_line` (settings and spellings the target major
    lacks). With `wal_skip`, every COPY block becomes `BEGIN; TRUNCATE ONLY t; COPY t … WITH
    (FREEZE) … COMMIT;`: on a server with wal_level = minimal a table truncated in the loading
    transaction is written without WAL (half the bytes) and its rows arrive frozen, so no later
    vacuum rewrites them. TRUNCATE is safe there: the dump creates the table just before and
    adds foreign keys and triggers only after all data. Rows inside COPY blocks pass byte for byte
    (scanned for the end marker at C speed); text lines keep their bytes (surrogateescape), so a
    LATIN1 database's dump stays LATIN1.
    """

    def __init__(self, target_major: int, superuser: str, *, wal_skip: bool, restrict: bool = True) -> None:
        self.target_major = target_major
        self.superuser = superuser
        self.wal_skip = wal_skip
        self.restrict = restrict  # whether the target's psql takes \restrict
        self.table_data = False  # the last lines were pg_dump's header of a table's data

    def chunks(self, source: Iterable[bytes]) -> Iterator[bytes]:
        """The rewritten stream of `source`, chunked however it comes."""
        buf = b""
        in_copy = False
        for chunk in _with_end(source):
            eof = not chunk
            buf += chunk
            pos = 0
            out: list[bytes] = []
            while pos < len(buf):
                if in_copy:
                    # `pos` is always at a line start here; a row's backslashes are escaped, so a
                    # line that is exactly "\." is the end
                    if buf.startswith(_COPY_END, pos):
                        end = pos + 3
                    else:
                        found = buf.find(b"\n" + _COPY_END, pos)
                        end = found + 4 if found >= 0 else -1
                    if end < 0:  # not in this buffer: pass every complete row on
                        pos_after = len(buf) if eof else max(pos, buf.rfind(b"\n", pos) + 1)
                        out.append(buf[pos:pos_after])
                        pos = pos_after
                        break
                    out.append(buf[pos:end])
                    out += [b"COMMIT;\n"] if self.wal_skip else []
                    pos, in_copy = end, False
                    continue
                newline = buf.find(b"\n", pos)
                if newline < 0 and not eof:
                    break
                upto = len(buf) if newline < 0 else newline + 1
                line, in_copy = self._line(buf[pos:upto].decode("utf-8", "surrogateescape"))
                out.append(line.encode("utf-8", "surrogateescape"))
                pos = upto
            buf = buf[pos:]
            if out:
                yield b"".join(out)
            if eof:
                return

    def _line(self, line: str) -> tuple[str, bool]:
        """A line outside COPY data as written to the target, and whether a COPY block starts."""
        text = line.rstrip("\n")
        header, self.table_data = self.table_data, False
        # a data block is a COPY right below pg_dump's "Type: TABLE DATA" header: never a line
        # that only looks like one inside a function body or a string
        if header and _COPY_START.match(text):
            table = _COPY_TABLE.match(text)
            if self.wal_skip and table:
                name, columns = table.groups()
                return f"BEGIN;\nTRUNCATE ONLY {name};\nCOPY {name} {columns}FROM stdin WITH (FREEZE);\n", True
            return line, True
        if _TABLE_DATA.match(text) or (header and text in ("", "--")):
            self.table_data = True
        adapted = _adapt_line(line, self.target_major, self.superuser, self.restrict)
        return adapted or "", False

    def __call__(self, source: int, sink: int) -> None:
        """As a pipeline `Filter`: from file descriptor `source` to `sink`."""
        for data in self.chunks(iter(lambda: os.read(source, _CHUNK), b"")):
            view = memoryview(data)
            while view:
                view = view[os.write(sink, view) :]


def _with_end(source: Iterable[bytes]) -> Iterator[bytes]:
    yield from source
    yield b""


#: what pg_dump sets in its session before it reads rows, so that a table copied on its own
#: (`_copy_table`) has the text pg_dump would write, and is read back as pg_dump's script reads it
_DUMP_SESSION = (
    "SET datestyle = ISO",
    "SET intervalstyle = postgres",
    "SET extra_float_digits = 3",
    "SET statement_timeout = 0",
    "SET lock_timeout = 0",
    "SET row_security = off",
    "SET synchronize_seqscans = off",
    "SET search_path = ''",
)


@dataclass(frozen=True)
class _Endpoints:
    """How to reach the two servers of a copy: the tools and their connection options."""

    server: PrivateServer
    dump_bin: Path
    target_bin: Path
    source: list[str | Path]
    target: list[str | Path]

    def psql(self, side: Literal["source", "target"], db: str) -> list[str | Path]:
        binary, conn = (self.dump_bin, self.source) if side == "source" else (self.target_bin, self.target)
        return [binary / "psql", *conn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", _conninfo(db)]

    def dump(self, db: str, *options: str) -> list[str | Path]:
        return [self.dump_bin / "pg_dump", *self.source, "-d", _conninfo(db), "--no-sync", "-Fp", *options]


def copy_cluster(
    service: Service,
    source: PrivateServer,
    dump_bin: Path,
    target: PrivateServer,
    target_bin: Path,
    target_major: int,
    workdir: Path,
    *,
    jobs: int = 1,
    direct_above: int | None = None,
) -> None:
    """Copy roles, databases and their content from `source` to the freshly initdb'ed `target`.

    Databases stream `pg_dump | DumpRewriter | psql` (no dump file); the globals, a few lines,
    are rewritten the same way in a file. Tables of at least `direct_above` bytes (None: none)
    are copied each by its own `COPY TO | COPY FROM` between two psql, `jobs` at a time beside
    the rest of the data: rows move between C programs only, and big tables load in parallel.
    """
    superuser = source.find_superuser()
    ends = _Endpoints(
        source,
        dump_bin,
        target_bin,
        ["-h", str(source.socket_dir), "-p", str(source.port), "-U", superuser],
        ["-h", str(target.socket_dir), "-p", str(target.port), "-U", superuser],
    )
    with source.connect("postgres") as c:
        databases = [
            (str(n), str(e))
            for (n, e) in c.execute(
                "SELECT datname, pg_encoding_to_char(encoding) FROM pg_database"
                " WHERE datallowconn AND datname <> 'template0' ORDER BY 1"
            ).fetchall()
        ]
    restrict = psql_knows_restrict(service.run.run([target_bin / "psql", "--version"]).output)
    globals_sql = workdir / "globals.sql"
    with service.progress.task("copy roles and tablespaces"):
        service.run.run([dump_bin / "pg_dumpall", *ends.source, "--globals-only", "-f", globals_sql])
        _adapt_file(globals_sql, target_major, superuser, restrict)
        service.run.run([*ends.psql("target", "postgres"), "-f", globals_sql])
    globals_sql.unlink()

    def rewrite() -> DumpRewriter:  # one per stream: it keeps the state of the stream it reads
        # our target server runs wal_level = minimal
        return DumpRewriter(target_major, superuser, wal_skip=True, restrict=restrict)

    with service.progress.task("copy databases", total=len(databases)) as task:
        for db, encoding in databases:
            _copy_database(service, ends, db, encoding, rewrite, jobs, direct_above)
            task.advance()


#: the sessions that load a database fire no event trigger (evtenabled 'O', the default): a dump
#: refreshes materialized views after it created them, and an audit trigger on ddl_command_end
#: would log the load into the copy, which then differs from its source
_LOAD_OPTIONS = {"PGOPTIONS": "-c session_replication_role=replica"}


def _copy_database(
    service: Service,
    ends: _Endpoints,
    db: str,
    encoding: str,
    rewrite: Callable[[], DumpRewriter],
    jobs: int,
    direct_above: int | None,
) -> None:
    create = ["--create"] if db not in ("postgres", "template1") else []
    into = ends.psql("target", "postgres" if create else db)
    big = _big_tables(ends, db, direct_above) if direct_above is not None else []
    if not big:
        service.run.pipeline([ends.dump(db, *create), rewrite(), into], env=_LOAD_OPTIONS)
        return
    # the schema first, then the rows (the big tables on their own), then indexes, constraints
    # and triggers, as pg_dump orders its sections
    service.run.pipeline([ends.dump(db, "--section=pre-data", *create), rewrite(), into], env=_LOAD_OPTIONS)
    # pg_dump matches its patterns in the database's encoding
    rest = [in_encoding(f"--exclude-table-data={_qualified(schema, name)}", encoding) for schema, name, *_ in big]
    streams: list[Callable[[], object]] = [
        functools.partial(
            service.run.pipeline,
            [ends.dump(db, "--section=data", *rest), rewrite(), ends.psql("target", db)],
            env=_LOAD_OPTIONS,
        )
    ]
    streams += [functools.partial(_copy_table, service, ends, db, encoding, *table) for table in big]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done in [pool.submit(stream) for stream in streams]:
            done.result()
    service.run.pipeline([ends.dump(db, "--section=post-data"), rewrite(), ends.psql("target", db)], env=_LOAD_OPTIONS)


#: PostgreSQL encodings whose Python codec has another name (the rest look up as they are)
_CODECS = {"SQL_ASCII": "utf-8", "WIN866": "cp866", "WIN874": "cp874", "ISO_8859_5": "iso8859-5",
           "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7", "ISO_8859_8": "iso8859-8", "KOI8R": "koi8-r",
           "KOI8U": "koi8-u", "EUC_CN": "gb2312", "LATIN5": "iso8859-9", "LATIN6": "iso8859-10",
           "LATIN7": "iso8859-13", "LATIN8": "iso8859-14", "LATIN9": "iso8859-15", "LATIN10": "iso8859-16",
           "MULE_INTERNAL": "utf-8", "EUC_JIS_2004": "euc_jis_2004", "EUC_TW": "utf-8"}  # fmt: skip


def in_encoding(text: str, encoding: str) -> str:
    """`text` as an argument whose bytes are in the database's `encoding` (os.fsencode gives them
    back when the command starts): a session whose client_encoding is that encoding reads its
    commands in it, and a non-UTF-8 database may have non-ASCII names."""
    name = _CODECS.get(encoding) or encoding.replace("WIN", "cp").lower()
    try:
        raw = text.encode(codecs.lookup(name).name)
    except (LookupError, UnicodeEncodeError) as exc:
        raise MigrateError(f"cannot write {text!r} in the database encoding {encoding}: {exc}") from exc
    return os.fsdecode(raw)


#: a type whose values COPY carries in its binary format between any two majors: a built-in base
#: type (fixed OID; binary I/O unchanged across the majors the plugin takes) with binary I/O, or
#: an array of one (an array's binary form names its element type by OID, fixed for built-ins);
#: not the reg* types, whose binary form is the OID itself where the text form is the name
_BINARY_TYPE = (
    "{t}.oid < 10000 AND {t}.typtype = 'b' AND {t}.typsend::oid <> 0 AND {t}.typreceive::oid <> 0"
    " AND {t}.typname !~ '^reg'"
)
_BINARY_COLUMN = (
    "(" + _BINARY_TYPE.format(t="t") + " AND (t.typelem = 0 OR t.typlen <> -1 OR EXISTS (SELECT 1 FROM"
    " pg_type e WHERE e.oid = t.typelem AND " + _BINARY_TYPE.format(t="e") + ")))"
)


def _big_tables(ends: _Endpoints, db: str, at_least: int) -> list[tuple[str, str, list[str], bool]]:
    """The tables of `db` whose rows `copy_cluster` copies on their own, largest first: schema,
    name, the columns pg_dump would copy, and whether all of them can go in COPY's binary format
    (`_BINARY_COLUMN`). Partitions stay with pg_dump (it may load them through their root), as do
    tables of extensions (their configuration rows are filtered) and tables without columns."""
    from psycopg import sql  # imported when first needed: see server._prefetch_psycopg

    with ends.server.connect(db) as conn:
        generated = sql.SQL(" AND a.attgenerated = ''" if conn.info.server_version >= 120000 else "")
        query = sql.SQL(
            "SELECT n.nspname, c.relname, array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid"
            " AND a.attnum > 0 AND NOT a.attisdropped{generated} ORDER BY a.attnum),"
            " NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = c.oid"
            " AND a.attnum > 0 AND NOT a.attisdropped{generated} AND NOT {binary})"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND NOT c.relispartition"
            " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
            " AND d.objid = c.oid AND d.deptype = 'e')"
            " AND pg_relation_size(c.oid) >= {at_least} ORDER BY pg_relation_size(c.oid) DESC, 1, 2"
        ).format(generated=generated, at_least=sql.Literal(at_least), binary=sql.SQL(_BINARY_COLUMN))
        rows = conn.execute(query).fetchall()
    return [
        (str(schema), str(name), [str(c) for c in columns], bool(binary))
        for schema, name, columns, binary in rows
        if isinstance(columns, list) and columns
    ]


def _copy_table(
    service: Service,
    ends: _Endpoints,
    db: str,
    encoding: str,
    schema: str,
    name: str,
    columns: list[str],
    binary: bool,
) -> None:
    """Copy the rows of one table as pg_dump's script would load them, without them passing
    through Python: into a TRUNCATEd table in the loading transaction (no WAL on the target's
    wal_level = minimal) and FROZEN, like `DumpRewriter` makes of pg_dump's COPY blocks. With
    `binary`, in COPY's binary format: the target's backend, which bounds the load, parses no text
    (7 million pgbench rows, 16 into 14: 10.5-12.0 s against 12.9-15.2 s); text values still
    pass through the client encoding. The comparison after the copy reads every row either way."""
    if not re.fullmatch(r"[A-Z0-9_]+", encoding):
        raise MigrateError(f"database {db} has an encoding named {encoding!r}, which no client encoding is")
    table = _qualified(schema, name)
    listed = ", ".join(_ident(c) for c in columns)
    session = [arg for setting in (*_DUMP_SESSION, f"SET client_encoding = '{encoding}'") for arg in ("-c", setting)]
    to, options = (" (FORMAT binary)", "FORMAT binary, FREEZE") if binary else ("", "FREEZE")
    read = [*ends.psql("source", db), *session, "-c", in_encoding(f"COPY {table} ({listed}) TO STDOUT{to}", encoding)]
    load = ["BEGIN", f"TRUNCATE ONLY {table}", f"COPY {table} ({listed}) FROM STDIN WITH ({options})", "COMMIT"]
    write = [*ends.psql("target", db), *session, *[arg for sql in load for arg in ("-c", in_encoding(sql, encoding))]]
    service.run.pipeline([read, write])


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(schema: str, name: str) -> str:
    """The table's name in SQL, which is also a pg_dump pattern that matches exactly this table
    (inside double quotes, wildcards and dots are plain characters and a doubled quote is one)."""
    return f"{_ident(schema)}.{_ident(name)}"


def _conninfo(db: str) -> str:
    """`db` as a connection string: a bare -d argument with "=" in it would be parsed as one."""
    return "dbname='" + db.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _adapt_file(path: Path, target_major: int, superuser: str, restrict: bool) -> None:
    """Rewrite the dump at `path` in place (dumps can be large), keeping its owner."""
    adapted = path.with_suffix(".adapted")
    with path.open("rb") as src, adapted.open("wb") as dst:
        rewrite = DumpRewriter(target_major, superuser, wal_skip=False, restrict=restrict)
        dst.writelines(rewrite.chunks(iter(lambda: src.read(_CHUNK), b"")))
    st = path.stat()
    if os.geteuid() == 0:
        os.chown(adapted, st.st_uid, st.st_gid)
    adapted.replace(path)
