"""The checks a step ran on its new data before it ended, kept for the verify that follows it.

A step's last server start already runs what verify would (content.after_step); verify then
reports that record instead of starting the server once more, as long as no server ran on the
data since: the record holds a stamp of the files every start and stop writes (the redo log,
ibdata1's header, Aria's control file, the upgrade-info file), and any difference means a
server ran, so verify starts it and checks again. A record is used once.
"""

from __future__ import annotations

import json
from pathlib import Path

from nixos_migrate.context import Service
from nixos_migrate.model import Check

RECORD = "checked.json"
_STAMPED = ("ib_logfile0", "ibdata1", "aria_log_control", "mariadb_upgrade_info", "mysql_upgrade_info")


def stamp(data_dir: Path) -> dict[str, list[int]]:
    found = {}
    for name in _STAMPED:
        try:
            st = (data_dir / name).stat()
        except FileNotFoundError:
            continue
        found[name] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return found


def keep(service: Service, data_dir: Path, version: str, checks: list[Check]) -> None:
    payload = {
        "version": version,
        "stamp": stamp(data_dir),
        "checks": [[c.name, c.ok, c.detail] for c in checks],
    }
    (service.state_dir / RECORD).write_text(json.dumps(payload))


def take(service: Service, data_dir: Path, version: str) -> list[Check] | None:
    """The recorded checks when they still describe the data, else None; the record is gone after."""
    path = service.state_dir / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    path.unlink()
    if service.step is None or record["version"] != version or record["stamp"] != stamp(data_dir):
        return None
    checks = [Check(name, ok, detail) for name, ok, detail in record["checks"]]
    return [*checks, Check("checked before the step ended", True, "no server has run on the data since")]


def discard(service: Service) -> None:
    (service.state_dir / RECORD).unlink(missing_ok=True)
