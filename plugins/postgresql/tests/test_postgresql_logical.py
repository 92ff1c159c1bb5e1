# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
"""Dumps on their way into another major: the stream rewriter drops what older majors lack, never
touches the rows of COPY blocks however the stream is chunked, and turns each table's data into a
WAL-skipping frozen load; a real pg_dump through it, loaded by a real older psql, keeps every row."""

from __future__ import annotations

import hashlib

import pytest
from conftest import SMALL

from nixos_migrate.runner import CommandRunner, Identity
from nixos_migrate_postgresql.logical import DumpRewriter, psql_knows_restrict

ROWS = "a.b*c [x] ^$ & / \\\\\nSET transaction_timeout = 0;\nx LOCALE_PROVIDER = libc y\n"

DUMP = (
    "SET default_table_access_method = heap;\n"
    "SET default_toast_compression = 'pglz';\n"
    "SET transaction_timeout = 0;\n"
    "CREATE DATABASE legacy WITH TEMPLATE = template0 ENCODING = 'LATIN1' LOCALE_PROVIDER = libc LOCALE = 'C';\n"
    "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$\n"
    "COPY public.t (a) FROM stdin;\n"
    "$$;\n"
    "--\n"
    '-- Data for Name: T x; Type: TABLE DATA; Schema: my "s"; Owner: postgres\n'
    "--\n"
    "\n"
    'COPY "my ""s"".x"."T x" (a) FROM stdin;\n' + ROWS + "\\.\n"
    "\n"
    "--\n"
    "-- Data for Name: empty; Type: TABLE DATA; Schema: public; Owner: postgres\n"
    "--\n"
    "\n"
    "COPY public.empty  FROM stdin;\n"
    "\\.\n"
    "SET transaction_timeout = 0;\n"
    "caf\xe9 = 'latin1 bytes'\n"
)
RAW = DUMP.encode("latin-1")


def rewrite(data: bytes, target: int, *, wal_skip: bool = True, chunk: int | None = None) -> bytes:
    size = chunk or len(data) or 1
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(DumpRewriter(target, "postgres", wal_skip=wal_skip).chunks(iter(pieces)))


@pytest.mark.parametrize("target", [11, 13, 14, 16, 18])
def test_rules_apply_outside_copy_blocks_only(target):
    out = rewrite(RAW, target).decode("latin-1")
    outside = out.replace(ROWS, "")
    assert ROWS in out  # data rows pass untouched, even those that look like settings or markers
    assert "AS $$\nCOPY public.t (a) FROM stdin;\n$$;" in out  # no data block: no header above it
    assert ("transaction_timeout" in outside) == (target >= 17)
    assert ("LOCALE_PROVIDER" in outside) == (target >= 15)
    assert ("default_toast_compression" in outside) == (target >= 14)
    assert "caf\xe9 = 'latin1 bytes'" in out  # non-UTF-8 text keeps its bytes


def test_table_data_becomes_a_wal_skipping_frozen_load():
    out = rewrite(RAW, 16).decode("latin-1")
    assert (
        'BEGIN;\nTRUNCATE ONLY "my ""s"".x"."T x";\nCOPY "my ""s"".x"."T x" (a) FROM stdin WITH (FREEZE);\n'
        + ROWS
        + "\\.\nCOMMIT;\n"
    ) in out
    assert "BEGIN;\nTRUNCATE ONLY public.empty;\nCOPY public.empty  FROM stdin WITH (FREEZE);\n\\.\nCOMMIT;\n" in out
    # a line inside a function body that merely looks like COPY (no TABLE DATA header above) stays
    assert "AS $$\nCOPY public.t (a) FROM stdin;\n$$;" in out
    assert out.count("BEGIN;") == 2 and out.count("COMMIT;") == 2
    assert "BEGIN" not in rewrite(RAW, 16, wal_skip=False).decode("latin-1")


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 7, 64, 1000])
def test_any_chunking_gives_the_same_stream(chunk):
    assert rewrite(RAW, 14, chunk=chunk) == rewrite(RAW, 14)


@pytest.mark.parametrize(
    ("version", "knows"),
    [("psql (PostgreSQL) 13.4", False), ("psql (PostgreSQL) 13.22", True), ("psql (PostgreSQL) 16.15", True),
     ("psql (PostgreSQL) 17.5", False), ("psql (PostgreSQL) 18.0", True), ("psql (PostgreSQL) 11.13", False)],
)  # fmt: skip
def test_restrict_lines_only_for_a_psql_that_knows_them(version, knows):
    dump = b"\\restrict abc\nSELECT 1;\n\\unrestrict abc\n"
    out = b"".join(DumpRewriter(13, "x", wal_skip=True, restrict=psql_knows_restrict(version)).chunks([dump]))
    assert out == (dump if knows else b"SELECT 1;\n")


def test_a_dump_without_final_newline_is_kept_whole():
    assert rewrite(b"SELECT 1;\nSELECT 2;", 16) == b"SELECT 1;\nSELECT 2;"


def test_as_a_pipeline_filter_between_commands(tmp_path):
    runner = CommandRunner(Identity.lookup(None))
    body = "".join(f"{i}\tr\\\\ow {i}\n" for i in range(200_000))  # 3 MB: many chunks
    header = "--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: x\n--\n\n"
    dump = f"{header}COPY public.t (a, b) FROM stdin;\n{body}\\.\n"
    (tmp_path / "dump.sql").write_text(dump)
    out = runner.pipeline([["cat", tmp_path / "dump.sql"], DumpRewriter(16, "x", wal_skip=True), ["sha256sum"]])
    load = "BEGIN;\nTRUNCATE ONLY public.t;\nCOPY public.t (a, b) FROM stdin WITH (FREEZE);\n"
    expected = f"{header}{load}{body}\\.\nCOMMIT;\n"
    assert out.output.split()[0] == hashlib.sha256(expected.encode()).hexdigest()


def test_a_real_dump_loads_into_the_older_major(cluster_factory, pg_root):
    """pg_dump 17 of a small database, through the rewriter, into PostgreSQL 13 with ON_ERROR_STOP:
    rows equal, and the load ran as BEGIN/TRUNCATE/COPY FREEZE."""
    src = cluster_factory("17", pg_root / "src", sql=SMALL).start()
    dst = cluster_factory("13", pg_root / "dst", sql=None).start()
    dump = src.as_user(
        [src.prefix / "bin" / "pg_dump", "-h", src.sock, "-p", str(src.port), "-U", "postgres", "--create", "app"]
    )
    older = dst.as_user([dst.prefix / "bin" / "psql", "--version"])
    loaded = b"".join(
        DumpRewriter(13, "postgres", wal_skip=True, restrict=psql_knows_restrict(older)).chunks([dump.encode()])
    ).decode()
    assert "COPY public.t (id, v) FROM stdin WITH (FREEZE);" in loaded and "TRUNCATE ONLY public.t;" in loaded
    assert "transaction_timeout" not in loaded.replace("SET transaction_timeout", "")
    dst.psql(loaded)
    query = "SELECT count(*), md5(string_agg(id || v, ',' ORDER BY id)) FROM t"
    assert dst.psql(query, db="app") == src.psql(query, db="app")
