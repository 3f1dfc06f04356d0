"""The event-driven engine against real simulated workers in real tmux: send, wait-for-turn, converse, follow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import Env, csd, events, launch, popen, status, wait_blocked
from csd.cli import main
from csd.transcript import turns
from csd.transcriptfile import read_transcript


@pytest.fixture(params=["inotify", "poll"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CSD_WATCH_BACKEND", request.param)
    return str(request.param)


def test_converse_returns_this_turns_reply_across_three_turns(env: Env, backend: str) -> None:
    shim = launch(env, "c")
    for i in range(3):
        proc = subprocess.run([str(shim), "converse", f"REPLY:answer number {i}"], capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (0, f"answer number {i}\n"), proc.stderr
    assert status(shim) == "idle"


def test_converse_with_turn_shows_prompt_tool_call_and_result(env: Env) -> None:
    shim = launch(env, "t")
    proc = subprocess.run([str(shim), "converse", "--with-turn", "TOOL:Bash:echo tool-ok; echo second"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    md = proc.stdout
    assert "**Prompt:** TOOL:Bash:echo tool-ok; echo second" in md
    assert "**Tool: Bash**" in md and '"command": "echo tool-ok; echo second"' in md
    assert "**Result:**" in md and "tool-ok\nsecond" in md
    assert events(shim, "pre_tool_use")[0]["tool_input"]["command"] == "echo tool-ok; echo second"
    turn_md = subprocess.run([str(shim), "read-turn"], capture_output=True, text=True).stdout
    assert "**Tool: Bash**" in turn_md


def test_a_stale_stop_never_ends_a_later_wait(env: Env, backend: str) -> None:
    """send, wait, send, wait: the second wait returns the second turn's stop, not the first's."""
    shim = launch(env, "s")
    for i, delay in enumerate(["1.0", "1.5"]):
        assert subprocess.run([str(shim), "send", f"SLEEP:{delay} REPLY:turn {i}"], capture_output=True).returncode == 0
        assert status(shim) == "working"
        proc = subprocess.run([str(shim), "wait-for-turn", "30"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        stop = json.loads(proc.stdout)
        assert stop["event"] == "stop" and stop["last_assistant_message"] == f"turn {i}"
        assert status(shim) == "idle"


def test_wait_for_turn_on_an_idle_worker_returns_at_once_with_its_last_turn_end(env: Env) -> None:
    shim = launch(env, "i")
    assert subprocess.run([str(shim), "converse", "REPLY:one"], capture_output=True).returncode == 0
    proc = subprocess.run([str(shim), "wait-for-turn", "5"], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["last_assistant_message"] == "one"


def test_after_line_only_counts_later_turn_ends(env: Env) -> None:
    shim = launch(env, "a")
    assert subprocess.run([str(shim), "converse", "REPLY:one"], capture_output=True).returncode == 0
    n = len(subprocess.run([str(shim), "read-events"], capture_output=True, text=True).stdout.splitlines())
    proc = subprocess.run([str(shim), "wait-for-turn", "0.5", "--after-line", str(n)], capture_output=True, text=True)
    assert proc.returncode == 1 and "timed out after 0.5s" in proc.stderr and "idle" in proc.stderr
    assert subprocess.run([str(shim), "send", "REPLY:two"], capture_output=True).returncode == 0
    proc = subprocess.run([str(shim), "wait-for-turn", "30", "--after-line", str(n)], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)["last_assistant_message"] == "two"


def test_kill_9_mid_turn_ends_a_running_wait_within_a_second_and_reads_gone(env: Env, backend: str) -> None:
    shim = launch(env, "k")
    assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    waiter = popen("--worker", "k", "wait-for-turn", "60")
    wait_blocked(waiter)
    pid = int(env.tmux("list-panes", "-t", "=k:", "-F", "#{pane_pid}").stdout.strip())
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    out, err = waiter.communicate(timeout=10)
    elapsed = time.monotonic() - t0
    assert waiter.returncode == 3, err
    assert b"gone" in err and elapsed < 1.0 + (0.2 if backend == "poll" else 0), elapsed
    assert status(shim) == "gone"


def test_converse_exits_3_when_the_worker_dies_mid_turn(env: Env) -> None:
    shim = launch(env, "d")
    proc = subprocess.run([str(shim), "converse", "CRASH"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3 and "died during the turn" in proc.stderr
    assert status(shim) == "gone"


def test_a_1mb_prompt_from_stdin_arrives_intact(env: Env) -> None:
    shim = launch(env, "big")
    lines = [f"line {i:06d} " + "abcdefghij" * 9 for i in range(10_000)]
    prompt = "REPLY:got it\n" + "\n".join(lines)
    assert len(prompt.encode()) > 1_000_000
    proc = subprocess.run([str(shim), "converse", "-", "120"], input=prompt.encode(), capture_output=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"got it\n"
    ups = events(shim, "user_prompt_submit")[-1]
    (turn,) = turns(read_transcript(ups["transcript_path"]))
    # over CSD_EXACT_PROMPT_LIMIT it goes as one paste, which Claude Code wraps (and says so): intact inside
    assert f"\n{prompt}\n</pasted_content" in turn.prompt and b"CSD_EXACT_PROMPT_LIMIT" in proc.stderr


def test_paste_end_sequences_inside_a_prompt_cannot_break_out(env: Env) -> None:
    shim = launch(env, "esc")
    hostile = "REPLY:safe\nbefore\x1b[201~\r/exit\rafter\x1b[200~more\x00end"
    proc = subprocess.run([str(shim), "converse", "-"], input=hostile.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"safe\n"
    assert len(events(shim, "user_prompt_submit")) == 1
    assert status(shim) == "idle"  # the /exit inside never ran
    prompt = events(shim, "user_prompt_submit")[0]["prompt"]
    assert "\x1b" not in prompt and "\x00" not in prompt and "before" in prompt and "end" in prompt


def test_send_refuses_unless_idle_and_names_the_next_command(env: Env) -> None:
    shim = launch(env, "r")
    assert subprocess.run([str(shim), "send", "SLEEP:30"], capture_output=True).returncode == 0
    proc = subprocess.run([str(shim), "send", "again"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"cannot send to 'r' while it is working" in proc.stderr and f"{shim} wait-for-turn" in proc.stderr
    assert len(events(shim, "user_prompt_submit")) == 1


def test_empty_and_invalid_utf8_prompts_are_refused(env: Env) -> None:
    shim = launch(env, "u")
    proc = subprocess.run([str(shim), "send", "-"], input=b"\xff\xfeabc", capture_output=True)
    assert proc.returncode == 2 and b"not valid UTF-8" in proc.stderr
    proc = subprocess.run([str(shim), "send", ""], capture_output=True, text=True)
    assert proc.returncode == 2 and "empty prompt" in proc.stderr
    assert events(shim, "user_prompt_submit") == []


def test_two_controllers_sending_at_once_one_wins_the_other_is_told_who_holds_it(env: Env) -> None:
    shim = launch(env, "two")
    # the first sender's Enter is swallowed, so it holds the lock until its retry submits the prompt
    env_slow = {"CSD_SUBMIT_RETRY_INTERVAL": "1.5"}
    first = popen("--worker", "two", "send", "SWALLOW-ENTER first", env=env_slow)
    lock = env.wdir.lock_path(env.wdir.resolve("two").session_id)
    deadline = time.monotonic() + 10
    while not (lock.exists() and lock.read_text().startswith("pid")):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.01)
    second = subprocess.run([str(shim), "send", "second"], capture_output=True, text=True)
    assert second.returncode == 1
    assert f"pid {first.pid} (csd send" in second.stderr and "holds its lock" in second.stderr
    assert first.wait(30) == 0
    assert [e["prompt"] for e in events(shim, "user_prompt_submit")] == ["SWALLOW-ENTER first"]


def test_send_retries_enter_when_the_first_is_swallowed(env: Env) -> None:
    shim = launch(env, "sw")
    proc = subprocess.run([str(shim), "send", "SWALLOW-ENTER hi"], capture_output=True, text=True,
                          env={**os.environ, "CSD_SUBMIT_RETRY_INTERVAL": "0.3"})
    assert proc.returncode == 0, proc.stderr
    assert len(events(shim, "user_prompt_submit")) == 1


def test_send_fails_loudly_when_nothing_confirms(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # a TUI that never becomes ready swallows every Enter (tmux resumes a SIGSTOPped pane, so that can't be used)
    monkeypatch.setenv("CSD_SIM_NOT_READY_SECONDS", "3600")
    shim = launch(env, "nc")
    proc = subprocess.run([str(shim), "send", "hello"], capture_output=True, text=True,
                          env={**os.environ, "CSD_SUBMIT_TIMEOUT": "1", "CSD_SUBMIT_RETRY_INTERVAL": "0.3"})
    assert proc.returncode == 1
    assert "did not confirm the prompt within 1s" in proc.stderr and "4 Enter presses" in proc.stderr
    assert events(shim, "user_prompt_submit") == []


def test_follow_prints_later_lines_and_ends_when_the_worker_is_stopped(env: Env, backend: str) -> None:
    shim = launch(env, "f")
    follower = popen("--worker", "f", "read-events", "--follow", "--last", "1")
    assert follower.stdout is not None
    first = follower.stdout.readline()  # the backlog is printed once the watch is set up
    assert subprocess.run([str(shim), "converse", "REPLY:x"], capture_output=True).returncode == 0
    assert subprocess.run([str(shim), "stop"], capture_output=True).returncode == 0
    out, err = follower.communicate(timeout=10)
    assert follower.returncode == 0, err
    names = [json.loads(line)["event"] for line in [first, *out.splitlines()]]
    assert names[0] == "session_start"  # --last 1 of what was there
    assert names[1:4] == ["user_prompt_submit", "stop", "session_end"]


def test_wait_any_and_all_over_three_workers_with_different_turn_lengths(env: Env, backend: str) -> None:
    shims = {n: launch(env, n) for n in ("f1", "f2", "f3")}
    for name, delay in (("f1", "2"), ("f2", "0.2"), ("f3", "1")):
        assert subprocess.run([str(shims[name]), "send", f"SLEEP:{delay} REPLY:{name}"], capture_output=True).returncode == 0
    proc = csd("wait-for-turn", "--any", "f1", "f2", "f3", "30")
    assert proc.returncode == 0, proc.stderr
    name, line = proc.stdout.decode().strip().split("\t", 1)
    assert name == "f2" and json.loads(line)["last_assistant_message"] == "f2"
    proc = csd("wait-for-turn", "--all", "f1", "f2", "f3", "30")
    assert proc.returncode == 0, proc.stderr
    rows = dict(r.split("\t", 1) for r in proc.stdout.decode().splitlines())
    assert {n: json.loads(v)["last_assistant_message"] for n, v in rows.items()} == {"f1": "f1", "f2": "f2", "f3": "f3"}
    assert all(status(s) == "idle" for s in shims.values())


def test_wait_any_counts_a_gone_worker_and_says_so(env: Env) -> None:
    shims = {n: launch(env, n) for n in ("h1", "h2")}
    for shim in shims.values():
        assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    waiter = popen("wait-for-turn", "--any", "h1", "h2", "30")
    wait_blocked(waiter)
    os.kill(int(env.tmux("list-panes", "-t", "=h2:", "-F", "#{pane_pid}").stdout.strip()), signal.SIGKILL)
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0, err
    name, line = out.decode().strip().split("\t", 1)
    assert name == "h2" and json.loads(line)["event"] == "gone"


def test_slash_commands_compact_and_clear(env: Env) -> None:
    """/compact fires no user_prompt_submit and no stop; /clear starts a new session id. Both are driven by send."""
    shim = launch(env, "sl")
    assert subprocess.run([str(shim), "converse", "REPLY:before"], capture_output=True).returncode == 0
    assert subprocess.run([str(shim), "send", "/compact"], capture_output=True).returncode == 0
    proc = subprocess.run([str(shim), "wait-for-turn", "30"], capture_output=True, text=True)
    end = json.loads(proc.stdout)
    assert (end["event"], end["source"]) == ("session_start", "compact")
    assert subprocess.run([str(shim), "send", "/clear"], capture_output=True).returncode == 0
    proc = subprocess.run([str(shim), "wait-for-turn", "30"], capture_output=True, text=True)
    assert status(shim) == "idle"
    conv = subprocess.run([str(shim), "converse", "REPLY:after clear"], capture_output=True, text=True)
    assert conv.stdout == "after clear\n", conv.stderr
    starts = events(shim, "session_start")
    assert [s["source"] for s in starts] == ["startup", "compact", "clear"]
    assert starts[2]["session_id"] != starts[0]["session_id"]  # a new session id, still this worker's file


def test_fan_out_wait_rejects_an_unknown_name_at_once(env: Env) -> None:
    launch(env, "g1")
    proc = csd("wait-for-turn", "--all", "g1", "g2", "30")
    assert proc.returncode == 1 and b"unknown worker 'g2'" in proc.stderr


def test_settled_waits_out_a_background_task(env: Env, backend: str) -> None:
    shim = launch(env, "bg")
    assert subprocess.run([str(shim), "send", "BG:1.5"], capture_output=True).returncode == 0
    first = json.loads(subprocess.run([str(shim), "wait-for-turn", "30"], capture_output=True, text=True).stdout)
    assert first["event"] == "stop" and first["bg_running"] == 1
    js = json.loads(subprocess.run([str(shim), "status", "--json"], capture_output=True, text=True).stdout)
    assert js["bg_running"] == 1 and js["settled"] is False
    proc = subprocess.run([str(shim), "wait-for-turn", "30", "--settled"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    settled = json.loads(proc.stdout)
    assert settled["event"] == "stop" and settled["bg_running"] == 0
    ups = events(shim, "user_prompt_submit")
    assert len(ups) == 2 and ups[1]["prompt"].startswith("<task-notification>")


def test_wait_for_turn_timeout_says_what_the_worker_was_doing(env: Env) -> None:
    shim = launch(env, "to")
    assert subprocess.run([str(shim), "send", "TOOL:Bash:sleep 20"], capture_output=True).returncode == 0
    proc = subprocess.run([str(shim), "wait-for-turn", "0.5"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "timed out after 0.5s" in proc.stderr and "working" in proc.stderr and "Bash: sleep 20" in proc.stderr


def test_converse_timeout_writes_the_diagnostic(env: Env, tmp_path: Path) -> None:
    shim = launch(env, "dg")
    diag = tmp_path / "diag.md"
    proc = subprocess.run([str(shim), "converse", "HANG", "0.5"], capture_output=True, text=True,
                          env={**os.environ, "CSD_CONVERSE_DIAG_FILE": str(diag)})
    assert proc.returncode == 1 and f"csd-diagnostic: {diag}" in proc.stderr
    text = diag.read_text()
    for section in ("## process tree", "## pane", "## transcript tail", "## events tail"):
        assert section in text
    assert "HANG" in text


def test_python_api_send_wait_converse(env: Env) -> None:
    """The API the CLI is a client of, used directly."""
    import asyncio

    from csd.fleet import Fleet

    async def scenario() -> tuple[str, str, str]:
        async with Fleet() as sup:
            meta = await sup.launch("py", str(env.root))
            reply = await sup.converse("py", "REPLY:from python")
            await sup.send("py", "SLEEP:0.2 REPLY:later")
            async with asyncio.timeout(30):
                stop = await sup.wait_for_turn("py")
            state = await sup.status("py")
            assert [e.name for e in sup.read_events("py")][-2:] == ["user_prompt_submit", "stop"]
            assert "**Prompt:** SLEEP:0.2 REPLY:later" in sup.read_turn("py")
            await sup.stop("py")
            return reply.text(), stop.data["last_assistant_message"], f"{meta.tmux_name}:{state}"

    assert asyncio.run(scenario()) == ("from python", "later", "py:idle")
    assert env.wdir.metas() == []
