"""The checks a step ran on its new data before it ended, kept for the verify that follows it.

A plugin whose step already starts the new version and checks the data as verify would (a
server that loaded it, content compared with the fingerprint) records those checks; verify then
reports the record instead of starting the server once more, as long as nothing ran on the data
since: the record holds a stamp (size, mtime, inode) of the files every start and stop of the
server writes, and any difference means something ran, so verify checks again. A record is used
once, and only within a step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nixos_migrate.context import Service
from nixos_migrate.model import Check

RECORD = "checked.json"


def stamp(paths: Sequence[Path]) -> dict[str, list[int]]:
    found = {}
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        found[str(path)] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return found


def keep(service: Service, paths: Sequence[Path], version: str, checks: Sequence[Check]) -> None:
    payload = {
        "version": version,
        "stamp": stamp(paths),
        "checks": [[c.name, c.ok, c.detail] for c in checks],
    }
    (service.state_dir / RECORD).write_text(json.dumps(payload))


def take(service: Service, paths: Sequence[Path], version: str) -> list[Check] | None:
    """The recorded checks when they still describe the data, else None; the record is gone after."""
    path = service.state_dir / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    path.unlink()
    if service.step is None or record["version"] != version or record["stamp"] != stamp(paths):
        return None
    checks = [Check(name, ok, detail) for name, ok, detail in record["checks"]]
    return [*checks, Check("checked before the step ended", True, "no server has run on the data since")]


def note(service: Service, name: str, paths: Sequence[Path], key: str, value: object) -> None:
    """`value` kept in the state file `name` for a later hook of the run (the fingerprint a check
    took, for the step's backup), valid for `key` while the files of `paths` keep their stamp."""
    payload = {"key": key, "stamp": stamp(paths), "value": value}
    (service.state_dir / name).write_text(json.dumps(payload))


def noted(service: Service, name: str, paths: Sequence[Path], key: str, *, keep: bool = False) -> Any:
    """The value `note` kept in `name` for `key` while the files still have its stamp, else None;
    the file is gone after unless `keep`."""
    path = service.state_dir / name
    if not path.is_file():
        return None
    found = json.loads(path.read_text())
    if not keep:
        path.unlink()
    if found["key"] != key or found["stamp"] != stamp(paths):
        return None
    return found["value"]


def discard(service: Service) -> None:
    (service.state_dir / RECORD).unlink(missing_ok=True)
