"""Start-up over real tmux with the simulated worker: dialogs read from the visible screen only, and workers that
exit before their first prompt make launch fail (issue 9, start-up)."""

from __future__ import annotations

import os
import subprocess
import sys

from support import Env, leftovers



def csd(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "csd", *argv], capture_output=True, text=True, timeout=90,
                          env={**os.environ, **(env or {})})


def test_a_trust_dialog_redrawn_by_clearing_the_screen_is_answered(env: Env) -> None:
    """A TUI that clears the screen to redraw leaves its earlier frames in tmux's history, the marker still on
    "No, exit" there; launch must read only what the pane shows now."""
    proc = csd("launch", "clr", str(env.root), env={"CSD_SIM_TRUST_DIALOG": "1", "CSD_SIM_CLEAR_REDRAW": "1"})
    assert proc.returncode == 0, proc.stderr
    history = env.tmux("capture-pane", "-p", "-t", "=clr:", "-S", "-", "-E", "-1").stdout
    assert "❯ No, exit" in history  # the stale frame is really there
    assert subprocess.run([proc.stdout.strip(), "status"], capture_output=True, text=True).stdout == "idle\n"


def test_a_worker_that_exits_right_after_starting_fails_the_launch_or_its_first_send(env: Env) -> None:
    """Launch takes one look after session_start and does not wait (issue 13): a worker already exiting then
    fails the launch with its exit status and last lines; one that exits a moment later is a worker that ended,
    and its first send (which holds its Enter until prompt.ENTER_READY_AFTER_START after session_start) says
    it is not running. Either way nothing is left once it is stopped."""
    proc = csd("launch", "quit", str(env.root), env={"CSD_SIM_EXIT_AFTER_START": "7"})
    if proc.returncode != 0:
        assert (proc.returncode, proc.stdout) == (1, ""), proc.stderr
        assert "exited right after starting (exit status 7), before its first prompt" in proc.stderr
        assert "exiting after start with status 7" in proc.stderr  # the pane's own last line
    else:
        shim = proc.stdout.strip()
        sent = subprocess.run([shim, "send", "hi"], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 3, sent.stderr
        assert "cannot send to 'quit'" in sent.stderr and ("terminated" in sent.stderr or "gone" in sent.stderr)
        assert subprocess.run([shim, "stop"], capture_output=True, text=True, timeout=60).returncode == 0
    assert leftovers(env) == []


def test_a_send_right_after_launch_holds_its_enter_until_the_tui_is_ready(env: Env) -> None:
    """No settle in launch: the first send, when it comes within prompt.ENTER_READY_AFTER_START of session_start,
    presses Enter only after that. The simulated TUI swallows Enter for 0.3 s after SessionStart (the real one
    never did at +0.3 s, FACTS §4); with no Enter re-press within the submit timeout, the send succeeds only
    if its first Enter was taken."""
    import json

    from csd.prompt import ENTER_READY_AFTER_START
    from csd.clock import epoch as _epoch

    proc = csd("launch", "early", str(env.root), env={"CSD_SIM_NOT_READY_SECONDS": "0.3"})
    assert proc.returncode == 0, proc.stderr
    shim = proc.stdout.strip()
    sent = subprocess.run([shim, "send", "REPLY:ok"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CSD_SUBMIT_TIMEOUT": "20", "CSD_SUBMIT_RETRY_INTERVAL": "60"})
    assert sent.returncode == 0, sent.stderr
    events_file = subprocess.run([shim, "events-file"], capture_output=True, text=True).stdout.strip()
    lines = [json.loads(line) for line in open(events_file)]
    start = next(e for e in lines if e["event"] == "session_start")
    ups = next(e for e in lines if e["event"] == "user_prompt_submit")
    assert _epoch(ups["ts"]) - _epoch(start["ts"]) >= ENTER_READY_AFTER_START
    assert subprocess.run([shim, "stop"], capture_output=True, text=True, timeout=60).returncode == 0


def test_print_mode_is_refused_before_anything_starts(env: Env) -> None:
    proc = csd("launch", "pm", str(env.root), "--", "-p", "hi")
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert "'-p' runs one prompt and exits" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert leftovers(env) == []


def test_a_stop_right_after_launch_is_not_swallowed(env: Env, monkeypatch, capfd) -> None:
    """stop types /exit and Enter: right after launch it holds that Enter like send, so the worker exits on it
    instead of stop waiting out CSD_STOP_TIMEOUT and killing the session. The stop runs in this process, so
    it reaches its Enter well within the simulated TUI's 0.3 s."""
    import asyncio

    from csd.fleet import Fleet

    proc = csd("launch", "brief", str(env.root), env={"CSD_SIM_NOT_READY_SECONDS": "0.3"})
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("CSD_STOP_TIMEOUT", "5")

    async def stop() -> None:
        async with Fleet(env.wdir) as fleet:
            await fleet.stop("brief")

    asyncio.run(stop())
    assert "did not exit" not in capfd.readouterr().err
    assert leftovers(env) == []
