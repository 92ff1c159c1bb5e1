"""Settings of the `jupyterhub` plugin (`services.<name>.settings`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from nixos_migrate.manifest import AbsolutePath, VersionedSettings
from nixos_migrate_jupyterhub import versions


class JupyterhubSettings(VersionedSettings):
    """
    data_dir: the hub's working directory (NixOS: /var/lib/jupyterhub), where a relative sqlite
        URL and the cookie secret live.
    db_url: the hub's database (`c.JupyterHub.db_url`): `sqlite:///jupyterhub.sqlite` (relative
        to data_dir, the default), `sqlite:////abs/path`, or PostgreSQL:
        `postgresql://user@host:port/dbname` (`?host=/run/postgresql` for a unix socket), without
        its password. MySQL is refused by name.
    db_password_file: a file holding the PostgreSQL role's password (given to the hub, alembic
        and pg_dump through the environment, never in argv).
    pg_bin: a directory with pg_dump and pg_restore (NixOS: the PostgreSQL package's bin), for
        the backup of a PostgreSQL database.
    packages: release series ("5.5") -> a prefix or venv holding bin/jupyterhub (and the Python
        that runs it).
    cookie_secret: the cookie secret file (default data_dir/jupyterhub_cookie_secret), backed up
        and restored with the database.
    port: the loopback port of the private hub verify starts (default: a free one).
    """

    @staticmethod
    def version_key(version: str) -> object:
        return versions.RELEASES.key(version)

    data_dir: AbsolutePath
    db_url: str = Field(default="sqlite:///jupyterhub.sqlite", pattern=r"^[a-z0-9+]+://")
    db_password_file: AbsolutePath | None = None
    pg_bin: AbsolutePath | None = None
    packages: dict[str, AbsolutePath] = {}
    cookie_secret: AbsolutePath | None = None
    port: int | None = Field(default=None, ge=1024, le=65535)

    @property
    def is_postgres(self) -> bool:
        return self.db_url.partition("://")[0].split("+")[0] in {"postgresql", "postgres"}

    @property
    def database(self) -> Path:
        """The SQLite file of db_url."""
        scheme, _, rest = self.db_url.partition("://")
        if scheme != "sqlite":
            raise ValueError(f"db_url {scheme}://…: this plugin moves SQLite and PostgreSQL databases")
        path = Path(rest.removeprefix("/"))
        return path if path.is_absolute() else self.data_dir / path

    @property
    def secret(self) -> Path:
        return self.cookie_secret or self.data_dir / "jupyterhub_cookie_secret"
