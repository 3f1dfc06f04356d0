"""``wait-for-turn``, ``send`` and ``converse`` of one worker run with no event loop (csd/waiter.py): the process
maps no asyncio and no OpenSSL, and answers as the supervisor does; the supervisor takes over where the waiter
hands a worker back (the poll backend here). Gone, stopped, truncated and timed-out waits, and every way of
sending: tests/test_faults.py, tests/test_engine.py and tests/test_send_prompt.py, which run through the same
commands."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csd.supervisor import Supervisor
from support import Env, events, launch, popen, wait_blocked


def event_loop_mapped(pid: int) -> bool:
    """asyncio's C part or OpenSSL in the process: what made a waiting process 19 MB (bench/)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return any(lib in maps for lib in ("_asyncio", "libssl", "_ssl"))


@pytest.mark.parametrize("backend", ["inotify", "poll"])
def test_a_blocked_wait_holds_no_event_loop_and_answers_as_the_supervisor(env: Env, backend: str) -> None:
    shim = launch(env, "w")
    assert subprocess.run([str(shim), "send", "SLEEP:1 REPLY:done"], capture_output=True).returncode == 0
    waiter = popen("--worker", "w", "wait-for-turn", "60", env={"CSD_WATCH_BACKEND": backend})
    wait_blocked(waiter)
    # the poll backend is the supervisor's: the waiter hands such a worker back, and the answer is the same
    assert event_loop_mapped(waiter.pid) == (backend == "poll")
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert json.loads(out)["last_assistant_message"] == "done"

    async def supervisors() -> str:
        async with Supervisor(machine=False) as sup:
            return (await sup.wait_for_turn("w")).raw

    assert asyncio.run(supervisors()) == out.decode().strip()


@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, b"csd: interrupted"),
                                                   (signal.SIGTERM, 143, b"terminated (SIGTERM)")])
def test_a_signal_ends_the_wait_with_its_code_and_one_line(env: Env, sig: int, code: int, said: bytes) -> None:
    shim = launch(env, "s")
    assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    waiter = popen("--worker", "s", "wait-for-turn", "60")
    wait_blocked(waiter)
    assert not event_loop_mapped(waiter.pid)
    waiter.send_signal(sig)
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == code and out == b""
    assert err.count(b"\n") == 1 and said in err and b"Traceback" not in err, err


def test_the_waiters_inotify_reports_a_dirs_files_and_its_end(tmp_path: Path) -> None:
    import select

    from csd import inotify

    d = tmp_path / "d"
    d.mkdir()
    ino = inotify.Inotify()
    try:
        ino.add_watch(d, inotify.MODIFY | inotify.CREATE | inotify.DELETE | inotify.DELETE_SELF)
        assert ino.read() == []  # nothing queued: no blocking
        (d / "f").write_bytes(b"x\n")
        (d / "f").unlink()
        d.rmdir()
        seen: list[tuple[int, str]] = []
        while not any(mask & inotify.IGNORED for mask, _ in seen):
            assert select.select([ino.fileno()], [], [], 10)[0], seen
            seen += [(mask, name) for _, mask, name in ino.read()]
        assert [name for mask, name in seen if mask & inotify.CREATE] == ["f"]
        assert [name for mask, name in seen if mask & inotify.MODIFY] == ["f"]
        assert [name for mask, name in seen if mask & inotify.DELETE] == ["f"]
        assert any(mask & inotify.DELETE_SELF and name == "" for mask, name in seen)
    finally:
        ino.close()
    other = inotify.Inotify()
    with pytest.raises(FileNotFoundError):
        other.add_watch(tmp_path / "missing", inotify.MODIFY)
    other.close()


def test_a_worker_that_exits_cleanly_under_the_wait_answers_its_session_end(env: Env) -> None:
    """SIGHUP: the worker records session_end on its way out, then its process ends. The waiter reads the
    lines before it takes the process's end (pidfd) as the answer: the session_end line, exit 0, not "gone"."""
    import os as _os

    shim = launch(env, "x")
    assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    waiter = popen("--worker", "x", "wait-for-turn", "60")
    wait_blocked(waiter)
    _os.kill(env.wdir.resolve("x").pid, signal.SIGHUP)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert json.loads(out)["event"] == "session_end"


def _says_the_prompt_arrived(shim: Path, prompt: str) -> None:
    """Until the worker's hook recorded ``prompt`` (synchronised on the events file, not a sleep)."""
    deadline = time.monotonic() + 15
    while not any(e.get("prompt") == prompt for e in events(shim, "user_prompt_submit")):
        assert time.monotonic() < deadline, events(shim)
        time.sleep(0.02)


@pytest.mark.parametrize("backend", ["inotify", "poll"])
def test_a_converse_sends_and_waits_with_no_event_loop_and_answers_as_the_supervisor(env: Env, backend: str) -> None:
    """converse drives send's steps (csd/sending.py) and waits for the turn in csd.waiter: while it waits for the
    worker's turn it maps no asyncio; with the poll backend it hands the worker to the supervisor, which drives
    the same steps. Same reply either way."""
    shim = launch(env, "c")
    prompt = f"SLEEP:3 REPLY:done by {backend}"
    conv = popen("--worker", "c", "converse", prompt, "60", env={"CSD_WATCH_BACKEND": backend})
    _says_the_prompt_arrived(shim, prompt)
    assert event_loop_mapped(conv.pid) == (backend == "poll")  # the turn takes 3 s: the converse waits in it
    out, err = conv.communicate(timeout=30)
    assert (conv.returncode, out) == (0, f"done by {backend}\n".encode()), err


def test_a_signal_ends_a_converse_with_its_code_and_one_line_and_frees_the_worker(env: Env) -> None:
    shim = launch(env, "t")
    conv = popen("--worker", "t", "converse", "HANG", "60")
    _says_the_prompt_arrived(shim, "HANG")
    assert not event_loop_mapped(conv.pid)
    conv.send_signal(signal.SIGTERM)
    out, err = conv.communicate(timeout=10)
    assert conv.returncode == 143 and out == b""
    assert err.count(b"\n") == 1 and b"terminated (SIGTERM)" in err and b"Traceback" not in err, err
    # the lock went with the process: the next controller is refused for the turn, not for a held lock
    again = subprocess.run([str(shim), "send", "REPLY:x"], capture_output=True, text=True)
    assert again.returncode == 1 and "while it is working" in again.stderr, again.stderr


@pytest.mark.parametrize("command", [["send", "REPLY:sent"], ["converse", "REPLY:conversed"]])
def test_send_and_converse_never_import_asyncio(env: Env, command: list[str]) -> None:
    """The sync path end to end (the console script's entry, which ends with os._exit: the check runs there)."""
    launch(env, "n")
    code = "import sys; from csd.cli import entry; sys.argv[0] = 'csd'; os = __import__('os'); " \
           "os._exit = lambda c, _exit=os._exit: (print('ASYNCIO', 'asyncio' in sys.modules, flush=True), _exit(c)); entry()"
    proc = subprocess.run([sys.executable, "-I", "-c", code, "--worker", "n", *command], capture_output=True, text=True,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "ASYNCIO False"
