"""Grafana's versions as this plugin names them: release series ("10.4"), ordered numerically.

Grafana has no schema version number: its database holds the ids of the migrations it ran
(`migration_log`). Which ids a release runs is read from that release's own package
(migrations.py), so any series a package is given for is known; no table of releases is kept here
to go stale with Grafana's next release.
"""

from __future__ import annotations

import re

from nixos_migrate.errors import UsageError

SERIES = re.compile(r"^(\d+)\.(\d+)$")


def key(series: str) -> tuple[int, int]:
    found = SERIES.match(series)
    if found is None:
        raise UsageError(f"Grafana version {series!r} is not a release series", hint='name series as "10.4"')
    return int(found.group(1)), int(found.group(2))


def series(release: str) -> str:
    """`10.4.19` (or `v10.4.19`, `10.4.19+security-01`) -> `10.4`."""
    return ".".join(release.removeprefix("v").split(".")[:2])
