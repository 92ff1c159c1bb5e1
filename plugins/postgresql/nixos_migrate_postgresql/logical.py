"""Copying a cluster's content through SQL: the `dump` upgrade method and every downgrade.

The dump is always written by the pg_dump/pg_dumpall of the *source* server's major (an older
pg_dump refuses a newer server) and loaded by the target's psql with ON_ERROR_STOP, so anything
the older server cannot take fails the step instead of being skipped. Statements known to be only
settings of newer servers are dropped on the way down.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from nixos_migrate.context import Service
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


#: a COPY block of a plain dump: its rows are data and never rewritten
_COPY_START = re.compile(r"^COPY .* FROM stdin;$")
_COPY_END = "\\."


def _adapt(lines: Iterable[str], target_major: int, superuser: str) -> Iterator[str]:
    """The dump's lines as the target major takes them; rows inside COPY blocks pass untouched."""
    in_copy = False
    for line in lines:
        if in_copy:
            in_copy = line.rstrip("\n") != _COPY_END
            yield line
            continue
        in_copy = bool(_COPY_START.match(line.rstrip("\n")))
        adapted = _adapt_line(line, target_major, superuser)
        if adapted is not None:
            yield adapted


def _adapt_line(line: str, target_major: int, superuser: str) -> str | None:
    """The line (outside COPY data) as the target major takes it, or None to drop it."""
    if any(target_major < since and pattern.match(line) for since, pattern in _NEWER_SETTINGS):
        return None
    if line.rstrip() == f"CREATE ROLE {_quote(superuser)};":
        return None  # the bootstrap superuser exists in every new cluster
    for before, old, new in _OLDER_SPELLINGS:
        if target_major < before:
            line = line.replace(old, new)
    return line


def _quote(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _sed_literal(text: str, replacement: bool = False) -> str:
    """`text` matched (or inserted) literally by sed's basic regular expressions."""
    special = "\\/&" if replacement else "\\/.*[]^$"
    return "".join("\\" + c if c in special else c for c in text)


def _sed_program(target_major: int) -> list[str]:
    """sed arguments that drop or rewrite what only newer servers understand (fixed patterns only),
    leaving the rows of COPY blocks alone; empty when the target needs nothing rewritten."""
    args = []
    for since, pattern in _NEWER_SETTINGS:
        if target_major < since:
            args += ["-e", f"/{pattern.pattern}/d"]
    for before, old, new in _OLDER_SPELLINGS:
        if target_major < before:
            args += ["-e", f"s/{_sed_literal(old)}/{_sed_literal(new, replacement=True)}/g"]
    if not args:
        return []
    # inside a COPY block (its first line included: table names are data too) branch to the end
    return ["-e", r"/^COPY .* FROM stdin;$/,/^\\\.$/b", *args]


def copy_cluster(
    service: Service,
    source: PrivateServer,
    dump_bin: Path,
    target: PrivateServer,
    target_bin: Path,
    target_major: int,
    workdir: Path,
) -> None:
    """Copy roles, databases and their content from `source` to the freshly initdb'ed `target`.

    Databases stream `pg_dump | sed | psql` (no dump file, no pass through Python); the globals,
    a few lines, are rewritten here.
    """
    superuser = source.find_superuser()
    conn = ["-h", str(source.socket_dir), "-p", str(source.port), "-U", superuser]
    into = ["-h", str(target.socket_dir), "-p", str(target.port), "-U", superuser]
    psql = [str(target_bin / "psql"), *into, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    with source.connect("postgres") as c:
        databases = [
            str(n)
            for (n,) in c.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND datname <> 'template0' ORDER BY 1"
            ).fetchall()
        ]
    globals_sql = workdir / "globals.sql"
    with service.progress.task("copy roles and tablespaces"):
        service.run.run([dump_bin / "pg_dumpall", *conn, "--globals-only", "-f", globals_sql])
        _adapt_file(globals_sql, target_major, superuser)
        service.run.run([*psql, "-d", "postgres", "-f", globals_sql])
    globals_sql.unlink()
    program = _sed_program(target_major)
    # without rules, sed would only cost a copy of every byte
    rewrite: list[list[str | Path]] = [["sed", *program]] if program else []
    with service.progress.task("copy databases", total=len(databases)) as task:
        for db in databases:
            create = db not in ("postgres", "template1")
            dump: list[str | Path] = [dump_bin / "pg_dump", *conn, "-d", db, "--no-sync", "-Fp"]
            dump += ["--create"] if create else []
            service.run.pipeline([dump, *rewrite, [*psql, "-d", "postgres" if create else db]])
            task.advance()


def _adapt_file(path: Path, target_major: int, superuser: str) -> None:
    """Rewrite the dump at `path` in place, line by line (dumps can be large), keeping its owner."""
    adapted = path.with_suffix(".adapted")
    with path.open("rb") as src, adapted.open("wb") as dst:
        lines = (raw.decode("utf-8", "surrogateescape") for raw in src)
        for line in _adapt(lines, target_major, superuser):
            dst.write(line.encode("utf-8", "surrogateescape"))
    st = path.stat()
    if os.geteuid() == 0:
        os.chown(adapted, st.st_uid, st.st_gid)
    adapted.replace(path)
