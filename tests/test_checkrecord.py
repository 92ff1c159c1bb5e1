"""checkrecord.note / noted: what one hook of a run keeps for a later one (a check's fingerprint
for the step's backup), valid only for its key and while the files keep their stamp."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nixos_migrate import checkrecord


def _service(tmp_path: Path) -> Any:
    state = tmp_path / "state"
    state.mkdir()
    return SimpleNamespace(state_dir=state)


def test_a_noted_value_is_given_back_for_its_key_while_the_files_are_unchanged(tmp_path: Path) -> None:
    service = _service(tmp_path)
    data = tmp_path / "dump.rdb"
    data.write_bytes(b"REDIS0012")
    checkrecord.note(service, "noted.json", [data], "8.0->7.0", {"keys": 3})
    assert checkrecord.noted(service, "noted.json", [data], "8.0->7.0", keep=True) == {"keys": 3}
    assert checkrecord.noted(service, "noted.json", [data], "8.0->7.0") == {"keys": 3}
    # used: gone
    assert checkrecord.noted(service, "noted.json", [data], "8.0->7.0") is None


def test_another_key_or_changed_files_give_nothing(tmp_path: Path) -> None:
    service = _service(tmp_path)
    data = tmp_path / "dump.rdb"
    data.write_bytes(b"REDIS0012")
    checkrecord.note(service, "noted.json", [data], "8.0->7.0", {"keys": 3})
    assert checkrecord.noted(service, "noted.json", [data], "8.0->6.0", keep=True) is None
    # a server ran on the data meanwhile: the file was written again
    data.write_bytes(b"REDIS0012+")
    os.utime(data, ns=(1, 1))
    assert checkrecord.noted(service, "noted.json", [data], "8.0->7.0") is None
    assert not (service.state_dir / "noted.json").exists()
