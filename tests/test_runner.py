"""The command runner: argv pipelines, failures named by stage."""

from __future__ import annotations

import os

import pytest

from nixos_migrate.errors import CommandFailed
from nixos_migrate.runner import CommandRunner, Identity


def test_pipeline_streams_through_every_stage():
    runner = CommandRunner(Identity.lookup(None))
    out = runner.pipeline([["seq", "1", "200000"], ["sed", "-e", "/^1/d"], ["wc", "-l"]])
    assert out.output.strip() == str(200000 - 111111)


def test_pipeline_failure_names_the_stage_and_its_stderr():
    runner = CommandRunner(Identity.lookup(None))
    with pytest.raises(CommandFailed) as info:
        runner.pipeline([["seq", "1", "10"], ["sed", "-e", "not a sed program"], ["cat"]])
    assert info.value.argv[0] == "sed"
    assert "sed" in info.value.output


def test_pipeline_blames_the_failing_reader_not_the_writer_it_cut_off():
    """`yes` is killed by SIGPIPE when `head` fails; the failure reported is head's."""
    runner = CommandRunner(Identity.lookup(None))
    with pytest.raises(CommandFailed) as info:
        runner.pipeline([["yes"], ["head", "--bogus-option"]])
    assert info.value.argv[0] == "head"


def test_pipeline_missing_program():
    runner = CommandRunner(Identity.lookup(None))
    with pytest.raises(CommandFailed) as info:
        runner.pipeline([["seq", "3"], ["no-such-program-xyz"]])
    assert info.value.returncode == 127


def _upper(source: int, sink: int) -> None:
    while data := os.read(source, 65536):
        os.write(sink, data.upper())


def test_pipeline_filter_stages_run_in_process_anywhere_in_the_pipeline():
    runner = CommandRunner(Identity.lookup(None))
    assert runner.pipeline([["printf", "abc\\n"], _upper, ["cat"]]).output == "ABC\n"
    assert runner.pipeline([["printf", "abc"], _upper]).output == "ABC"  # last: its output returned
    assert runner.pipeline([_upper, ["wc", "-c"]]).output.strip() == "0"  # first: reads nothing
    many = runner.pipeline([["seq", "1", "300000"], _upper, _upper, ["wc", "-l"]])
    assert many.output.strip() == "300000"


def test_pipeline_filter_failure_names_the_filter_and_its_error():
    runner = CommandRunner(Identity.lookup(None))

    def broken(source: int, sink: int) -> None:
        os.read(source, 10)
        raise ValueError("bad stream")

    with pytest.raises(CommandFailed) as info:
        runner.pipeline([["yes"], broken, ["cat"]])  # `yes` ends by SIGPIPE: not blamed
    assert info.value.argv == ["broken"]
    assert "ValueError: bad stream" in info.value.output


def test_pipeline_blames_the_reader_that_cut_a_filter_off():
    runner = CommandRunner(Identity.lookup(None))
    with pytest.raises(CommandFailed) as info:
        runner.pipeline([["yes"], _upper, ["head", "--bogus-option"]])
    assert info.value.argv[0] == "head"


def test_run_missing_program_is_command_failed():
    with pytest.raises(CommandFailed, match="command not found"):
        CommandRunner(Identity.lookup(None)).run(["no-such-program-xyz"])


def test_stop_process_escalates_to_sigkill():
    import signal
    import subprocess
    import time

    from nixos_migrate.runner import stop_process

    stubborn = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"], stdout=subprocess.PIPE
    )
    assert stubborn.stdout is not None
    stubborn.stdout.readline()  # the trap is set
    start = time.monotonic()
    stop_process(stubborn, [(signal.SIGTERM, 0.3)])
    assert stubborn.returncode == -signal.SIGKILL
    assert time.monotonic() - start < 5
    polite = subprocess.Popen(["sleep", "30"])
    stop_process(polite, [(signal.SIGTERM, 5)])
    assert polite.returncode == -signal.SIGTERM


def test_wait_ready_reports_ready_exit_and_timeout():
    import subprocess

    from nixos_migrate.runner import wait_ready

    quitter = subprocess.Popen(["sh", "-c", "exit 7"])
    assert wait_ready(quitter, lambda: False, 10) == "exited with 7"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert wait_ready(sleeper, lambda: False, 0.2) == "not ready after 0 s"
        assert wait_ready(sleeper, lambda: True, 0.2) is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_socket_greets_only_once_its_server_speaks(tmp_path):
    """`sockets.greets`: a socket that listens (the backlog accepts the connection) is not yet a
    server that greets; one that sends its first bytes is; no socket is neither."""
    import contextlib
    import socket as socketlib
    import threading

    from nixos_migrate import sockets

    path = tmp_path / "s.sock"
    assert not sockets.greets(path) and not sockets.answers(path)
    listener = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    try:
        assert sockets.answers(path) and not sockets.greets(path)  # listening, no accept loop yet

        def serve() -> None:  # the earlier probes wait in the backlog, already closed
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return  # the listener closed
                with connection, contextlib.suppress(OSError):
                    connection.sendall(b"\x0a")  # a handshake's first byte

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert sockets.greets(path)
    finally:
        listener.close()
