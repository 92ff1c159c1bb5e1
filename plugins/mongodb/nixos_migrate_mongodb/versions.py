"""The majors the plugin knows and MongoDB's rules between them.

Upgrades go one major at a time (4.4 -> 5.0 -> 6.0 -> 7.0 -> 8.0): a mongod starts only on data
whose featureCompatibilityVersion (FCV) is its own major or the one before, so before each binary
swap the FCV must equal the old major, and after it the FCV is raised. From 7.0 on,
`setFeatureCompatibilityVersion` wants `confirm: true`, and Community builds have no binary
downgrade: below 7.0 a down step lowers the FCV and swaps back to the older binary; from 7.0 it
restores the backup taken before the matching up step.
"""

from __future__ import annotations

from nixos_migrate.errors import UsageError

MAJORS = ("4.4", "5.0", "6.0", "7.0", "8.0")
#: the first major whose setFeatureCompatibilityVersion wants `confirm: true` and whose
#: Community binaries cannot go back
CONFIRM_FROM = "7.0"


def key(version: str) -> int:
    """The position of a major; an unknown one is a usage error that names the catalogue."""
    try:
        return MAJORS.index(version)
    except ValueError:
        raise UsageError(
            f"unknown MongoDB version {version!r}", hint=f"the mongodb plugin knows {', '.join(MAJORS)}"
        ) from None


def major(release: str) -> str:
    """`7.0.14` -> `7.0` (a release outside the catalogue is refused by name)."""
    found = ".".join(release.split(".")[:2])
    key(found)
    return found


def between(current: str, target: str) -> list[str]:
    """Every major from `current` to `target`, both included, in the order of the hops."""
    a, b = key(current), key(target)
    step = 1 if b >= a else -1
    return [MAJORS[i] for i in range(a, b + step, step)]


def needs_confirm(version: str) -> bool:
    return key(version) >= key(CONFIRM_FROM)


def binary_downgrade(source: str) -> bool:
    """Whether the binary of `source` may be swapped back to the major before (below 7.0)."""
    return key(source) < key(CONFIRM_FROM)


def openable(binary: str, fcv: str) -> bool:
    """Whether mongod `binary` starts on data of FCV `fcv`."""
    return key(binary) - 1 <= key(fcv) <= key(binary)
