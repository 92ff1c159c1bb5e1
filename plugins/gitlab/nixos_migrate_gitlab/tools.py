"""GitLab's own commands, per version: `gitlab-rake` (migrations, background migrations, their
status), `gitlab-backup` (or its rake tasks where a package has no such command, as nixpkgs'),
`gitlab-rails runner`; and what a package's Rails tree tells (VERSION, its schema migrations)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.errors import MigrateError, UsageError
from nixos_migrate.runner import Completed
from nixos_migrate_gitlab import versions
from nixos_migrate_gitlab.settings import GitlabSettings

#: what every GitLab command runs with: the production environment, and no prompt
BASE_ENV = {"RAILS_ENV": "production", "GITLAB_ASSUME_YES": "1"}


def packages(s: GitlabSettings) -> dict[str, Path]:
    """settings.packages by major.minor ("17.8.3" and "17.8" name the same stop)."""
    return {versions.series(k): v for k, v in s.packages.items()}


def prefix(s: GitlabSettings, version: str) -> Path:
    found = packages(s).get(versions.series(version))
    if found is None:
        have = ", ".join(sorted(packages(s))) or "none"
        raise UsageError(
            f"no GitLab package for {versions.series(version)} in settings.packages (have {have})",
            hint=f'add settings.packages."{versions.series(version)}"',
        )
    return found


def tree(root: Path) -> Path | None:
    """The package's Rails tree (nixpkgs: share/gitlab), if it has one."""
    for candidate in (root / "share" / "gitlab", root):
        if (candidate / "VERSION").is_file():
            return candidate
    return None


def tool(root: Path, name: str) -> Path:
    path = root / "bin" / name
    if not path.is_file():
        raise MigrateError(
            f"{path} does not exist", hint="settings.packages must name GitLab packages with bin/gitlab-rake"
        )
    return path


def has_tool(root: Path, name: str) -> bool:
    return (root / "bin" / name).is_file()


def package_release(root: Path) -> str | None:
    found = tree(root)
    return (found / "VERSION").read_text().strip() if found else None


def package_migrations(root: Path) -> set[str] | None:
    """The schema migrations the package's code expects applied (db/schema_migrations/ holds one
    file per migration, named by its version); None: the package does not list them."""
    found = tree(root)
    listing = found / "db" / "schema_migrations" if found else None
    if listing is None or not listing.is_dir():
        return None
    return {p.name for p in listing.iterdir() if p.name.isdigit()}


def rake(
    service: Service, root: Path, *tasks: str, env: Mapping[str, str] | None = None, timeout: float | None = None
) -> Completed:
    return service.run.run([tool(root, "gitlab-rake"), *tasks], env={**BASE_ENV, **(env or {})}, timeout=timeout)


def backup_command(root: Path, action: str) -> list[str | Path]:
    """`gitlab-backup create|restore`, or the rake task where the package has no such command."""
    if has_tool(root, "gitlab-backup"):
        return [root / "bin" / "gitlab-backup", action]
    return [tool(root, "gitlab-rake"), f"gitlab:backup:{action}"]
