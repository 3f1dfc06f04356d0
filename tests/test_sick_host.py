"""A sick host: a tmux server that does not answer, huge events lines, a full disk, a log rotated mid-turn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import Env, csd, fill, launch, popen, tmpfs, wait_blocked

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
    # tmux's own bound far beyond the test's: only the wait's timeout can end it in time
    proc = csd("--worker", "h", "wait-for-turn", "1.5", timeout=30, env={"CSD_TMUX_TIMEOUT": "600"})
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


# --- big events content -------------------------------------------------------------------------------

BIG = 100 << 20  # the 100 MB line


def big_event_line(size: int = BIG) -> bytes:
    """An events line of ``size`` bytes that is a valid event: only its size is wrong."""
    head = b'{"ts":"2026-11-25T00:00:02Z","event":"pre_tool_use","tool":"Bash","tool_input":"'
    return head + b"x" * (size - len(head) - 3) + b'"}\n'


def append(path: os.PathLike[str], data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_a_huge_line_is_skipped_and_the_stop_after_it_ends_the_wait(env: Env) -> None:
    """A 100 MB line arrives while wait-for-turn waits: it is skipped (one warning), the stop after it
    ends the wait (the old code spent 96 s on a quadratic buffer, blocking the loop)."""
    meta = env.add_worker("big", [{"event": "session_start"}, {"event": "user_prompt_submit", "prompt": "p"}])
    path = env.wdir.events_path(meta.session_id)
    waiter = popen("--worker", "big", "wait-for-turn", "60")
    wait_blocked(waiter)
    append(path, big_event_line())
    append(path, json.dumps({"ts": "2026-11-25T00:00:03Z", "event": "stop", "last_assistant_message": "done"}).encode() + b"\n")
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert json.loads(out)["last_assistant_message"] == "done"
    assert err.decode().count("skipping line 3: longer than") == 1, err


def test_a_huge_line_in_the_tail_does_not_fool_a_fan_out_wait(env: Env) -> None:
    """An idle worker whose log ends in a 100 MB line is idle: the fan-out wait returns at once (the old
    code read it whole and timed out with 'still busy: none')."""
    meta = env.add_worker("idle", [{"event": "session_start"}, {"event": "stop", "last_assistant_message": "ok"}])
    append(env.wdir.events_path(meta.session_id), big_event_line())
    proc = csd("wait-for-turn", "--any", "idle", "5", timeout=60)
    assert proc.returncode == 0, proc.stderr
    name, line = proc.stdout.decode().rstrip("\n").split("\t", 1)
    assert name == "idle" and json.loads(line)["event"] == "stop"
    assert b"skipping line 3: longer than" in proc.stderr
    status = csd("--worker", "idle", "status", timeout=60)
    assert status.stdout == b"idle\n"


def max_rss_kib(*argv: str) -> tuple[int, subprocess.CompletedProcess[bytes]]:
    """Run csd in a fresh parent, whose largest child is then csd itself: (its peak RSS in KiB, result)."""
    code = (
        "import resource, subprocess, sys; "
        "p = subprocess.run([sys.executable, '-m', 'csd', *sys.argv[1:]], capture_output=True); "
        "sys.stdout.buffer.write(p.stdout); sys.stderr.buffer.write(p.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)"
    )
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, timeout=120)
    *err, rss = proc.stderr.decode().rstrip("\n").split("\n")
    return int(rss), subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, "\n".join(err).encode())


def test_reading_the_end_of_a_big_log_costs_memory_for_the_end_only(env: Env) -> None:
    """read-events --last 1 on a 300 MB log: the last line, in tens of MB of memory (the old code held
    the file several times over: 12 GB for 2 GB)."""
    meta = env.add_worker("log", [{"event": "session_start"}], live=False)
    path = env.wdir.events_path(meta.session_id)
    line = json.dumps({"ts": "2026-11-25T00:00:02Z", "event": "pre_tool_use", "tool": "Bash", "tool_input": {"command": "x" * 200}}).encode() + b"\n"
    block = line * ((1 << 20) // len(line))
    with open(path, "ab") as f:
        for _ in range(300):
            f.write(block)
        f.write(json.dumps({"ts": "2026-11-25T00:00:03Z", "event": "stop", "last_assistant_message": "last"}).encode() + b"\n")
    rss, proc = max_rss_kib("--worker", "log", "read-events", "--last", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["last_assistant_message"] == "last"
    assert rss < 100 << 10, f"peak RSS {rss} KiB"
    rss, proc = max_rss_kib("--worker", "log", "read-events", "--type", "stop")
    assert proc.returncode == 0 and json.loads(proc.stdout)["event"] == "stop"
    assert rss < 100 << 10, f"peak RSS {rss} KiB (a forward read holds a piece at a time)"


# --- log rotation ---------------------------------------------------------------------------------------


def test_converse_accepts_a_stop_that_lands_as_line_one_after_a_truncation(env: Env) -> None:
    """The events file is truncated (log rotation) between the prompt and the stop: the stop is line 1
    of the new file, later than the prompt all the same (the old code compared line numbers alone)."""
    launch(env, "rot")
    follow = popen("--worker", "rot", "read-events", "--follow", "--type", "user_prompt_submit")
    conv = popen("--worker", "rot", "converse", "SLEEP:3 REPLY:after rotation", "30")
    assert follow.stdout is not None and b"user_prompt_submit" in follow.stdout.readline()
    follow.send_signal(signal.SIGINT)
    follow.wait(10)
    os.truncate(env.wdir.events_path(env.wdir.resolve("rot").session_id), 0)
    out, err = conv.communicate(timeout=60)
    assert conv.returncode == 0, err
    assert out == b"after rotation\n"



# --- a full disk ------------------------------------------------------------------------------------------

HOOK = [sys.executable, "-I", "-S", str(Path(__file__).resolve().parent.parent / "csd" / "hook.py")]
@pytest.fixture
def small_fs(env: Env) -> Iterator[Path]:
    """The workers dir on a 256 KiB tmpfs of its own (needs mount rights: root, or skipped saying so)."""
    with tmpfs(env.wdir.path, "size=256k,mode=0700") as path:
        yield path


def hook_stop(events: Path) -> subprocess.CompletedProcess[bytes]:
    payload = {"hook_event_name": "Notification", "session_id": "s", "notification_type": "idle_prompt", "message": "after"}
    return subprocess.run(HOOK, input=json.dumps(payload).encode(), capture_output=True, env={**os.environ, "CSD_EVENTS_FILE": str(events)})


def test_a_full_disk_is_said_not_waited_out(env: Env, small_fs: Path) -> None:
    """The stop cannot be appended: the hook says so (stderr, exit 1), csd says 'events file could not be
    written' instead of waiting blind, send refuses in one line, and once space is back the partial
    line stays a bad line of its own: the next event is read whole."""
    shim = launch(env, "full")
    events_file = env.wdir.events_path(env.wdir.resolve("full").session_id)
    assert subprocess.run([str(shim), "send", "SLEEP:1 REPLY:lost"], capture_output=True).returncode == 0
    filler = fill(small_fs, events_file, room=100)
    before = events_file.stat().st_size
    # the worker's stop hook writes what fits (100 bytes) and fails
    deadline = time.monotonic() + 20
    while events_file.stat().st_size == before:
        assert time.monotonic() < deadline, "the worker's stop hook never ran"
        time.sleep(0.05)
    assert not events_file.read_bytes().endswith(b"\n")  # a partial line
    # the simulated worker shows the failed hook as Claude Code does (tests/e2e/test_full_disk_real.py)
    while "Stop hook failed" not in (screen := env.tmux("capture-pane", "-p", "-t", "=full:").stdout):
        assert time.monotonic() < deadline, screen
        time.sleep(0.05)
    assert "csd hook: could not record stop in " in screen

    wait = subprocess.run([str(shim), "wait-for-turn", "20"], capture_output=True, timeout=60)
    assert wait.returncode == 1 and wait.stdout == b""
    assert wait.stderr.count(b"\n") == 1 and b"events file could not be written" in wait.stderr, wait.stderr

    fan = csd("wait-for-turn", "--all", "full", "20", timeout=60)
    assert fan.returncode == 1 and b"events file could not be written" in fan.stderr, fan.stderr

    send = subprocess.run([str(shim), "send", "REPLY:more"], capture_output=True, timeout=60)
    assert send.returncode == 1 and send.stderr.count(b"\n") == 1, send.stderr
    # csd's state is stale: it says why next to it (a warning; stdout keeps the bare state)
    st = subprocess.run([str(shim), "status"], capture_output=True, timeout=60)
    assert st.stdout == b"working\n" and b"events file could not be written" in st.stderr

    # the hook itself, on the full disk: one line on stderr, exit 1 (Claude Code shows it, and goes on)
    failed = hook_stop(events_file)
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.decode().startswith("csd hook: could not record notification in ") and b"No space left" in failed.stderr

    filler.unlink()
    assert hook_stop(events_file).returncode == 0
    proc = subprocess.run([str(shim), "read-events", "--last", "1"], capture_output=True, timeout=60)
    assert json.loads(proc.stdout)["message"] == "after", proc
    every = subprocess.run([str(shim), "read-events"], capture_output=True, timeout=60)
    assert b"skipping line" in every.stderr and b"not JSON" in every.stderr  # the partial stop, alone
