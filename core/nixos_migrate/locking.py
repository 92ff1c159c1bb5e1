"""Per-service exclusive locks (flock) that say who holds them."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nixos_migrate.errors import LockHeld, PrecheckFailed


def _lock_file(state_dir: Path, service: str) -> Path:
    return state_dir / "locks" / f"{service}.lock"


def read_holder(state_dir: Path, service: str) -> dict[str, Any] | None:
    """Who holds the lock of `service` now, or None when nobody does."""
    path = _lock_file(state_dir, service)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse(os.pread(fd, 4096, 0))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(raw.decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _holder_of(fd: int) -> dict[str, Any]:
    """Who holds the lock on `fd`: a holder that has just taken it writes who it is a moment
    later, so an empty file is read again for up to 0.1 s before it is called "starting up"."""
    for _ in range(20):
        holder = _parse(os.pread(fd, 4096, 0))
        if holder:
            return holder
        time.sleep(0.005)
    return {}


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another nixos-migrate run (starting up)"
    return f"pid {holder.get('pid')} ({holder.get('command')}) since {holder.get('since')}"


@contextlib.contextmanager
def service_locks(state_dir: Path, services: list[str], command: str) -> Iterator[None]:
    """Hold the locks of all `services` (taken in sorted order) for the body; refuse if one is held."""
    try:
        (state_dir / "locks").mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise PrecheckFailed(
            f"state directory {state_dir} cannot hold the locks: {exc.strerror}",
            hint="fix `state_dir` in the manifest or its permissions",
        ) from None
    with contextlib.ExitStack() as stack:
        for service in sorted(set(services)):
            stack.enter_context(_one_lock(state_dir, service, command))
        yield


@contextlib.contextmanager
def _one_lock(state_dir: Path, service: str, command: str) -> Iterator[None]:
    fd = os.open(_lock_file(state_dir, service), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_of(fd)
            raise LockHeld(
                f"{service}: locked by {describe(holder)}",
                hint="wait for that run to finish; the lock goes with its process",
            ) from None
        since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        info = json.dumps({"pid": os.getpid(), "command": command or " ".join(sys.argv), "since": since})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
