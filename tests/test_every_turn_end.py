"""Every way a turn ends, on every release: API errors known only from the transcript, retrying calls, and
replies without prompt_id or last_assistant_message (simulated workers in real tmux)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csd.events import parse_line
from csd.transcript import ApiState, api_state, parse_lines, turn_after
from support import Env, csd, launch, status


def run(shim: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(shim), *args], capture_output=True, text=True, timeout=timeout)


def status_json(shim: Path) -> dict:
    return json.loads(run(shim, "status", "--json").stdout)


def wait_for(what: str, check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    """Until check() is truthy: re-reads a state csd reports (never a sleep standing in for an event)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------- pure parts


def _lines(*objs: dict) -> list[dict]:
    return list(objs)


def test_api_state_counts_the_attempts_of_the_call_in_flight_and_of_a_failed_one() -> None:
    user = {"type": "user", "message": {"role": "user", "content": "go"}}
    req = {"type": "api-request", "id": "r"}
    answer = {"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}}
    failed = {"type": "assistant", "isApiErrorMessage": True, "error": "server_error",
              "message": {"content": [{"type": "text", "text": "API Error: 500"}]}}
    noise = {"type": "last-prompt"}
    assert api_state(reversed([user, req])) == ApiState(1)
    assert api_state(reversed([user, req, req, noise, req])).retrying
    assert api_state(reversed([user, req, req, answer, noise])) == ApiState(0)
    got = api_state(reversed([user, req, req, req, noise, failed, noise]))
    assert (got.attempts, got.error, got.message, got.retrying) == (3, "server_error", "API Error: 500", False)
    # a subagent's lines in the main file (older releases) are not the turn's
    assert api_state(reversed([user, req, req, {**answer, "isSidechain": True}])).attempts == 2


def test_the_turn_after_the_send_is_never_an_earlier_one_even_without_prompt_ids() -> None:
    def user(text: str, **extra: object) -> str:
        return json.dumps({"type": "user", "uuid": text, "message": {"role": "user", "content": text}, **extra})

    def said(text: str, uid: str) -> str:
        return json.dumps({"type": "assistant", "uuid": uid, "message": {"id": uid, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}})

    after_send = [said("late line of the earlier turn", "a0"),
                  user("<task-notification>x</task-notification>", origin={"kind": "task-notification"}), said("bg", "a1"),
                  user("mine"), said("my answer", "a2")]
    turn = turn_after(parse_lines(after_send))
    assert turn is not None and (turn.prompt, turn.complete) == ("mine", True)
    assert turn_after(parse_lines(after_send[:3])) is None  # not written yet: nothing, never the earlier turn


def test_a_stop_may_hide_an_api_error_only_without_a_message_or_with_the_error_text() -> None:
    def stop(**data: object):  # type: ignore[no-untyped-def]
        return parse_line(json.dumps({"ts": "t", "event": "stop", **data}), 1)

    assert stop().may_hide_api_error
    assert stop(last_assistant_message="API Error: Request rejected (429) · rate limited").may_hide_api_error
    assert not stop(last_assistant_message="All tests pass.").may_hide_api_error


# ---------------------------------------------------------------------------------------------- over tmux


@pytest.mark.parametrize("release", ["2.1.40", "2.1.60"])
def test_a_failed_turn_of_a_release_without_stop_failure_exits_4_and_shows_in_status(
    env: Env, monkeypatch: pytest.MonkeyPatch, release: str
) -> None:
    """Before StopFailure (2.1.78) a failed turn fires Stop; only the transcript's synthetic line says it failed."""
    monkeypatch.setenv("CSD_SIM_RELEASE", release)
    shim = launch(env, "old")
    proc = run(shim, "converse", "FAIL:rate_limit", "60")
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "the turn ended in an API error (rate_limit: API Error: Request rejected (429)" in line
    assert "rate limited: wait, then resend the prompt" in line
    st = status_json(shim)
    # these releases write no api-request lines: how many requests the call made is not known
    assert (st["state"], st["turn_outcome"], st["turn_error"], st["attempts"], st["retrying"]) == ("idle", "api_error", "rate_limit", None, False)
    (row,) = [json.loads(x) for x in csd("list", "--json").stdout.decode().splitlines()]
    assert (row["turn_outcome"], row["turn_error"]) == ("api_error", "rate_limit")
    # the waits say so too: the worker is idle, its last turn failed
    wait = run(shim, "wait-for-turn", "5")
    assert wait.returncode == 4 and json.loads(wait.stdout)["event"] == "stop"
    assert "the turn ended in an API error (rate_limit: " in wait.stderr
    fan = csd("wait-for-turn", "--all", "old", "5")
    assert fan.returncode == 4 and "'old': the turn ended in an API error (rate_limit" in fan.stderr.decode()
    # the next good turn is an ordinary one again
    ok = run(shim, "converse", "REPLY:back to normal")
    assert (ok.returncode, ok.stdout) == (0, "back to normal\n"), ok.stderr
    st = status_json(shim)
    assert (st["turn_outcome"], st["turn_error"], st["attempts"]) == ("ok", None, None)


def test_a_retrying_worker_says_so_in_status_and_list(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_RETRY_SECONDS", "0")
    shim = launch(env, "r")
    assert run(shim, "send", "RETRY:2 HANG").returncode == 0
    def retried() -> dict | None:
        st = status_json(shim)
        return st if st["attempts"] == 2 else None

    st = wait_for("status to show the retries", retried)
    assert (st["state"], st["retrying"], st["turn_outcome"]) == ("working", True, None)
    (row,) = [json.loads(x) for x in csd("list", "--json").stdout.decode().splitlines()]
    assert (row["retrying"], row["attempts"]) == (True, 2)
    assert status(shim) == "working"  # plain status is still just the state


def test_after_a_failed_retried_call_status_shows_its_attempts(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_RETRY_SECONDS", "0.05")
    shim = launch(env, "f")
    proc = run(shim, "converse", "RETRY:2 FAIL:server_error", "60")
    assert proc.returncode == 4 and "server_error" in proc.stderr
    st = status_json(shim)
    assert (st["turn_outcome"], st["turn_error"], st["attempts"], st["retrying"]) == ("api_error", "server_error", 3, False)


def test_watch_shows_each_retry_as_the_transcript_changes(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The events file does not change while Claude Code retries: only the transcript's changes (inotify)
    can move the row from attempt 2 to attempt 3."""
    monkeypatch.setenv("CSD_SIM_RETRY_SECONDS", "0.3")
    shim = launch(env, "wr")
    watcher = subprocess.Popen([sys.executable, "-m", "csd", "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        seen: list[str] = []
        for line in watcher.stdout:  # plain rows: one per change
            seen.append(line)
            if "\tidle\t" in line and len(seen) == 1:
                assert run(shim, "send", "RETRY:3 HANG").returncode == 0
            if "API retrying: attempt 3" in line:
                break
        assert any(line.split("\t")[2:] == ["working", "API retrying: attempt 2\n"] for line in seen), seen
        assert seen[-1].split("\t")[1:] == ["wr", "working", "API retrying: attempt 3\n"]
    finally:
        watcher.terminate()
        watcher.communicate(timeout=10)


def test_watch_shows_the_attempts_of_a_failed_call(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_RETRY_SECONDS", "0")
    shim = launch(env, "wf")
    watcher = subprocess.Popen([sys.executable, "-m", "csd", "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        sent = False
        for line in watcher.stdout:
            if "\tidle\t" in line and not sent:
                assert run(shim, "send", "RETRY:1 FAIL:server_error").returncode == 0
                sent = True
            if "stop_failure (server_error) after 2 attempts" in line:
                break
    finally:
        watcher.terminate()
        watcher.communicate(timeout=10)


@pytest.mark.parametrize("release", ["2.1.40", "2.1.112"])
def test_replies_without_prompt_id_are_this_turns_own(env: Env, monkeypatch: pytest.MonkeyPatch, release: str) -> None:
    """2.1.40: no prompt_id, no last_assistant_message; 2.1.112: a message but no prompt_id. The final line lands
    0.3 s after the Stop: converse waits for it, and each converse gets its own turn's reply."""
    monkeypatch.setenv("CSD_SIM_RELEASE", release)
    monkeypatch.setenv("CSD_SIM_TRANSCRIPT_LAG_SECONDS", "0.3")
    shim = launch(env, "o")
    for word in ("first", "second", "third"):
        proc = run(shim, "converse", f"REPLY:the {word} answer")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"the {word} answer\n", "")


def test_a_truncated_reply_is_completed_from_the_transcript(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_RELEASE", "2.1.60")  # no prompt_id either
    shim = launch(env, "t")
    long = "".join(f"{i:05d} " for i in range(600))  # 3600 characters: the hook keeps 2000
    proc = run(shim, "converse", f"REPLY:{long}")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, long.strip() + "\n", "")
    stop = json.loads(run(shim, "read-events", "--type", "stop", "--last", "1").stdout)
    assert "…[truncated " in stop["last_assistant_message"]


def test_a_truncated_reply_the_transcript_cannot_complete_comes_with_a_warning(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_TRANSCRIPT_LAG_SECONDS", "4")  # beyond what converse waits (2 s)
    shim = launch(env, "tw")
    long = "x" * 2500
    proc = run(shim, "converse", f"REPLY:{long}")
    assert proc.returncode == 0
    assert proc.stdout.startswith("x" * 2000) and "…[truncated 500 chars]" in proc.stdout
    (warning,) = proc.stderr.strip().splitlines()
    assert warning.startswith("csd: warning: 'tw': the reply was cut") and "did not complete it" in warning


def test_with_turn_waits_for_the_lagging_transcript_without_prompt_ids(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_RELEASE", "2.1.40")
    monkeypatch.setenv("CSD_SIM_TRANSCRIPT_LAG_SECONDS", "0.3")
    shim = launch(env, "wt")
    assert run(shim, "converse", "REPLY:an earlier turn").returncode == 0
    proc = run(shim, "converse", "--with-turn", "TOOL:Bash:echo tool-ok")
    assert proc.returncode == 0, proc.stderr
    md = proc.stdout
    assert md.startswith("**Prompt:** TOOL:Bash:echo tool-ok") and "an earlier turn" not in md
    assert "**Result:**" in md and md.rstrip().endswith("DONE: tool-ok"), md


def test_no_reply_text_at_all_exits_1_with_the_reason_in_the_diagnostic(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """2.1.40 gives no last_assistant_message, and the transcript's final line comes too late: nothing to print."""
    monkeypatch.setenv("CSD_SIM_RELEASE", "2.1.40")
    monkeypatch.setenv("CSD_SIM_TRANSCRIPT_LAG_SECONDS", "4")
    diag = env.root / "diag.txt"
    monkeypatch.setenv("CSD_CONVERSE_DIAG_FILE", str(diag))
    shim = launch(env, "e")
    proc = run(shim, "converse", "REPLY:too late")
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"csd-diagnostic: {diag}"
    (error,) = lines[1:]
    assert error.startswith("csd: error: 'e' ended its turn with no reply text (the stop event has no last_assistant_message")
    text = diag.read_text()
    assert "## reason\n\nno reply text: the stop event has no last_assistant_message" in text
    assert "## events tail" in text


def test_watch_follows_two_retrying_workers_of_one_directory(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers in one cwd write their transcripts into one directory: one shared watch serves both rows."""
    monkeypatch.setenv("CSD_SIM_RETRY_SECONDS", "0")
    shims = [launch(env, "p1"), launch(env, "p2")]
    watcher = subprocess.Popen([sys.executable, "-m", "csd", "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        retrying: set[str] = set()
        sent = False
        for line in watcher.stdout:
            _, name, state, last = line.rstrip("\n").split("\t")
            if not sent and state == "idle":
                sent = True
                for shim in shims:
                    assert run(shim, "send", "RETRY:2 HANG").returncode == 0
            if last == "API retrying: attempt 2":
                retrying.add(name)
            if retrying == {"p1", "p2"}:
                break
    finally:
        watcher.terminate()
        watcher.communicate(timeout=10)
