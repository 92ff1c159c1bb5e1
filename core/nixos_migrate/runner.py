"""Running external commands: argv lists only, as the service's user, with a clean environment.

The environment a command sees is exactly:

- `PATH` of nixos-migrate itself (on NixOS the unit sets it from the configuration),
- `HOME`, `USER`, `LOGNAME` of the user the command runs as,
- `LANG=C.UTF-8`, and `TZ` when set,
- whatever the caller passes in `env` (for example `BACKUP` for RFC 155 scripts).

Nothing else is inherited, so secrets in the caller's environment do not leak into commands.
Commands are logged by argv only; values passed in `env` are never logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nixos_migrate.errors import CommandFailed, PrecheckFailed

log = logging.getLogger(__name__)

#: a pipeline stage run in a thread of this process: it reads the previous stage's output from
#: the first file descriptor until the end and writes its own to the second (which it must not
#: close); an exception fails the pipeline like a failing command
Filter = Callable[[int, int], None]


def _close_upstream(upstream: Any) -> None:
    """The parent's copy of a pipe a stage now reads from."""
    if isinstance(upstream, int) and upstream >= 0:
        os.close(upstream)
    elif hasattr(upstream, "close"):
        upstream.close()


def _drain(upstream: Any) -> bytes:
    """Everything a filter that ends a pipeline writes."""
    if isinstance(upstream, int):
        with os.fdopen(upstream, "rb") as stream:
            return stream.read()
    return b""


@dataclass(frozen=True)
class Completed:
    """The result of a command: exit code and combined stdout/stderr."""

    returncode: int
    output: str


@dataclass(frozen=True)
class Identity:
    """Who a command runs as."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...]

    @classmethod
    def lookup(cls, name: str | None) -> Identity:
        """The named user, or the current one when `name` is None.

        Raises `PrecheckFailed` for a user that does not exist, or when switching to it needs
        root and we are not root.
        """
        try:
            entry = pwd.getpwnam(name) if name else pwd.getpwuid(os.geteuid())
        except KeyError:
            raise PrecheckFailed(
                f"user {name!r} does not exist",
                hint="create the user or fix `user` in the manifest",
            ) from None
        if entry.pw_uid != os.geteuid() and os.geteuid() != 0:
            raise PrecheckFailed(
                f"commands must run as {entry.pw_name!r}, which needs root",
                hint="run nixos-migrate as root (the systemd unit does)",
            )
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, groups)

    @property
    def switches(self) -> bool:
        return self.uid != os.geteuid()


def clean_environment(identity: Identity, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/run/current-system/sw/bin:/usr/bin:/bin"),
        "HOME": identity.home,
        "USER": identity.name,
        "LOGNAME": identity.name,
        "LANG": "C.UTF-8",
    }
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    env.update(extra or {})
    return env


def wait_ready(process: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float) -> str | None:
    """Poll `ready` until it holds; None when it does, else why not ("exited with N", "not ready
    after T s"). The caller stops the process on failure and says what it was."""
    deadline = time.monotonic() + timeout
    pause = 0.005  # most servers are up within a fraction of a second: look often at first
    while not ready():
        if process.poll() is not None:
            return f"exited with {process.returncode}"
        if time.monotonic() > deadline:
            return f"not ready after {timeout:.0f} s"
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    return None


def stop_process(process: subprocess.Popen[bytes], steps: Sequence[tuple[int, float]], *, group: bool = False) -> None:
    """Stop `process` by pid: send each signal of `steps` and wait its seconds; SIGKILL last.
    With `group`, signal its whole process group (started with start_new_session)."""
    if process.poll() is not None:
        return
    for sig, wait in [*steps, (signal.SIGKILL, None)]:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class CommandRunner:
    """Runs argv lists as a given identity with the clean environment described above."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def spawn(
        self, argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process (a private server) as the service user; the caller stops it
        by pid. Its output goes to `log` (appended) or nowhere."""
        args = [str(a) for a in argv]
        me = self.identity
        sink = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below, the child keeps it
        switch = me.switches
        logging.getLogger(__name__).debug("spawn as %s: %s", me.name, args)
        try:
            return subprocess.Popen(
                args,
                env=clean_environment(me, env),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                # same process group: whoever kills nixos-migrate's group (systemd, a test) kills it too
                user=me.uid if switch else None,
                group=me.gid if switch else None,
                extra_groups=list(me.groups) if switch else None,
            )
        except FileNotFoundError:
            raise CommandFailed(args, 127, f"{args[0]}: command not found") from None
        finally:
            if log:
                sink.close()  # type: ignore[union-attr]

    def pipeline(
        self, stages: Sequence[Sequence[str | Path] | Filter], *, env: Mapping[str, str] | None = None
    ) -> Completed:
        """Run `stages[0] | stages[1] | ...` as the service user (argv lists, no shell) and wait.

        A stage may also be a `Filter`, run in a thread of this process between two commands
        (for rewriting a stream at C speed without another interpreter as the service user).
        Raises `CommandFailed` naming the first stage that failed, with its own stderr (a filter's
        exception as its message); the output of the last stage is returned.
        """
        me = self.identity
        switch = me.switches
        procs: list[tuple[int, subprocess.Popen[bytes]]] = []
        threads: list[tuple[int, threading.Thread, list[BaseException]]] = []
        with contextlib.ExitStack() as stack:
            errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in stages]
            upstream: Any = subprocess.DEVNULL
            try:
                for index, stage in enumerate(stages):
                    if callable(stage):
                        upstream = self._start_filter(index, stage, upstream, threads)
                        continue
                    proc = subprocess.Popen(
                        [str(a) for a in stage],
                        env=clean_environment(me, env),
                        cwd="/",
                        stdin=upstream,
                        stdout=subprocess.PIPE,
                        stderr=errs[index],
                        user=me.uid if switch else None,
                        group=me.gid if switch else None,
                        extra_groups=list(me.groups) if switch else None,
                    )
                    _close_upstream(upstream)  # the new stage owns the pipe now
                    procs.append((index, proc))
                    upstream = proc.stdout
                last = procs[-1][1] if procs and procs[-1][0] == len(stages) - 1 else None
                output = last.communicate()[0] if last else _drain(upstream)
                codes = {i: p.wait() for i, p in procs}
            except FileNotFoundError as exc:
                for _, p in procs:
                    p.kill()
                    p.wait()
                _close_upstream(upstream)
                for _, thread, _ in threads:
                    thread.join()
                raise CommandFailed([str(exc.filename)], 127, f"{exc.filename}: command not found") from None
            for index, thread, raised in threads:
                thread.join()
                # a filter whose reader went away failed like a command killed by SIGPIPE
                broken = bool(raised) and isinstance(raised[0], BrokenPipeError)
                codes[index] = -signal.SIGPIPE if broken else 1 if raised else 0
                if raised:
                    errs[index].write(f"{type(raised[0]).__name__}: {raised[0]}".encode())
            failed = [(i, codes[i]) for i in sorted(codes) if codes[i] != 0]
            # a stage killed by SIGPIPE only lost its reader: blame the stage that really failed
            cause = [f for f in failed if f[1] != -signal.SIGPIPE] or failed
            if cause:
                index, code = cause[0]
                stage = stages[index]
                errs[index].seek(0)
                argv = (
                    [getattr(stage, "__name__", type(stage).__name__)] if callable(stage) else [str(a) for a in stage]
                )
                raise CommandFailed(argv, code, errs[index].read().decode("utf-8", "replace"))
        return Completed(0, output.decode("utf-8", "replace"))

    @staticmethod
    def _start_filter(
        index: int, stage: Filter, upstream: Any, threads: list[tuple[int, threading.Thread, list[BaseException]]]
    ) -> int:
        """Start `stage` in a thread reading `upstream`; returns the read end of its output."""
        read_end, write_end = os.pipe()
        if hasattr(upstream, "fileno"):
            source = upstream.fileno()  # a command's stdout
        elif isinstance(upstream, int) and upstream >= 0:
            source = upstream  # the read end of the filter before
        else:
            source = os.open(os.devnull, os.O_RDONLY)  # the first stage
        raised: list[BaseException] = []

        def pump() -> None:
            try:
                stage(source, write_end)
            except BaseException as exc:  # any failure is this stage's to report
                raised.append(exc)
            finally:
                os.close(write_end)  # the next stage sees the end of the stream
                if hasattr(upstream, "close"):
                    upstream.close()  # an upstream command still writing gets SIGPIPE
                else:
                    os.close(source)

        thread = threading.Thread(target=pump, name=f"pipeline-filter-{index}", daemon=True)
        thread.start()
        threads.append((index, thread, raised))
        return read_end

    def run(
        self,
        argv: Sequence[str | Path],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        input: bytes | None = None,
        as_root: bool = False,
        check: bool = True,
        timeout: float | None = None,
    ) -> Completed:
        """Run `argv` and wait for it.

        Args:
            argv: the program and its arguments; never a shell string.
            env: variables added to the clean environment.
            cwd: working directory (default: the user's home if it exists, else `/`).
            input: bytes fed to standard input.
            as_root: run as the identity of nixos-migrate itself instead of the service user
                (for systemctl and for preparing directories).
            check: raise `CommandFailed` on a non-zero exit.
            timeout: seconds before the command is killed.
        """
        args = [str(a) for a in argv]
        me = Identity.lookup(None) if as_root else self.identity
        workdir = cwd or (Path(me.home) if Path(me.home).is_dir() else Path("/"))
        log.debug("run as %s: %s", me.name, args)
        switch = me.switches
        try:
            proc = subprocess.run(
                args,
                env=clean_environment(me, env),
                cwd=workdir,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                user=me.uid if switch else None,
                group=me.gid if switch else None,
                extra_groups=list(me.groups) if switch else None,
            )
        except FileNotFoundError:
            raise CommandFailed(args, 127, f"{args[0]}: command not found") from None
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(args, -9, f"timed out after {timeout} s") from exc
        output = proc.stdout.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise CommandFailed(args, proc.returncode, output)
        return Completed(proc.returncode, output)
