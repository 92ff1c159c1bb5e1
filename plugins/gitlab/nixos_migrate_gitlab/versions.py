"""GitLab's versions and its required upgrade stops.

A version is `major.minor` (an upgrade goes to the latest patch of each stop; a package's patch
level does not change the path). The stops are GitLab's published list, `config/upgrade_path.yml`
of its own source tree: the target package's copy when it has one (it knows stops published
after this plugin was released), else the copy shipped with the plugin.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from nixos_migrate.errors import UsageError

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$")
#: the oldest major.minor GitLab's own list starts from
OLDEST = (8, 11)
#: GitLab major -> the oldest PostgreSQL major it runs on (its installation requirements)
MIN_POSTGRES = {13: 11, 14: 12, 15: 12, 16: 13, 17: 14, 18: 16}


@dataclass(frozen=True)
class Stop:
    version: tuple[int, int]
    comment: str = ""

    @property
    def conditional(self) -> bool:
        """GitLab marks some stops as needed by some instances only ("Conditional stop")."""
        return "conditional stop" in self.comment.lower()

    @property
    def label(self) -> str:
        return label(self.version)


def key(version: str) -> tuple[int, int]:
    """(major, minor) of "17.8", "17.8.3" or "17.8.3-ee"; a UsageError names anything else."""
    found = _VERSION.match(version.strip())
    if not found:
        raise UsageError(f"{version!r} is not a GitLab version (like '17.8' or '17.8.3')")
    return int(found.group(1)), int(found.group(2))


def label(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def series(version: str) -> str:
    """The major.minor of a version, as steps and package keys name it."""
    return label(key(version))


def parse_stops(text: str, source: str) -> list[Stop]:
    import yaml  # only plan reads the list

    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{source} is not YAML: {exc}") from None
    if not isinstance(entries, list):
        raise UsageError(f"{source}: expected a list of stops (major, minor)")
    stops = []
    for entry in entries:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("major"), int)
            or not isinstance(entry.get("minor"), int)
        ):
            raise UsageError(f"{source}: a stop without integer major and minor: {entry!r}")
        stops.append(Stop((entry["major"], entry["minor"]), str(entry.get("comments") or "")))
    return sorted(stops, key=lambda s: s.version)


@functools.cache
def bundled_stops() -> list[Stop]:
    from importlib import resources

    text = resources.files("nixos_migrate_gitlab").joinpath("upgrade_path.yml").read_text()
    return parse_stops(text, "the plugin's upgrade_path.yml")


def stops_for(package_tree: Path | None) -> tuple[list[Stop], str]:
    """The stops, and where they come from: the package's own list when it has one."""
    if package_tree is not None:
        own = package_tree / "config" / "upgrade_path.yml"
        if own.is_file():
            return parse_stops(own.read_text(), str(own)), str(own)
    return bundled_stops(), "the list shipped with nixos-migrate-gitlab"


def path(current: str, target: str, stops: list[Stop]) -> list[tuple[str, str, Stop | None]]:
    """The hops from `current` up to `target`: through every stop strictly between them, then to
    the target; each hop with the stop it lands on (None for a target that is no stop)."""
    low, high = key(current), key(target)
    if high <= low:
        return []
    by_version = {s.version: s for s in stops}
    landing = [s for s in stops if low < s.version < high]
    hops: list[tuple[str, str, Stop | None]] = []
    previous = label(low)
    for stop in landing:
        hops.append((previous, stop.label, stop))
        previous = stop.label
    hops.append((previous, label(high), by_version.get(high)))
    return hops


def min_postgres(version: str) -> int | None:
    """The oldest PostgreSQL major GitLab `version` runs on (None: older than the table knows)."""
    major = key(version)[0]
    known = [m for m in MIN_POSTGRES if m <= major]
    return MIN_POSTGRES[max(known)] if known else None
