"""Progress reporting for long work. Plugins see only the `Progress` protocol."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Protocol


class Task(Protocol):
    def advance(self, amount: float = 1) -> None: ...
    def set_total(self, total: float | None) -> None: ...


class Progress(Protocol):
    """What hooks use to show progress: `with service.progress.task("copy", total=n) as t:`."""

    def task(self, description: str, total: float | None = None) -> contextlib.AbstractContextManager[Task]: ...
    def log(self, message: str) -> None: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def set_total(self, total: float | None) -> None:
        pass


class NullProgress:
    """Reports nothing (library use, `--json`)."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        yield _NullTask()

    def log(self, message: str) -> None:
        pass


class LineProgress:
    """One line per task start and end on stderr: for logs and the journal of systemd."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        start = time.monotonic()
        print(f"... {description}", file=sys.stderr, flush=True)
        yield _NullTask()
        print(f"    {description}: done in {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
