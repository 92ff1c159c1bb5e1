"""Settings of the `gitlab` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nixos_migrate.manifest import AbsolutePath, VersionedSettings
from nixos_migrate_gitlab import versions

#: what `gitlab-backup create` may leave out (its SKIP variable)
SKIPPABLE = {
    "db", "uploads", "builds", "artifacts", "lfs", "terraform_state", "registry", "pages",
    "repositories", "packages", "ci_secure_files", "external_diffs",
}  # fmt: skip


class Database(BaseModel):
    """How GitLab's PostgreSQL is reached. The plugin's queries run through `psql` as the
    service's user, so that the peer authentication of a local socket lets them in as it lets
    GitLab in."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    host: str = "/run/postgresql"
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = "gitlab"
    user: str = "gitlab"
    password_file: AbsolutePath | None = None


class GitlabSettings(VersionedSettings):
    """
    state_dir: GitLab's state directory (NixOS: services.gitlab.statePath, /var/gitlab/state):
        its VERSION file, config/ with the secrets, repositories/ and uploads.
    database: host (a socket directory or a host name), port, dbname, user, password_file of
        GitLab's PostgreSQL database (NixOS: services.gitlab.databaseHost/Name/User/PasswordFile).
    packages: GitLab version ("17.8") -> install prefix with bin/gitlab-rake (and
        bin/gitlab-backup, bin/gitlab-rails where the package has them) and the Rails tree in
        share/gitlab (VERSION, db/schema_migrations, config/upgrade_path.yml). One per stop on the
        way, and the current version's for backups and restores.
    psql: the psql the plugin's queries run with (default: the one on PATH; NixOS: the
        PostgreSQL package's).
    backup_path: where `gitlab-backup create` writes its archive (GitLab's backup.path; NixOS:
        services.gitlab.backup.path, default <state_dir>/backup); the plugin moves it into its own
        backup directory.
    backup_skip: what the GitLab backup leaves out (its SKIP list: db, uploads, builds,
        artifacts, lfs, registry, pages, repositories, packages, ...): for data backed up
        otherwise. A restore puts back only what the backup holds.
    secret_files: files the GitLab backup leaves out and a restore needs: secrets.yml,
        database.yml, gitlab.yml and the shell, workhorse and KAS secrets (default: those under
        <state_dir>/config and <state_dir>). Missing ones are skipped and named in the backup.
    background_timeout: seconds `up` waits for the batched background migrations a hop queued.
    initial_version: the version of data with neither a VERSION file nor a package whose
        migrations match the database, the first time nixos-migrate sees it.
    """

    @staticmethod
    def version_key(version: str) -> object:
        return versions.key(version)

    state_dir: AbsolutePath
    database: Database = Field(default_factory=Database)
    packages: dict[str, AbsolutePath] = {}
    psql: AbsolutePath | None = None
    backup_path: AbsolutePath | None = None
    backup_skip: list[str] = []
    secret_files: list[AbsolutePath] | None = None
    background_timeout: float = Field(default=6 * 3600, gt=0)
    initial_version: str | None = None

    @field_validator("backup_skip")
    @classmethod
    def _skip(cls, skip: list[str]) -> list[str]:
        unknown = sorted(set(skip) - SKIPPABLE)
        if unknown:
            raise ValueError(
                f"not something gitlab-backup can skip: {', '.join(unknown)} (it knows {sorted(SKIPPABLE)})"
            )
        return skip

    @property
    def archive_dir(self) -> Path:
        return self.backup_path or self.state_dir / "backup"

    @property
    def secrets(self) -> list[Path]:
        if self.secret_files is not None:
            return list(self.secret_files)
        config = self.state_dir / "config"
        return [
            config / "secrets.yml",
            config / "database.yml",
            config / "gitlab.yml",
            self.state_dir / ".gitlab_shell_secret",
            self.state_dir / ".gitlab_workhorse_secret",
            self.state_dir / ".gitlab_kas_secret",
        ]
