"""``attention`` (who needs the operator, and why) in status/list --json and the watch table, and
``watch --notify``: each reason produced for real over tmux with the simulated worker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from csd.render import watch
from csd.sim.directives import API_ERROR_TEXT
from support import Env, csd, launch, listed, until
from test_render import Redraws, stop_watch, text_of


def run(shim: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(shim), *args], capture_output=True, text=True, timeout=60)


def test_a_failed_turn_needs_attention_until_a_turn_ends_well(env: Env) -> None:
    shim = launch(env, "f")
    assert listed("f")["attention"] is None
    assert run(shim, "converse", "FAIL:rate_limit", "30").returncode == 4
    assert listed("f")["attention"] == "last turn failed: rate_limit"
    assert run(shim, "converse", "fine now", "30").returncode == 0
    assert listed("f")["attention"] is None


def test_a_killed_worker_needs_attention_while_its_shim_exists(env: Env) -> None:
    launch(env, "k")
    env.tmux("kill-session", "-t", "=k")
    assert until(lambda: listed("k")["state"] == "gone")
    assert listed("k")["attention"] == "gone while its shim still exists"


def test_a_launch_past_the_timeout_needs_attention(env: Env) -> None:
    # a pane that never starts Claude Code: its meta was written long ago and no session_start came
    env.add_worker("stuck", [])
    assert csd("list", "--json").returncode == 0
    row = listed("stuck")
    assert row["state"] == "launching"
    assert row["attention"].startswith("launching for ") and "longer than CSD_LAUNCH_TIMEOUT (30s)" in row["attention"]


def test_retrying_api_calls_need_attention(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_RETRY_SECONDS", "0.3")
    shim = launch(env, "r")
    assert run(shim, "send", "RETRY:2\nHANG").returncode == 0
    assert until(lambda: listed("r")["attention"] == "retrying API calls (attempt 2)")


def test_idle_with_background_tasks_that_never_reported_back(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_BG_REPORT_TIMEOUT", "0.5")
    shim = launch(env, "b")
    assert run(shim, "converse", "BG:600", "30").returncode == 0
    row = until(lambda: (r := listed("b"))["attention"] and r)
    assert row["state"] == "idle" and row["bg_running"] == 1
    assert row["attention"] == "idle with 1 background task that never reported back"


async def test_watch_puts_attention_rows_first_and_a_launch_timeout_arrives_by_the_clock(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    shim_a = launch(env, "a-fine")
    shim_z = launch(env, "z-failed")
    assert run(shim_a, "converse", "hello", "30").returncode == 0
    assert run(shim_z, "converse", "FAIL:server_error", "30").returncode == 4
    monkeypatch.setenv("CSD_LAUNCH_TIMEOUT", "1")  # for the watch (the launches above took their time)
    console = Console(file=StringIO(), width=200, color_system=None, force_terminal=True)
    redraws, ticks = Redraws(), Redraws()
    task = asyncio.create_task(watch("", console, on_redraw=redraws, on_tick=ticks))
    _, rows = await redraws.until(lambda rows: len(rows) == 2 and all(r.state == "idle" for r in rows))
    table = text_of(console)
    last = table[table.rindex("csd workers (2)"):]
    assert last.index("z-failed") < last.index("a-fine")  # the failed worker on top
    assert "last turn failed: server_error" in last and "api_error" in last
    assert "2 idle · 1 needs attention" in last
    # time in state ticks without any event: a clock redraw of the known rows
    await ticks.until(lambda rows: True)
    # a worker whose launch started now passes CSD_LAUNCH_TIMEOUT (1 s) by the clock alone: a full redraw
    mark = len(redraws.calls)
    env.add_worker("m-slow", [], meta_extra={"started_at": _now()})
    await redraws.until(lambda rows: any(r.name == "m-slow" and (r.attention or "").startswith("launching") for r in rows),
                        after=mark)
    assert await stop_watch(task) == 0


def _now() -> str:
    from csd.workers import now_iso

    return now_iso()


# ---- watch --notify (plain rows: no terminal), as a separate process


NOTIFY_LOG = 'printf "%s|%s|%s|%s\\n" "$CSD_WORKER_NAME" "$CSD_WORKER_STATE" "$CSD_WORKER_REASON" "$CSD_WORKER_REPLY" >> '


def start_watch(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "csd", "watch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out, err


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_notify_runs_once_per_transition_with_the_environment(env: Env) -> None:
    shim = launch(env, "n")
    log = env.root / "notified.log"
    proc = start_watch("--notify", NOTIFY_LOG + str(log))
    try:
        assert proc.stdout is not None
        assert "\tn\tidle\t" in proc.stdout.readline()  # watching: the baseline is taken
        assert run(shim, "converse", "REPLY:first line\nsecond line", "30").returncode == 0
        until(lambda: len(lines_of(log)) >= 1)
        assert run(shim, "converse", "FAIL:rate_limit", "30").returncode == 4
        until(lambda: len(lines_of(log)) >= 2)
        assert run(shim, "converse", "REPLY:ok again", "30").returncode == 0
        until(lambda: len(lines_of(log)) >= 3)
        env.tmux("kill-session", "-t", "=n")
        until(lambda: len(lines_of(log)) >= 4)
        while proc.stdout.readline().split("\t")[1:3] != ["n", "gone"]:
            pass  # watch has seen it gone (terminated on the way: SIGHUP gives a session_end)
        # each transition announced once; the kill once, though its reason went from terminated to gone
        assert lines_of(log)[:3] == [
            "n|idle||first line",
            f"n|idle|last turn failed: rate_limit|{API_ERROR_TEXT['rate_limit']}",
            "n|idle||ok again",
        ]
        (killed,) = lines_of(log)[3:]
        assert killed in ("n|terminated|terminated while its shim still exists|",
                          "n|gone|gone while its shim still exists|")
    finally:
        stop(proc)


def test_a_failing_notify_command_is_reported_once_and_watch_goes_on(env: Env) -> None:
    shim = launch(env, "x")
    proc = start_watch("--notify", "exit 3")
    try:
        assert proc.stdout is not None
        assert "\tx\tidle\t" in proc.stdout.readline()
        for i in range(2):
            assert run(shim, "converse", f"turn {i}", "30").returncode == 0
            assert "\tx\tworking\t" in proc.stdout.readline()
            assert "\tx\tidle\tstop" in proc.stdout.readline()  # watch goes on
        assert proc.poll() is None
    finally:
        _, err = stop(proc)
    assert err.count("--notify command 'exit 3' failed (exit status 3)") == 1, err
