"""Batches of keys shared by worker processes.

The plugin's side of a logical copy, and of reading the copy back, is Python work (parsing the
replies, hashing the values, packing the writes), which one process does on one core however many
threads it has. Worker processes of their own share the batches of SCAN instead, each with its
own connections to the private servers, and hand back the fingerprint (`content.Tally`) of the
keys they handled; the sums add up to the fingerprint of the whole. They are spawned, not forked:
nothing of the parent's threads (the progress display) is inherited.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nixos_migrate.errors import MigrateError
from nixos_migrate.progress import Progress
from nixos_migrate_redis import content, versions
from nixos_migrate_redis.server import Server

#: (version, socket) of a private server, as a worker reaches it
Spec = tuple[str, str]

_SERVERS: dict[Spec, Server] = {}  # per worker process, for the batches it is given


def spec(server: Server) -> Spec:
    return server.version, str(server.socket)


def _server(reached: Spec) -> Server:
    if reached not in _SERVERS:
        version, sock = reached
        _SERVERS[reached] = Server(version, Path(), Path(sock), Path(sock).with_suffix(".log"))
    return _SERVERS[reached]


def _tally(db: int, keys: list[content.Key]) -> content.Tally:
    tally = content.Tally()
    tally.db(db)
    tally.add(db, keys)
    return tally


def read(reached: Spec, db: int, names: list[bytes]) -> tuple[int, content.Tally]:
    """A worker's batch of a fingerprint that reads the values: (keys looked at, their tally)."""
    keys = content.describe(_server(reached), db, names, digested=True, values=True)
    return len(names), _tally(db, [k for k in keys if k.type != "none"])


def copied(source: Spec, target: Spec, db: int, field_ttl: bool, names: list[bytes]) -> tuple[int, content.Tally]:
    """A worker's batch of a copy: the keys written into `target`; (keys looked at, the tally of
    what was read)."""
    from nixos_migrate_redis import copy

    reader, writer = _server(source), _server(target)
    keys = [k for k in content.describe(reader, db, names, digested=True, values=True) if k.type != "none"]
    copy.write_batch(reader, writer, db, keys, field_ttl)
    return len(names), _tally(db, keys)


class Workers:
    """`jobs` worker processes, started on first use, stopped by `close` (batches not started by
    then are dropped)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("spawn")
            self._executor = concurrent.futures.ProcessPoolExecutor(max_workers=self.jobs, mp_context=context)
        return self._executor

    def shared(
        self,
        server: Server,
        db: int,
        batch: int,
        work: Callable[..., tuple[int, content.Tally]],
        args: tuple[Any, ...],
        into: content.Tally,
        advance: Callable[[int], None],
    ) -> None:
        """Every key of `db` of `server`, found by SCAN here, handed in batches to `work(*args,
        names)` in the workers (a few batches ahead of them, no more); their tallies added `into`."""
        pool = self._pool()
        client = server.client(db)
        running: set[concurrent.futures.Future[tuple[int, content.Tally]]] = set()
        cursor = 0
        into.db(db)
        while True:
            cursor, names = client.scan(cursor, count=batch)
            if names:
                running.add(pool.submit(work, *args, names))
            last = cursor == 0
            if running and (last or len(running) >= 2 * self.jobs):
                when = concurrent.futures.ALL_COMPLETED if last else concurrent.futures.FIRST_COMPLETED
                finished, running = concurrent.futures.wait(running, return_when=when)
                for future in finished:
                    looked, tally = _result(server, future)
                    into.merge(tally)
                    advance(looked)
            if last and not running:
                return


def _result(server: Server, future: concurrent.futures.Future[tuple[int, content.Tally]]) -> tuple[int, content.Tally]:
    try:
        return future.result()
    except MigrateError:
        raise
    except Exception as exc:  # a worker's failure (a server gone, a reply refused), named as the parent's would be
        raise MigrateError(f"{versions.label(server.version)}: {type(exc).__name__}: {exc}") from exc


def fingerprint(server: Server, batch: int, workers: Workers, progress: Progress, what: str) -> dict[str, Any]:
    """`content.fingerprint` of `server` by the workers, which read the values and hash strings
    themselves (what the server would otherwise spend its one thread on)."""
    tally = content.Tally()
    databases = server.databases()
    with progress.task(what, total=sum(databases.values())) as task:
        for db in sorted(databases):
            workers.shared(server, db, batch, read, (spec(server), db), tally, task.advance)
    return tally.result() | {"functions": content.functions(server)}
