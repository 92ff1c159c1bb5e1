"""Real JupyterHub releases for the jupyterhub plugin's tests, a database written by the hub's own
code, its digest read independently of the plugin, and manifests.

`package(series)` is a venv of that release from PyPI (4.1.6, 5.5.4, 6.1.1), made once per
machine under the server cache with a Python the server user may run. `make_database` creates a
hub database with the release's own ORM (`jupyterhub.orm`: the schema and the alembic stamp its
`new_session_factory` writes) holding users with unicode names, admins, auth state, groups with
properties, custom roles bound to users and groups, API tokens with scopes and expiries, named
servers with state and user options, a service; then the real hub of that release starts on it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nixos_migrate.testing import provision
from nixos_migrate.testing.manifests import ServiceRig

RELEASES = {"4.1": "4.1.6", "5.5": "5.5.4", "6.1": "6.1.1"}
ALL = tuple(RELEASES)
REPO = Path(__file__).resolve().parents[3]

#: the columns every release has, per table: what the digest compares across versions
COLUMNS = {
    "users": ("id", "name", "admin", "created", "last_activity", "cookie_id", "state", "encrypted_auth_state"),
    "groups": ("id", "name", "properties"),
    "user_group_map": ("user_id", "group_id"),
    "roles": ("id", "name", "description", "scopes"),
    "user_role_map": ("user_id", "role_id"),
    "group_role_map": ("group_id", "role_id"),
    "api_tokens": ("id", "hashed", "prefix", "user_id", "created", "expires_at", "note", "scopes"),
    "spawners": ("id", "user_id", "server_id", "state", "name", "started", "last_activity", "user_options"),
    "servers": ("id", "proto", "ip", "port", "base_url"),
    "services": ("id", "name", "admin"),
}

BUILD = """\
import datetime, sys
from jupyterhub import orm
db = orm.new_session_factory(sys.argv[1])()
n = int(sys.argv[2])
names = [f"user{i}" for i in range(n)] + ["jörg", "名前", "o'brien", "a-b.c_d"]
users = []
for i, name in enumerate(names):
    u = orm.User(name=name, admin=i % 50 == 0, state={"i": i},
                 created=datetime.datetime(2024, 1, 1) + datetime.timedelta(minutes=i))
    db.add(u)
    users.append(u)
db.commit()
groups = []
for g in range(20):
    group = orm.Group(name=f"group-{g}", properties={"course": f"C{g}", "ünï": [g, None]})
    group.users = users[g::20]
    db.add(group)
    groups.append(group)
teacher = orm.Role(name="teacher", description="grades", scopes=["admin:users", "read:groups"])
teacher.users = users[:5]
teacher.groups = groups[:2]
db.add(teacher)
db.add(orm.Service(name="announce"))
db.add(orm.OAuthClient(identifier="jupyterhub", description="JupyterHub", redirect_uri="/hub/oauth_callback"))
db.commit()
for i, u in enumerate(users[: n * 2 // 3]):
    token = u.new_api_token(note=f"token {i}", expires_in=86400 * 365 if i % 2 else None)
    if i % 3 == 0:
        for name in ("lab", "gpü"):
            sp = orm.Spawner(user=u, name=name, state={"pid": 0, "n": i}, user_options={"image": "x" * 50})
            db.add(sp)
            if i % 9 == 0:
                server = orm.Server(ip="127.0.0.1", port=20000 + i, base_url=f"/user/{u.name}/{name}/")
                db.add(server)
                sp.server = server
db.commit()
"""


def package(series: str) -> Path:
    """A venv of JupyterHub `series` from PyPI, under the server cache."""
    release = RELEASES[series]
    root = provision.cache_dir() / "jupyterhub" / release
    marker = root / ".complete-3"  # 3: with psycopg, the driver of a hub on PostgreSQL (SQLAlchemy 2.1)
    with provision.cache_lock(f"jupyterhub-{release}"):
        if not provision.is_complete(marker):
            shutil.rmtree(root, ignore_errors=True)
            python = str(provision.shared_python())
            uv = REPO / ".tools" / "bin" / "uv"
            env = os.environ | {"UV_PYTHON_DOWNLOADS": "never"}
            if uv.is_file():
                subprocess.run([str(uv), "venv", "-q", "--python", python, str(root)], check=True, env=env)
                subprocess.run([str(uv), "pip", "install", "-q", "--python", str(root / "bin" / "python"),
                                f"jupyterhub=={release}", "psycopg[binary]"], check=True, env=env)  # fmt: skip
            else:
                subprocess.run([python, "-m", "venv", str(root)], check=True)
                pip = [str(root / "bin" / "pip"), "install", "-q"]
                subprocess.run([*pip, f"jupyterhub=={release}", "psycopg[binary]"], check=True)
            marker.touch()
    return provision.traversable(root)


@dataclass
class Instance:
    """A hub's state directory under `root` owned by an unprivileged user, as NixOS's
    services.jupyterhub keeps it (/var/lib/jupyterhub)."""

    root: Path
    user: pwd.struct_passwd = field(default_factory=provision.server_user)

    @property
    def data_dir(self) -> Path:
        return self.root / "state"

    @property
    def database(self) -> Path:
        return self.data_dir / "jupyterhub.sqlite"

    def create(self) -> Instance:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "jupyterhub_cookie_secret").write_text(os.urandom(32).hex())
        (self.data_dir / "jupyterhub_cookie_secret").chmod(0o600)
        provision.traversable(self.root)
        provision.chown_tree(self.root, self.user)
        os.chmod(self.data_dir, 0o700)
        return self

    def settings(self, versions: tuple[str, ...] = ALL, **extra: object) -> dict[str, object]:
        return {"data_dir": str(self.data_dir), "packages": {v: str(package(v)) for v in versions}} | extra


def make_database(root: Path, series: str, *, users: int = 300) -> Instance:
    instance = Instance(root / "jupyterhub").create()
    python = package(series) / "bin" / "python"
    provision.run_as(instance.user, [python, "-c", BUILD, f"sqlite:///{instance.database}", str(users)])
    return instance


def digest(instance: Instance) -> dict[str, Any]:
    """Per table: the rows of the columns every release has, hashed in id order."""
    found: dict[str, Any] = {}
    with sqlite3.connect(f"{instance.database.as_uri()}?mode=ro", uri=True) as db:
        for table, columns in COLUMNS.items():
            rows = db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            found[table] = (len(rows), hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest())
    return found


def revision(instance: Instance) -> str:
    with sqlite3.connect(f"{instance.database.as_uri()}?mode=ro", uri=True) as db:
        return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])


class Rig(ServiceRig):
    """A hub's state with a manifest (service `hub`) and the CLI bound to it."""

    plugin = "jupyterhub"
    service_name = "hub"

    versions = ALL


PG_MAJOR = "16"
PG_PASSWORD = "s3cret-hub-pässword"


@dataclass
class PgInstance(Instance):
    """A hub whose database is on PostgreSQL (a real 16 from the wheels the postgresql plugin's
    tests use), as `c.JupyterHub.db_url = "postgresql://hub@/jupyterhub?host=…"`: a role `hub`
    with a password (scram-sha-256 on the socket) and CREATEDB, owning database `jupyterhub`."""

    server: provision.Server | None = None
    port: int = field(default_factory=provision.free_port)

    @property
    def sock(self) -> Path:
        return self.root / "pgsock"

    @property
    def url(self) -> str:
        return f"postgresql://hub@/jupyterhub?host={self.sock}&port={self.port}"

    @property
    def password_file(self) -> Path:
        return self.root / "db-password"

    def start_postgres(self) -> PgInstance:
        from nixos_migrate_postgresql import scratch
        from nixos_migrate_postgresql.testing import postgresql

        prefix = postgresql(PG_MAJOR)
        data = self.root / "pgdata"
        for path in (data, self.sock):
            path.mkdir(parents=True)
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        provision.run_as(self.user, scratch.initdb_argv(prefix, data, PG_MAJOR))
        (data / "pg_hba.conf").write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        self.server = scratch.server(prefix, data, self.sock, self.port, self.user, log=self.root / "pg.log")
        self.server.start(lambda: scratch.accepts(prefix, self.sock, self.port))
        self.psql(f"CREATE ROLE hub LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'")
        self.psql("CREATE DATABASE jupyterhub OWNER hub")
        self.password_file.write_text(PG_PASSWORD + "\n")
        self.password_file.chmod(0o600)
        return self

    def psql(self, sql: str, db: str = "postgres", user: str = "postgres") -> str:
        from nixos_migrate_postgresql.testing import postgresql

        psql = postgresql(PG_MAJOR) / "bin" / "psql"
        argv: list[str | Path] = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p", str(self.port),
                                  "-U", user, "-d", db]  # fmt: skip
        return provision.run_as(self.user, [*argv, "-c", sql])

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def settings(self, versions: tuple[str, ...] = ALL, **extra: object) -> dict[str, object]:
        from nixos_migrate_postgresql.testing import postgresql

        database = {"db_url": self.url, "db_password_file": str(self.password_file),
                    "pg_bin": str(postgresql(PG_MAJOR) / "bin")}  # fmt: skip
        return super().settings(versions, **(database | extra))


def make_pg_database(root: Path, series: str, *, users: int = 300) -> PgInstance:
    instance = PgInstance(root / "jupyterhub")
    instance.create()
    instance.start_postgres()
    python = package(series) / "bin" / "python"
    provision.run_as(instance.user, ["env", f"PGPASSWORD={PG_PASSWORD}", python, "-c", BUILD, instance.url, str(users)])
    return instance


def pg_digest(instance: PgInstance) -> dict[str, Any]:
    """As `digest`, read from PostgreSQL with psycopg (values as PostgreSQL types)."""
    import psycopg

    found: dict[str, Any] = {}
    conninfo = f"host={instance.sock} port={instance.port} dbname=jupyterhub user=postgres"
    with psycopg.connect(conninfo) as db:
        for table, columns in COLUMNS.items():
            rows = db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            found[table] = (len(rows), hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest())
        found["alembic_version"] = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return found
