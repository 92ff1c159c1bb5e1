"""GitLab's database as the plugin reads it: applied schema migrations, batched background
migrations, the PostgreSQL major.

Queries go through `psql` run as the service's user (peer authentication on the local socket
lets that user in as it lets GitLab in; nixos-migrate itself runs as root, whom GitLab's
database does not know). The password, when there is one, travels in the environment only.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import CommandFailed, MigrateError
from nixos_migrate_gitlab.settings import GitlabSettings

#: batched_background_migrations.status (GitLab's BatchedMigration state machine)
STATUS = {0: "paused", 1: "active", 3: "finished", 4: "failed", 5: "finalizing", 6: "finalized"}
DONE = (3, 6)
FAILED = 4


@dataclass(frozen=True)
class Batched:
    id: int
    job_class_name: str
    table_name: str
    column_name: str
    job_arguments: str
    status: int

    @property
    def state(self) -> str:
        return STATUS.get(self.status, f"status {self.status}")

    def describe(self) -> str:
        return f"{self.job_class_name} on {self.table_name}.{self.column_name} {self.job_arguments} ({self.state})"

    def finalize_task(self) -> str:
        """The rake task that runs it to its end in the foreground; rake splits its arguments
        on commas, so those of the JSON arguments are escaped."""
        arguments = self.job_arguments.replace(",", "\\,")
        return finalize_task(self.job_class_name, self.table_name, self.column_name, arguments)


def finalize_task(job: str, table: str, column: str, escaped_arguments: str) -> str:
    return f"gitlab:background_migrations:finalize[{job},{table},{column},{escaped_arguments}]"


def settings_of(service: Service) -> GitlabSettings:
    settings = service.settings
    if not isinstance(settings, GitlabSettings):
        raise MigrateError("the gitlab plugin got settings it did not validate")
    return settings


def psql_binary(s: GitlabSettings) -> Path:
    if s.psql is not None:
        if not s.psql.is_file():
            raise MigrateError(f"settings.psql: {s.psql} does not exist")
        return s.psql
    found = shutil.which("psql")
    if found is None:
        raise MigrateError("no psql on PATH for GitLab's database", hint="set settings.psql")
    return Path(found)


def environment(s: GitlabSettings) -> dict[str, str]:
    """libpq's variables for GitLab's database (GitLab's own tools read database.yml)."""
    db = s.database
    env = {
        "PGHOST": db.host,
        "PGPORT": str(db.port),
        "PGDATABASE": db.dbname,
        "PGUSER": db.user,
        "PGCONNECT_TIMEOUT": "15",
    }
    if db.password_file is not None:
        env["PGPASSWORD"] = db.password_file.read_text().rstrip("\n")
    return env


def query(service: Service, sql: str) -> list[list[str]]:
    """Rows of `sql` as text (NULL as the empty string)."""
    s = settings_of(service)
    # the rows go to a file of their own: what the runner returns has psql's notices mixed in
    scratch = service.private_dir(service.state_dir / "psql")
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".csv") as out:
        os.chown(out.name, service.run.identity.uid, service.run.identity.gid)
        argv: list[str | Path] = [psql_binary(s), "-X", "-q", "--csv", "-t", "-v", "ON_ERROR_STOP=1", "-o", out.name]
        try:
            service.run.run(argv, env=environment(s), input=sql.encode())
        except CommandFailed as exc:
            db = s.database
            raise MigrateError(
                f"GitLab's database {db.dbname} on {db.host}:{db.port} as {db.user}: {exc.message}",
                hint="settings.database names the database GitLab uses; its PostgreSQL must run",
            ) from None
        text = Path(out.name).read_text()
    return [row for row in csv.reader(io.StringIO(text)) if row]


def has_schema(service: Service) -> bool:
    rows = query(service, "SELECT to_regclass('schema_migrations') IS NOT NULL")
    return bool(rows) and rows[0][0] == "t"


def applied(service: Service) -> set[str]:
    return {row[0] for row in query(service, "SELECT version FROM schema_migrations")}


def batched(service: Service) -> list[Batched]:
    """Every batched background migration (none before GitLab 14.0, which made the table)."""
    if query(service, "SELECT to_regclass('batched_background_migrations') IS NULL")[0][0] == "t":
        return []
    rows = query(
        service,
        "SELECT id, job_class_name, table_name, column_name, job_arguments::text, status"
        " FROM batched_background_migrations ORDER BY id",
    )
    return [Batched(int(r[0]), r[1], r[2], r[3], r[4], int(r[5])) for r in rows]


def unfinished(service: Service) -> list[Batched]:
    return [b for b in batched(service) if b.status not in DONE]


def postgres_major(service: Service) -> int:
    return int(query(service, "SHOW server_version_num")[0][0]) // 10000


def size(service: Service) -> int:
    return int(query(service, "SELECT pg_database_size(current_database())")[0][0])
