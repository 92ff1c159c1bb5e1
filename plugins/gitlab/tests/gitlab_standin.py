"""A stand-in for GitLab's commands, for the gitlab plugin's tests (no GitLab exists here).

One program plays `gitlab-rake`, `gitlab-backup` and `gitlab-rails` of one packaged version;
each fake package's bin/ has wrappers that call it with the package's config (gitlab_env.py
builds them). It acts on a real PostgreSQL through psql and pg_dump, the way GitLab's own
commands change the database:

- `gitlab-rake db:migrate` applies the package's migrations not yet in `schema_migrations`
  (db/migrate, then db/post_migrate unless SKIP_POST_DEPLOYMENT_MIGRATIONS), each in one
  transaction with its row; a migration marked `-- requires-finished: Job` fails as GitLab's
  `ensure_batched_background_migration_is_finished` does; `-- queue: Job table column args`
  queues a batched background migration (status active);
- `gitlab-rake gitlab:background_migrations:finalize[Job,table,column,args]` runs the job's
  SQL (lib/background_migrations/Job.sql) and marks it finalized;
- `gitlab-rake db:migrate:status` prints Rails' status table;
- `gitlab-backup create|restore` (and `gitlab-rake gitlab:backup:create|restore`) write and
  read `<BACKUP>_gitlab_backup.tar` in the backup path: backup_information.yml with the
  version, the database as pg_dump's custom format, repositories and uploads as tars; SKIP
  leaves parts out; a restore refuses an archive of another version, as GitLab does;
- `gitlab-rails runner 'puts Gitlab::BackgroundMigration.remaining'` prints the count in the
  state dir's `.standin-legacy-remaining` (Sidekiq's queue of legacy background migrations).

Every call is appended to `<state_dir>/.standin-calls` (argv and the variables that matter).
Only the standard library: it runs as the service user, with the system's python3.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ENV_RECORDED = ("SKIP_POST_DEPLOYMENT_MIGRATIONS", "BACKUP", "SKIP", "force", "GITLAB_ASSUME_YES", "RAILS_ENV")


class Standin:
    def __init__(self, config: dict[str, object]) -> None:
        self.config = config
        self.tree = Path(str(config["tree"]))
        self.state_dir = Path(str(config["state_dir"]))
        self.backup_path = Path(str(config["backup_path"]))
        self.pg = Path(str(config["pg_prefix"]))
        db = config["db"]
        assert isinstance(db, dict)
        self.env = {
            **os.environ,
            "PGHOST": str(db["host"]),
            "PGPORT": str(db["port"]),
            "PGDATABASE": str(db["dbname"]),
            "PGUSER": str(db["user"]),
        }
        self.release = (self.tree / "VERSION").read_text().strip()

    # -- the database ---------------------------------------------------------------------

    def psql(self, sql: str) -> str:
        done = subprocess.run(
            [str(self.pg / "bin" / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-1"],
            input=sql, capture_output=True, text=True, env=self.env, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"rake aborted!\n{done.stderr.strip()}")
        return done.stdout

    def bootstrap(self) -> None:
        self.psql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version varchar PRIMARY KEY, finished_at text);"
            "CREATE TABLE IF NOT EXISTS batched_background_migrations (id bigserial PRIMARY KEY,"
            " job_class_name text NOT NULL, table_name text NOT NULL, column_name text NOT NULL,"
            " job_arguments jsonb NOT NULL DEFAULT '[]', status smallint NOT NULL DEFAULT 1,"
            " created_at timestamptz NOT NULL DEFAULT '2024-01-01')"
        )

    def applied(self) -> set[str]:
        return set(self.psql("SELECT version FROM schema_migrations").split())

    def migrations(self, post: bool) -> list[Path]:
        dirs = ["migrate", "post_migrate"] if post else ["migrate"]
        found = [p for d in dirs for p in (self.tree / "db" / d).glob("*.sql")]
        return sorted(found, key=lambda p: p.name.split("_", 1)[0])

    def migrate(self) -> None:
        self.bootstrap()
        done = self.applied()
        post = os.environ.get("SKIP_POST_DEPLOYMENT_MIGRATIONS", "").lower() not in ("true", "1")
        for path in self.migrations(post):
            version = path.name.split("_", 1)[0]
            if version in done:
                continue
            sql = path.read_text()
            for job in re.findall(r"^-- requires-finished: (\S+)$", sql, re.M):
                status = self.psql(f"SELECT status FROM batched_background_migrations WHERE job_class_name = '{job}'")
                if status.strip() not in ("3", "6"):
                    state = {"0": "paused", "1": "active", "4": "failed", "5": "finalizing"}.get(
                        status.strip(), "absent"
                    )
                    raise SystemExit(
                        "StandardError: An error has occurred, this and all later migrations canceled:\n"
                        "Expected batched background migration for the given configuration to be marked as "
                        f"'finished', but it is '{state}': {{:job_class_name=>\"{job}\"}}"
                    )
            queued = "".join(
                "INSERT INTO batched_background_migrations (job_class_name, table_name, column_name, job_arguments)"
                f" VALUES ('{job}', '{table}', '{column}', '{arguments}');"
                for job, table, column, arguments in re.findall(r"^-- queue: (\S+) (\S+) (\S+) (.+)$", sql, re.M)
            )
            print(f"== {version} {path.stem.split('_', 1)[1]}: migrating")
            self.psql(sql + ";" + queued + f"INSERT INTO schema_migrations VALUES ('{version}', 'by {self.release}');")

    def status(self) -> None:
        done = self.applied()
        print(f"\ndatabase: {self.env['PGDATABASE']}\n\n Status   Migration ID    Migration Name")
        print("-" * 50)
        for path in self.migrations(post=True):
            version, name = path.stem.split("_", 1)
            print(f"   {'up' if version in done else 'down'}     {version}  {name.replace('_', ' ').title()}")

    def finalize(self, arguments: str) -> None:
        parts = [p.replace("\\,", ",") for p in re.split(r"(?<!\\),", arguments, maxsplit=3)]
        job, table, column, args = parts
        row = self.psql(
            "SELECT id FROM batched_background_migrations WHERE job_class_name = "
            f"'{job}' AND table_name = '{table}' AND column_name = '{column}' AND job_arguments = '{args}'::jsonb"
        ).split()
        if not row:
            raise SystemExit(f"Could not find batched background migration for {job} {table} {column} {args}")
        work = (self.tree / "lib" / "background_migrations" / f"{job}.sql").read_text()
        self.psql(work + f";UPDATE batched_background_migrations SET status = 6 WHERE id = {row[0]}")
        print(f"Done finalizing {job}")

    # -- backups --------------------------------------------------------------------------

    def parts(self) -> list[str]:
        skip = set(filter(None, os.environ.get("SKIP", "").split(",")))
        return [p for p in ("db", "repositories", "uploads") if p not in skip]

    def create(self) -> None:
        name = os.environ.get("BACKUP") or "standin"
        archive = self.backup_path / f"{name}_gitlab_backup.tar"
        with tempfile.TemporaryDirectory(dir=self.backup_path) as tmp:
            work = Path(tmp)
            parts = self.parts()
            (work / "backup_information.yml").write_text(
                f":gitlab_version: {self.release}\n:skipped: {os.environ.get('SKIP', '')}\n"
            )
            if "db" in parts:
                (work / "db").mkdir()
                dump = subprocess.run(
                    [str(self.pg / "bin" / "pg_dump"), "-Fc", "-f", str(work / "db" / "database.dump")],
                    capture_output=True, text=True, env=self.env, check=False,
                )  # fmt: skip
                if dump.returncode != 0:
                    raise SystemExit(f"Dumping database failed: {dump.stderr}")
            for part in ("repositories", "uploads"):
                source = self.state_dir / part
                if part in parts and source.is_dir():
                    with tarfile.open(work / f"{part}.tar", "w") as tar:
                        tar.add(source, arcname=".")
            with tarfile.open(archive, "w") as tar:
                tar.add(work, arcname=".")
        print(f"Backup {name} is done.")

    def restore(self) -> None:
        # gitlab-backup's own lower-case switch
        if os.environ.get("force") != "yes" and os.environ.get("GITLAB_ASSUME_YES") != "1":  # noqa: SIM112
            raise SystemExit("Do you want to continue (yes/no)? aborted: no terminal")
        name = os.environ.get("BACKUP") or "standin"
        archive = self.backup_path / f"{name}_gitlab_backup.tar"
        if not archive.is_file():
            raise SystemExit(f"The backup file {archive} does not exist!")
        with tempfile.TemporaryDirectory(dir=self.backup_path) as tmp:
            work = Path(tmp)
            _extract(archive, work)
            info = (work / "backup_information.yml").read_text()
            made_by = re.search(r":gitlab_version: (\S+)", info)
            if made_by is None or made_by.group(1) != self.release:
                raise SystemExit(
                    f"GitLab version mismatch: Your current GitLab version ({self.release}) differs from the "
                    f"GitLab version in the backup ({made_by.group(1) if made_by else '?'})!"
                )
            if (work / "db" / "database.dump").is_file():
                self.psql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                load = subprocess.run(
                    [str(self.pg / "bin" / "pg_restore"), "--no-owner", "-1", "-d", self.env["PGDATABASE"],
                     str(work / "db" / "database.dump")],
                    capture_output=True, text=True, env=self.env, check=False,
                )  # fmt: skip
                if load.returncode != 0:
                    raise SystemExit(f"Restoring database failed: {load.stderr}")
            for part in ("repositories", "uploads"):
                packed = work / f"{part}.tar"
                if packed.is_file():
                    target = self.state_dir / part
                    shutil.rmtree(target, ignore_errors=True)
                    target.mkdir()
                    _extract(packed, target)
        print(f"Restore of {name} is done.")


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(dest, filter="tar")
        except TypeError:  # a Python from before extraction filters: the archive is our own
            tar.extractall(dest)


def main(argv: list[str]) -> None:
    config = json.loads(Path(argv[1]).read_text())
    tool, args = argv[2], argv[3:]
    standin = Standin(config)
    with (standin.state_dir / ".standin-calls").open("a") as calls:
        recorded = {k: os.environ[k] for k in ENV_RECORDED if k in os.environ}
        calls.write(json.dumps({"version": config["version"], "argv": [tool, *args], "env": recorded}) + "\n")
    if tool == "gitlab-backup" and args[:1] in (["create"], ["restore"]):
        standin.create() if args[0] == "create" else standin.restore()
    elif tool == "gitlab-rails" and args[:1] == ["runner"]:
        remaining = standin.state_dir / ".standin-legacy-remaining"
        print(remaining.read_text().strip() if remaining.is_file() else "0")
    elif tool == "gitlab-rake" and args == ["db:migrate"]:
        standin.migrate()
    elif tool == "gitlab-rake" and args == ["db:migrate:status"]:
        standin.status()
    elif tool == "gitlab-rake" and args[:1] in (["gitlab:backup:create"], ["gitlab:backup:restore"]):
        standin.create() if args[0].endswith("create") else standin.restore()
    elif tool == "gitlab-rake" and len(args) == 1 and args[0].startswith("gitlab:background_migrations:finalize["):
        standin.finalize(args[0][len("gitlab:background_migrations:finalize[") : -1])
    else:
        raise SystemExit(f"the stand-in does not know {tool} {' '.join(args)}")


if __name__ == "__main__":
    main(sys.argv)
