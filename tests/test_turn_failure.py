"""A turn that ends in an API error (Claude Code's StopFailure): seen at once, exit 4, the outcome kept."""

from __future__ import annotations

import json
import subprocess

import pytest

from csd.events import parse_line
from csd.states import State, fold
from support import Env, csd, launch, popen, status, wait_blocked


def ev(n: int, name: str, **data: object):
    return parse_line(json.dumps({"ts": "2026-11-29T00:00:00Z", "event": name, **data}), n)


def test_stop_failure_ends_a_working_turn_and_keeps_its_error() -> None:
    w = fold([ev(1, "session_start"), ev(2, "user_prompt_submit", prompt="hi"), ev(3, "stop_failure", error="rate_limit")])
    assert w.state == State.IDLE and w.turns == 1 and w.outcome == "api_error"
    assert w.turn_end is not None and w.turn_end.error == "rate_limit"
    # the next turn that ends normally replaces the outcome
    w.feed(ev(4, "user_prompt_submit", prompt="again"))
    w.feed(ev(5, "stop", last_assistant_message="fine"))
    assert (w.state, w.turns, w.outcome) == (State.IDLE, 2, "ok")


def test_stop_failure_without_an_error_field_is_still_an_error() -> None:
    w = fold([ev(1, "session_start"), ev(2, "user_prompt_submit"), ev(3, "stop_failure")])
    assert w.outcome == "api_error" and w.turn_end is not None and w.turn_end.error == "unknown"


@pytest.mark.parametrize("error", ["rate_limit", "server_error", "authentication_failed", "unknown"])
def test_converse_exits_4_at_once_naming_the_error(env: Env, error: str) -> None:
    shim = launch(env, "f")
    proc = subprocess.run([str(shim), "converse", f"FAIL:{error}", "60"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""  # no answer: nothing on stdout
    (line,) = proc.stderr.strip().splitlines()
    assert f"the turn ended in an API error ({error}: " in line and "API Error" in line
    assert status(shim) == "idle"
    st = json.loads(subprocess.run([str(shim), "status", "--json"], capture_output=True, text=True).stdout)
    assert (st["turn_outcome"], st["turn_error"], st["turns"]) == ("api_error", error, 1)
    # the worker takes the next prompt normally, and a good turn clears the outcome
    proc = subprocess.run([str(shim), "converse", "REPLY:recovered"], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "recovered\n"), proc.stderr
    st = json.loads(subprocess.run([str(shim), "status", "--json"], capture_output=True, text=True).stdout)
    assert (st["turn_outcome"], st["turn_error"]) == ("ok", None)


def test_wait_for_turn_prints_the_stop_failure_line_and_exits_4(env: Env) -> None:
    shim = launch(env, "w")
    waiter = popen("--worker", "w", "wait-for-turn", "--after-line", "1", "60")
    wait_blocked(waiter)
    assert subprocess.run([str(shim), "send", "SLEEP:0.3 FAIL:rate_limit"], capture_output=True).returncode == 0
    out, errb = waiter.communicate(timeout=30)
    assert waiter.returncode == 4, errb
    line = json.loads(out)
    assert line["event"] == "stop_failure" and line["error"] == "rate_limit"
    assert "rate limited: wait, then resend the prompt" in errb.decode()
    # already idle after a failed turn: the wait answers at once, with the same code
    proc = subprocess.run([str(shim), "wait-for-turn", "5"], capture_output=True, text=True)
    assert proc.returncode == 4 and json.loads(proc.stdout)["event"] == "stop_failure"


def test_fan_out_any_returns_the_failed_worker_first_and_exits_4(env: Env) -> None:
    bad, good = launch(env, "bad"), launch(env, "good")
    assert subprocess.run([str(good), "send", "SLEEP:30 REPLY:slow"], capture_output=True).returncode == 0
    assert subprocess.run([str(bad), "send", "FAIL:server_error"], capture_output=True).returncode == 0
    proc = csd("wait-for-turn", "--any", "bad", "good", "20")
    assert proc.returncode == 4, proc.stderr
    name, line = proc.stdout.decode().rstrip("\n").split("\t")
    assert name == "bad" and json.loads(line)["event"] == "stop_failure"
    assert "'bad': the turn ended in an API error (server_error" in proc.stderr.decode()


def test_fan_out_all_prints_every_line_and_exits_4_when_one_failed(env: Env) -> None:
    a, b = launch(env, "a"), launch(env, "b")
    assert subprocess.run([str(a), "send", "REPLY:fine"], capture_output=True).returncode == 0
    assert subprocess.run([str(b), "send", "FAIL:authentication_failed"], capture_output=True).returncode == 0
    proc = csd("wait-for-turn", "--all", "a", "b", "20")
    assert proc.returncode == 4, proc.stderr
    rows = dict(r.split("\t", 1) for r in proc.stdout.decode().splitlines())
    assert json.loads(rows["a"])["event"] == "stop" and json.loads(rows["b"])["event"] == "stop_failure"
    assert "needs a login" in proc.stderr.decode()
    # when every reported turn ended normally, 0
    assert subprocess.run([str(b), "converse", "REPLY:ok now"], capture_output=True).returncode == 0
    assert csd("wait-for-turn", "--all", "a", "b", "20").returncode == 0
