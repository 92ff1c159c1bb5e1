"""Shared by the gitlab plugin's tests: GitLab's database on a real PostgreSQL, fake GitLab
packages whose commands are the stand-in (gitlab_standin.py; no GitLab exists here), a corpus
shaped like a GitLab instance's, and a digest of everything read without the plugin.

A package per version holds what GitLab's own does: share/gitlab/VERSION, the cumulative
migrations of every version up to it (db/migrate, db/post_migrate, db/schema_migrations) and
the batched background migrations they queue. Each version adds a column to `projects` before
deployment and queues its backfill after; the next version's first migration requires that
backfill finished and makes the column NOT NULL: a skipped stop fails as GitLab's does.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nixos_migrate.fingerprint import tree_entries
from nixos_migrate.testing import provision
from nixos_migrate.testing.cli import CliResult, run_cli
from nixos_migrate.testing.manifests import ManifestBuilder
from nixos_migrate_postgresql import scratch
from nixos_migrate_postgresql.testing import postgresql

#: the versions packaged for the tests: 16.11 -> 17.8 passes the stops 17.1 (conditional), 17.3, 17.5
VERSIONS = ("16.11", "17.1", "17.3", "17.5", "17.8")
PG_MAJOR = "16"
DBNAME = "gitlabhq_production"
STANDIN = Path(__file__).with_name("gitlab_standin.py")

SCHEMA = r"""
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE TYPE issue_state AS ENUM ('opened', 'closed', 'locked');
CREATE TABLE users (
  id bigserial PRIMARY KEY, username text NOT NULL UNIQUE, email text NOT NULL, name text,
  encrypted_password text, otp_secret bytea, admin boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL, preferences jsonb NOT NULL DEFAULT '{}');
CREATE TABLE namespaces (
  id bigserial PRIMARY KEY, name text NOT NULL, path text NOT NULL, type text NOT NULL,
  parent_id bigint REFERENCES namespaces(id) ON DELETE CASCADE, traversal_ids bigint[] NOT NULL DEFAULT '{}');
CREATE TABLE projects (
  id bigserial PRIMARY KEY, name text NOT NULL, path text NOT NULL,
  namespace_id bigint NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
  creator_id bigint REFERENCES users(id) ON DELETE SET NULL, description text,
  visibility_level smallint NOT NULL DEFAULT 0, archived boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL, UNIQUE (namespace_id, path));
CREATE TABLE issues (
  id bigserial PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  iid integer NOT NULL, title text NOT NULL, description text, state issue_state NOT NULL DEFAULT 'opened',
  author_id bigint REFERENCES users(id), created_at timestamptz NOT NULL, updated_at timestamptz,
  UNIQUE (project_id, iid));
CREATE INDEX index_issues_on_title_trigram ON issues USING gin (title gin_trgm_ops);
CREATE TABLE notes (
  id bigserial PRIMARY KEY, noteable_type text NOT NULL, noteable_id bigint NOT NULL, note text,
  position jsonb, author_id bigint REFERENCES users(id), created_at timestamptz NOT NULL);
CREATE INDEX index_notes_on_position ON notes USING gin (position jsonb_path_ops);
CREATE TABLE p_ci_builds (
  id bigint NOT NULL, partition_id bigint NOT NULL, project_id bigint NOT NULL, name text,
  status text NOT NULL, options jsonb, started_at timestamptz, PRIMARY KEY (id, partition_id))
  PARTITION BY LIST (partition_id);
CREATE TABLE ci_builds PARTITION OF p_ci_builds FOR VALUES IN (100);
CREATE TABLE ci_builds_101 PARTITION OF p_ci_builds FOR VALUES IN (101);
CREATE TABLE ci_job_artifacts (
  id bigserial PRIMARY KEY, project_id bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
  file_type smallint NOT NULL, file bytea, size bigint);
CREATE TABLE web_hooks (
  id bigserial PRIMARY KEY, project_id bigint REFERENCES projects(id), url text NOT NULL,
  encrypted_token bytea, encrypted_token_iv bytea, during tstzrange,
  EXCLUDE USING gist (project_id WITH =, during WITH &&));
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.updated_at := NEW.created_at + interval '1 hour'; RETURN NEW; END $$;
CREATE TRIGGER issues_updated BEFORE INSERT OR UPDATE ON issues FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE VIEW postgres_partitions AS
  SELECT c.relname AS name, p.relname AS parent FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent;
CREATE SEQUENCE shard_seq START 1000;
COMMENT ON TABLE projects IS 'Projekte \u2013 プロジェクト';
"""


def corpus_sql(rows: int) -> str:
    """Rows of every kind: unicode beyond the BMP and right-to-left, NULLs, big text, 1 MiB
    binaries, arrays, JSON, enum states, both CI partitions, self-referencing namespaces."""
    projects = max(10, rows // 20)
    return f"""
INSERT INTO users (username, email, name, encrypted_password, otp_secret, admin, created_at, preferences)
  SELECT 'user' || i, 'user' || i || '@example.org', CASE WHEN i % 7 = 0 THEN NULL ELSE 'Ünïcødé 😀 עברית ' || i END,
    md5(i::text), decode(md5(i::text), 'hex'), i = 1, '2020-01-01'::timestamptz + i * interval '1 minute',
    jsonb_build_object('theme', i % 3, 'tabs', jsonb_build_array(i, 'x'))
  FROM generate_series(1, 500) i;
INSERT INTO namespaces (name, path, type, parent_id, traversal_ids)
  SELECT 'group ' || i, 'group-' || i, 'Group', NULL, ARRAY[i] FROM generate_series(1, 20) i;
INSERT INTO namespaces (name, path, type, parent_id, traversal_ids)
  SELECT 'sub ' || i, 'sub-' || i, 'Group', 1 + i % 20, ARRAY[1 + i % 20, 20 + i] FROM generate_series(1, 20) i;
INSERT INTO projects (name, path, namespace_id, creator_id, description, visibility_level, archived, created_at)
  SELECT 'Project ' || i, 'project-' || i, 1 + i % 40, 1 + i % 500, repeat('描述 ', i % 50),
    (i % 3) * 10, i % 17 = 0, '2021-01-01'::timestamptz + i * interval '1 hour'
  FROM generate_series(1, {projects}) i;
INSERT INTO issues (project_id, iid, title, description, state, author_id, created_at)
  SELECT 1 + i % {projects}, i, 'Issue ' || i || ' \u2013 café ☕', repeat('lorem ipsum ', i % 200),
    (ARRAY['opened', 'closed', 'locked']::issue_state[])[1 + i % 3], 1 + i % 500,
    '2022-01-01'::timestamptz + i * interval '1 second'
  FROM generate_series(1, {rows}) i;
INSERT INTO notes (noteable_type, noteable_id, note, position, author_id, created_at)
  SELECT 'Issue', 1 + i % {rows}, 'note ' || i || E'\\nline two\\ttab', CASE WHEN i % 2 = 0 THEN
    jsonb_build_object('line', i, 'path', 'src/' || i || '.rb') END, 1 + i % 500,
    '2023-01-01'::timestamptz + i * interval '1 second'
  FROM generate_series(1, {rows}) i;
INSERT INTO p_ci_builds (id, partition_id, project_id, name, status, options, started_at)
  SELECT i, 100 + i % 2, 1 + i % {projects}, 'job ' || i, (ARRAY['success', 'failed', 'canceled'])[1 + i % 3],
    jsonb_build_object('script', jsonb_build_array('make', 'test')), '2024-01-01'::timestamptz + i * interval '1 second'
  FROM generate_series(1, {rows // 2}) i;
INSERT INTO ci_job_artifacts (project_id, file_type, file, size)
  SELECT 1 + i, i % 4, convert_to(repeat(md5(i::text), 32768), 'UTF8'), 1048576 FROM generate_series(1, 8) i;
INSERT INTO web_hooks (project_id, url, encrypted_token, encrypted_token_iv, during)
  SELECT 1 + i, 'https://hooks.example.org/' || i, decode(md5('t' || i), 'hex'), decode(md5('iv' || i), 'hex'),
    tstzrange('2024-01-01'::timestamptz + i * interval '1 day', '2024-01-02'::timestamptz + i * interval '1 day')
  FROM generate_series(1, 5) i;
SELECT setval('shard_seq', 4242);
"""


def _ts(version: str, n: int) -> str:
    major, minor = (int(x) for x in version.split("."))
    return f"20{major:02d}{minor:02d}{n:02d}000000"


def _tag(version: str) -> str:
    return "v" + version.replace(".", "_")


def _job(version: str) -> str:
    return "Backfill" + version.replace(".", "x")


def _migrations(version: str, previous: str | None) -> dict[str, str]:
    """relative path -> content of the files version `version` adds to the Rails tree."""
    tag, files = _tag(version), {}
    if previous is None:
        files[f"db/migrate/{_ts(version, 0)}_init_schema.sql"] = SCHEMA
    else:
        prev = _tag(previous)
        files[f"db/migrate/{_ts(version, 0)}_ensure_{prev}_backfilled.sql"] = (
            f"-- requires-finished: {_job(previous)}\nALTER TABLE projects ALTER COLUMN {prev} SET NOT NULL\n"
        )
    files[f"db/migrate/{_ts(version, 1)}_add_{tag}_to_projects.sql"] = f"ALTER TABLE projects ADD COLUMN {tag} bigint\n"
    files[f"db/post_migrate/{_ts(version, 2)}_queue_backfill_{tag}.sql"] = (
        f"-- queue: {_job(version)} projects id []\nSELECT 1\n"
    )
    weight = int(version.replace(".", ""))
    files[f"lib/background_migrations/{_job(version)}.sql"] = (
        f"UPDATE projects SET {tag} = id * {weight} WHERE {tag} IS NULL\n"
    )
    return files


@functools.cache
def _python_for(user_name: str) -> str:
    """An interpreter the service user can run (the test's own may sit in root's home)."""
    user = pwd.getpwnam(user_name)
    candidates = [Path("/usr/bin/python3"), Path(shutil.which("python3") or "/"), Path(sys.executable).resolve()]
    for candidate in candidates:
        if candidate.is_file():
            try:
                provision.run_as(user, [candidate, "-c", "import json, tarfile, tempfile"])
            except provision.ProvisionError:
                continue
            return str(candidate)
    pytest.fail(f"no python3 that user {user_name} can run for the GitLab stand-in (tried {candidates})")


@dataclass
class Gitlab:
    """GitLab's database on a private PostgreSQL, its state dir, and fake packages."""

    root: Path
    user: pwd.struct_passwd
    pg_major: str = PG_MAJOR
    versions: tuple[str, ...] = VERSIONS
    port: int = field(default_factory=provision.free_port)
    server: provision.Server | None = None

    @property
    def pg(self) -> Path:
        return postgresql(self.pg_major)

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def backup_path(self) -> Path:
        return self.state_dir / "backup"

    def package(self, version: str) -> Path:
        return self.root / "packages" / version

    def create(self) -> Gitlab:
        """An initialized, running cluster with GitLab's empty database, the state dir with its
        secrets and files, and a package per version."""
        self.root.mkdir(parents=True, exist_ok=True)
        provision.traversable(self.root)
        short = Path(f"/tmp/nm-gl-{os.getpid()}-{self.port}")
        short.mkdir(exist_ok=True)
        provision.traversable(short)
        self.sock.symlink_to(short)
        data = self.root / "pgdata"
        data.mkdir()
        for path in (short, data):
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        provision.run_as(self.user, scratch.initdb_argv(self.pg, data, self.pg_major))
        self.server = scratch.server(self.pg, data, short, self.port, self.user, log=self.root / "pg.log")
        self.server.start(lambda: scratch.accepts(self.pg, short, self.port))
        self.psql(f"CREATE ROLE gitlab LOGIN; CREATE DATABASE {DBNAME} OWNER gitlab", db="postgres", user="postgres")
        self._state_dir()
        previous = None
        for version in self.versions:
            self._package(version, previous)
            previous = version
        provision.chown_tree(self.root / "packages", self.user)
        return self

    def _state_dir(self) -> None:
        config = self.state_dir / "config"
        config.mkdir(parents=True)
        (config / "secrets.yml").write_text(
            "production:\n  db_key_base: " + "a1" * 64 + "\n  otp_key_base: " + "b2" * 64 + "\n"
        )
        (config / "database.yml").write_text(f"production:\n  database: {DBNAME}\n  host: {self.sock}\n")
        (config / "gitlab.yml").write_text("production:\n  gitlab:\n    host: git.example.org\n")
        (self.state_dir / ".gitlab_shell_secret").write_text("shell-secret-0123456789\n")
        (self.state_dir / ".gitlab_workhorse_secret").write_text("d29ya2hvcnNl\n")
        repo = self.state_dir / "repositories" / "@hashed" / "6b" / "86" / "6b86b273.git"
        (repo / "objects" / "pack").mkdir(parents=True)
        (repo / "HEAD").write_text("ref: refs/heads/main\n")
        (repo / "objects" / "pack" / "pack-1.pack").write_bytes(os.urandom(300_000))
        uploads = self.state_dir / "uploads" / "-" / "system" / "user" / "avatar" / "1"
        uploads.mkdir(parents=True)
        (uploads / "avatar \u2013 ünïcødé.png").write_bytes(os.urandom(20_000))
        self.backup_path.mkdir()
        for secret in (config / "secrets.yml", self.state_dir / ".gitlab_shell_secret"):
            secret.chmod(0o600)
        provision.chown_tree(self.state_dir, self.user)

    def _package(self, version: str, previous: str | None) -> None:
        root = self.package(version)
        tree = root / "share" / "gitlab"
        (tree / "db" / "schema_migrations").mkdir(parents=True)
        (tree / "VERSION").write_text(f"{version}.4\n")
        if previous is not None:
            shutil.copytree(self.package(previous) / "share" / "gitlab" / "db", tree / "db", dirs_exist_ok=True)
            shutil.copytree(self.package(previous) / "share" / "gitlab" / "lib", tree / "lib", dirs_exist_ok=True)
        for relative, text in _migrations(version, previous).items():
            (tree / relative).parent.mkdir(parents=True, exist_ok=True)
            (tree / relative).write_text(text)
        for path in (tree / "db" / "migrate").glob("*.sql"):
            (tree / "db" / "schema_migrations" / path.name.split("_", 1)[0]).write_text("")
        for path in (tree / "db" / "post_migrate").glob("*.sql"):
            (tree / "db" / "schema_migrations" / path.name.split("_", 1)[0]).write_text("")
        config = root / "standin.json"
        config.write_text(
            json.dumps(
                {
                    "version": version,
                    "tree": str(tree),
                    "state_dir": str(self.state_dir),
                    "backup_path": str(self.backup_path),
                    "pg_prefix": str(self.pg),
                    "db": {"host": str(self.sock), "port": self.port, "dbname": DBNAME, "user": "gitlab"},
                }
            )
        )
        shutil.copyfile(STANDIN, root / "standin.py")
        (root / "bin").mkdir()
        python = _python_for(self.user.pw_name)
        for tool in ("gitlab-rake", "gitlab-backup", "gitlab-rails"):
            wrapper = root / "bin" / tool
            wrapper.write_text(f'#!/bin/sh\nexec {python} {root}/standin.py {config} {tool} "$@"\n')
            wrapper.chmod(0o755)

    # -- acting as GitLab and as the operator -------------------------------------------------

    def gitlab(self, version: str, *args: str, env: dict[str, str] | None = None) -> str:
        """Run one of the package's commands as the service user, as GitLab's units do."""
        argv = [str(self.package(version) / "bin" / args[0]), *args[1:]]
        done = subprocess.run(
            argv, user=self.user.pw_uid, group=self.user.pw_gid, capture_output=True, text=True, check=False, cwd="/",
            env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **(env or {})},
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def run_version(self, version: str, seed: str | None = None) -> None:
        """What GitLab `version` does to its database in service: its migrations, the users'
        work (`seed`), and Sidekiq running the background migrations the migrations queued."""
        self.gitlab(version, "gitlab-rake", "db:migrate")
        if seed:
            self.psql(seed)
        for job, table, column, args in self.rows(
            "SELECT job_class_name, table_name, column_name, job_arguments::text FROM batched_background_migrations"
            " WHERE status NOT IN (3, 6)"
        ):
            arguments = args.replace(",", "\\,")
            self.gitlab(
                version, "gitlab-rake", f"gitlab:background_migrations:finalize[{job},{table},{column},{arguments}]"
            )
        (self.state_dir / "VERSION").write_text(f"{version}.4\n")
        os.chown(self.state_dir / "VERSION", self.user.pw_uid, self.user.pw_gid)

    def psql(self, sql: str, db: str = DBNAME, user: str = "gitlab") -> str:
        return provision.run_as(
            self.user,
            [self.pg / "bin" / "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.sock,
             "-p", str(self.port), "-U", user, "-d", db],
            input=sql,
        )  # fmt: skip

    def rows(self, sql: str) -> list[list[str]]:
        return [line.split("|") for line in self.psql(sql).splitlines() if line]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        link = self.sock
        if link.is_symlink():
            shutil.rmtree(link.resolve(), ignore_errors=True)

    # -- what the tests compare -----------------------------------------------------------------

    def content(self) -> dict[str, str]:
        """Every table's rows (a digest per table), every schema object, the sequences, the
        files of the state dir (repositories, uploads, secrets, VERSION): read without the plugin."""
        out: dict[str, str] = {}
        tables = self.psql(
            "SELECT quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
        ).split()
        for table in tables:
            out[f"table {table}"] = self.psql(
                "SET timezone = 'UTC'; SET extra_float_digits = 0;"
                "SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-')"
                f" FROM {table} t"
            ).strip()
        out["objects"] = self.psql(
            "SELECT string_agg(c.relname || ':' || c.relkind::text, ' ' ORDER BY c.relname) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        ).strip()
        out["columns"] = self.psql(
            "SELECT string_agg(table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable, ', '"
            " ORDER BY table_name, ordinal_position) FROM information_schema.columns WHERE table_schema = 'public'"
        ).strip()
        out["functions"] = self.psql(
            "SELECT string_agg(p.proname || md5(p.prosrc), ' ' ORDER BY p.proname) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.prokind = 'f'"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
        ).strip()
        out["sequence"] = self.psql("SELECT last_value FROM shard_seq").strip()
        for path, digest in tree_entries(self.state_dir).items():
            if not path.startswith(("backup", "psql")) and ".standin-calls" not in path:
                out[f"file {path}"] = digest
        return out

    def calls(self) -> list[dict[str, Any]]:
        path = self.state_dir / ".standin-calls"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def make_gitlab(
    root: Path, version: str, rows: int = 20_000, pg_major: str = PG_MAJOR, versions: tuple[str, ...] = VERSIONS
) -> Gitlab:
    """GitLab's data as a real instance that ran every packaged version up to `version` has it."""
    gitlab = Gitlab(root / "gitlab", provision.server_user(), pg_major, versions).create()
    for index, step in enumerate(versions[: versions.index(version) + 1]):
        gitlab.run_version(step, corpus_sql(rows) if index == 0 else None)
    return gitlab


def settings(gitlab: Gitlab, versions: tuple[str, ...] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "state_dir": str(gitlab.state_dir),
        "database": {"host": str(gitlab.sock), "port": gitlab.port, "dbname": DBNAME, "user": "gitlab"},
        "packages": {v: str(gitlab.package(v)) for v in versions or gitlab.versions},
        "psql": str(gitlab.pg / "bin" / "psql"),
        **extra,
    }


class Rig:
    """A GitLab with a manifest (service `gitlab`) and the CLI bound to it."""

    def __init__(self, root: Path, gitlab: Gitlab, **extra: Any) -> None:
        self.gitlab = gitlab
        self.builder = ManifestBuilder(root)
        self.extra = extra

    def cli(self, target: str, *args: str, env: dict[str, str] | None = None, **spec: Any) -> CliResult:
        self.builder.service(
            "gitlab",
            plugin="gitlab",
            target=target,
            user=self.gitlab.user.pw_name,
            settings=settings(self.gitlab, **self.extra),
            **spec,
        )
        return run_cli(self.builder.write(), *args, env=env, timeout=600)
