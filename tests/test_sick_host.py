"""A sick host: a tmux server that does not answer, huge events lines, a full disk, a log rotated mid-turn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from support import Env, csd, launch, popen, status

TMUX_BOUND = {"CSD_TMUX_TIMEOUT": "2"}


@pytest.fixture
def stopped_tmux(env: Env) -> Iterator[int]:
    """The test's tmux server, stopped with SIGSTOP after one worker 'h' was launched; resumed after."""
    launch(env, "h")
    pid = int(env.tmux("display-message", "-p", "#{pid}").stdout)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def one_line_naming_tmux(err: bytes) -> None:
    text = err.decode()
    assert text.count("\n") == 1 and "the tmux server -S" in text and "is not answering" in text, text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "argv",
    [
        ("--worker", "h", "status"),
        ("list",),
        ("--worker", "h", "wait-for-turn", "60"),
        ("--worker", "h", "send", "hello"),
        ("--worker", "h", "converse", "hello", "60"),
        ("wait-for-turn", "--any", "h", "60"),
    ],
)
def test_a_stopped_tmux_server_is_named_within_its_bound(env: Env, stopped_tmux: int, argv: tuple[str, ...]) -> None:
    """Every command that asks tmux gives up after CSD_TMUX_TIMEOUT with one line naming the server
    (the old code waited for it for ever)."""
    proc = csd(*argv, env=TMUX_BOUND, timeout=30)
    assert proc.returncode == 1 and proc.stdout == b""
    one_line_naming_tmux(proc.stderr)


def test_a_wait_shorter_than_the_tmux_bound_keeps_its_own_timeout(env: Env, stopped_tmux: int) -> None:
    """wait-for-turn 1 with tmux silent: its own timeout holds (the first tmux call is inside it), and
    the line says it was tmux that did not answer."""
    proc = csd("--worker", "h", "wait-for-turn", "1.5", timeout=30)  # default CSD_TMUX_TIMEOUT: 10 s
    assert proc.returncode == 1
    one_line_naming_tmux(proc.stderr)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("argv", [("--worker", "h", "wait-for-turn", "600"), ("--worker", "h", "stop")])
def test_signals_work_while_tmux_does_not_answer(env: Env, stopped_tmux: int, sig: int, code: int, argv: tuple[str, ...]) -> None:
    """A cancel kills the tmux client and does not wait for its pipes, which the stopped server holds."""
    proc = popen(*argv, env={"CSD_TMUX_TIMEOUT": "600"})
    # the tmux client this command started is a child of it: once it exists, csd is waiting on tmux
    children = f"/proc/{proc.pid}/task/{proc.pid}/children"
    while not open(children).read().strip():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert b"Traceback" not in err


def test_stop_keeps_the_files_when_tmux_does_not_answer(env: Env, stopped_tmux: int) -> None:
    meta = env.wdir.resolve("h")
    proc = csd("--worker", "h", "stop", env=TMUX_BOUND, timeout=30)
    assert proc.returncode == 1 and b"run stop again once tmux answers" in proc.stderr
    one_line_naming_tmux(proc.stderr)
    assert env.wdir.meta_path(meta.session_id).exists() and env.wdir.shim_path("h").exists()
    os.kill(stopped_tmux, signal.SIGCONT)
    assert csd("--worker", "h", "stop").returncode == 0
    assert not env.wdir.meta_path(meta.session_id).exists()
