"""JupyterHub's releases and the alembic revision each one's schema is at.

A hub refuses to start on a database at another revision ("Found database schema version …");
`jupyterhub upgrade-db` of the newer release runs its alembic migrations, whose `downgrade()`
functions reverse them with the newer release's scripts.
"""

from __future__ import annotations

from nixos_migrate.appschema import Releases

#: series -> the head revision of its alembic scripts (checked against the releases' own files
#: by the tests: 4.1.6, 5.5.4, 6.1.1)
RELEASES = Releases("JupyterHub", {"4.1": "0eee8c825d24", "5.5": "4621fec11365", "6.1": "f460b0348206"})

#: the hub's tables whose rows the fingerprint compares (those a release lacks are left out)
TABLES = (
    "users", "groups", "user_group_map", "roles", "user_role_map", "group_role_map", "service_role_map",
    "api_tokens", "oauth_clients", "oauth_codes", "services", "servers", "spawners", "shares", "share_codes",
)  # fmt: skip


def series(release: str) -> str:
    """`5.5.4` -> `5.5`."""
    return ".".join(release.split(".")[:2])
