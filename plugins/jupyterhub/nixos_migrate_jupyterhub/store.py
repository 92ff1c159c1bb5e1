"""Where a hub's database is: an SQLite file or a PostgreSQL database, behind one interface.

Both answer the same questions (its revision, its fingerprint by column, a backup file and its
restore, a scratch copy for a rehearsal or a private hub), so the plugin's steps are written
once. The PostgreSQL role's password comes from `db_password_file` and reaches libpq (ours,
pg_dump's, the hub's) through `PGPASSWORD`, never argv.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from nixos_migrate import appschema
from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.fingerprint import file_digest
from nixos_migrate.model import Check
from nixos_migrate_jupyterhub.settings import JupyterhubSettings

REVISION = ("alembic_version", "version_num")


class Store(Protocol):
    #: the backup's file name
    file: str

    def describe(self) -> str: ...
    def url(self) -> str: ...
    def env(self) -> dict[str, str]: ...
    def exists(self) -> bool: ...
    def revision(self) -> str | None: ...
    def integrity(self) -> Check: ...
    def fingerprint(self, tables: tuple[str, ...]) -> dict[str, Any]: ...
    def size(self) -> int: ...
    def backup(self, service: Service, dest: Path) -> Path: ...
    def restore(self, service: Service, saved: Path, checksum: str, what: str) -> None: ...
    def copy(self, service: Service, name: str) -> Store: ...
    def scratch(self, service: Service, name: str) -> Store: ...
    def drop(self) -> None: ...


@dataclass(frozen=True)
class SqliteStore:
    path: Path
    file = "jupyterhub.sqlite"

    def describe(self) -> str:
        return str(self.path)

    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def env(self) -> dict[str, str]:
        return {}

    def exists(self) -> bool:
        if not self.path.is_file():
            return False
        with self.path.open("rb") as f:
            if f.read(16) != b"SQLite format 3\0":
                raise MigrateError(f"{self.path} (settings.db_url) is not an SQLite database")
        return True

    def revision(self) -> str | None:
        return appschema.sqlite_revision(self.path, *REVISION)

    def integrity(self) -> Check:
        return appschema.sqlite_integrity(self.path)

    def fingerprint(self, tables: tuple[str, ...]) -> dict[str, Any]:
        return appschema.fingerprint(self.path, tables)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.is_file() else 0

    def backup(self, service: Service, dest: Path) -> Path:
        appschema.sqlite_copy(self.path, dest / self.file)
        return dest / self.file

    def restore(self, service: Service, saved: Path, checksum: str, what: str) -> None:
        appschema.sqlite_restore(saved, checksum, self.path, what)

    def scratch(self, service: Service, name: str) -> SqliteStore:
        return SqliteStore(service.state_dir / "copies" / f"{name}.sqlite")

    def copy(self, service: Service, name: str) -> SqliteStore:
        copy = self.scratch(service, name)
        service.private_dir(copy.path.parent)
        appschema.sqlite_copy(self.path, copy.path)
        _own(service, copy.path)
        return copy

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class PostgresStore:
    db_url: str
    password_file: Path | None
    pg_bin: Path | None
    dbname: str
    params: tuple[tuple[str, str], ...]
    file = "jupyterhub.pgdump"

    @classmethod
    def of(cls, s: JupyterhubSettings) -> PostgresStore:
        parts = urlsplit(s.db_url)
        if parts.password:
            raise UsageError("settings.db_url holds a password", hint="give it in settings.db_password_file")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        params = {"host": query.get("host") or parts.hostname or "", "port": query.get("port") or str(parts.port or "")}
        params["user"] = unquote(parts.username or "")
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise UsageError("settings.db_url names no database", hint="postgresql://user@host:port/dbname")
        kept = tuple((k, v) for k, v in params.items() if v)
        return cls(s.db_url, s.db_password_file, s.pg_bin, dbname, kept)

    def describe(self) -> str:
        return f"PostgreSQL database {self.dbname}"

    def url(self) -> str:
        parts = urlsplit(self.db_url)
        return urlunsplit(parts._replace(path=f"/{self.dbname}"))

    def env(self) -> dict[str, str]:
        if self.password_file is None:
            return {}
        try:
            return {"PGPASSWORD": self.password_file.read_text().strip()}
        except OSError as exc:
            raise UsageError(f"settings.db_password_file: {exc.strerror}: {self.password_file}") from None

    def conninfo(self, dbname: str | None = None) -> str:
        """libpq's connection string, without the password."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(**dict(self.params), dbname=dbname or self.dbname)

    @contextlib.contextmanager
    def connect(self, dbname: str | None = None, autocommit: bool = False) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.conninfo(dbname), password=self.env().get("PGPASSWORD"), autocommit=autocommit)
        except psycopg.OperationalError as exc:
            raise MigrateError(f"{self.describe()}: cannot connect: {str(exc).strip()}") from None
        with conn:
            yield conn

    def exists(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.conninfo(), password=self.env().get("PGPASSWORD")):
                return True
        except psycopg.OperationalError as exc:
            if f'database "{self.dbname}" does not exist' in str(exc):
                return False
            raise MigrateError(f"{self.describe()}: cannot connect: {str(exc).strip()}") from None

    def may_copy(self) -> Check:
        """Rehearsals and the private hub of verify work on scratch databases made from this one."""
        with self.connect() as conn:
            allowed = bool(conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user")
                           .fetchone()[0])  # fmt: skip
        detail = "" if allowed else "the role lacks CREATEDB: grant it (ALTER ROLE … CREATEDB)"
        return Check("the role may create scratch databases (rehearsal, verify)", allowed, detail)

    def revision(self) -> str | None:
        with self.connect() as conn:
            if conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None:
                return None
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        if len(rows) != 1:
            raise MigrateError(f"{self.describe()}: alembic_version holds {len(rows)} revisions, not one")
        return str(rows[0][0])

    def integrity(self) -> Check:
        with self.connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        return Check("PostgreSQL answers", True, f"{self.describe()} on PostgreSQL {version}")

    def fingerprint(self, tables: tuple[str, ...]) -> dict[str, Any]:
        from psycopg import sql

        found: dict[str, Any] = {}
        with self.connect() as conn:
            for table in tables:
                columns = [r[0] for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = %s ORDER BY ordinal_position", (table,))]  # fmt: skip
                if not columns:
                    continue
                keys = [r[0] for r in conn.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
                    "ORDER BY a.attname", (table,))] or columns  # fmt: skip
                query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table),
                    sql.SQL(", ").join(map(sql.Identifier, keys)))  # fmt: skip
                found[table] = appschema.table_digest(columns, conn.execute(query))
        return found

    def size(self) -> int:
        with self.connect() as conn:
            return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def tool(self, name: str) -> Path:
        if self.pg_bin is None or not (self.pg_bin / name).is_file():
            raise UsageError(
                f"no {name} for the hub's PostgreSQL database (settings.pg_bin: {self.pg_bin})",
                hint="set settings.pg_bin to the bin directory of the PostgreSQL package serving it",
            )
        return self.pg_bin / name

    def backup(self, service: Service, dest: Path) -> Path:
        out = dest / "jupyterhub.pgdump"
        service.run.run([self.tool("pg_dump"), "--format=custom", f"--file={out}", f"--dbname={self.conninfo()}"],
                        env=self.env())  # fmt: skip
        return out

    def restore(self, service: Service, saved: Path, checksum: str, what: str) -> None:
        """What the role owns in its schema is dropped, then the dump is loaded in one
        transaction: the database holds again exactly what it held (the role's grants and the
        database itself are left alone)."""
        if not saved.is_file() or file_digest(saved) != checksum:
            raise MigrateError(f"{what}: {saved} is missing or does not match its checksum; it was not used")
        restore = self.tool("pg_restore")
        with self.connect() as conn:
            owned = conn.execute(
                "SELECT c.relkind, quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND pg_get_userbyid(c.relowner) = current_user"
            ).fetchall()
            kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE",
                     "f": "FOREIGN TABLE"}  # fmt: skip
            for kind, name in sorted(owned, key=lambda r: r[0] != "r"):
                conn.execute(f"DROP {kinds[kind]} IF EXISTS {name} CASCADE")
        service.run.run([restore, "--single-transaction", "--exit-on-error", f"--dbname={self.conninfo()}", saved],
                        env=self.env())  # fmt: skip

    def copy(self, service: Service, name: str) -> PostgresStore:
        """A scratch database made from this one as a template (the role needs CREATEDB)."""
        copy = self.scratch(service, name).dbname
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{copy}"')
            try:
                conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{self.dbname}"')
            except Exception as exc:
                raise MigrateError(f"cannot make a scratch copy of {self.describe()}: {str(exc).strip()}") from None
        return replace(self, dbname=copy)

    def scratch(self, service: Service, name: str) -> PostgresStore:
        return replace(self, dbname=f"{self.dbname}_{name.replace('-', '_').replace('.', '_')}"[:63])

    def drop(self) -> None:
        with self.connect("postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}"')


def of(s: JupyterhubSettings) -> Store:
    if s.is_postgres:
        return PostgresStore.of(s)
    try:
        return SqliteStore(s.database)
    except ValueError as exc:
        raise UsageError(f"settings.db_url: {exc}") from None


def _own(service: Service, path: Path) -> None:
    """The hub and alembic run as the service's user and write the copy."""
    if os.geteuid() == 0:
        os.chown(path, service.run.identity.uid, service.run.identity.gid)
