"""The simulated worker fails, retries and speaks older releases as Claude Code does (FACTS §7, "Older releases")."""

from __future__ import annotations

from datetime import datetime

from test_simworker import SimHarness, needs_tmux, sim, started, wait_until  # noqa: F401  (sim is a fixture)

from csd.sim.directives import API_ERROR_TEXT


def _ts(line: dict) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def _turn_lines(sim: SimHarness, sid: str) -> list[dict]:
    """The transcript lines from the last user prompt line on."""
    lines = sim.transcript(sid)
    start = max(i for i, x in enumerate(lines) if x.get("type") == "user")
    return lines[start:]


@needs_tmux
def test_a_retried_call_that_fails_writes_one_api_request_line_per_attempt_then_stop_failure(sim: SimHarness) -> None:
    """As 2.1.330 with CLAUDE_CODE_MAX_RETRIES=2 and a 500 on every attempt: three api-request lines, spaced by
    the backoff, no reply; the synthetic isApiErrorMessage line; StopFailure (server_error), never Stop."""
    sid = started(sim, env={"CSD_SIM_RETRY_SECONDS": "0.2"}, events=("SessionStart", "UserPromptSubmit", "Stop", "StopFailure"))["session_id"]
    ups = sim.submit("RETRY:2 FAIL:server_error")
    failure = sim.wait_event("StopFailure")
    assert (failure["error"], failure["prompt_id"]) == ("server_error", ups["prompt_id"])
    assert failure["last_assistant_message"] == API_ERROR_TEXT["server_error"]
    turn = _turn_lines(sim, sid)
    requests = [x for x in turn if x["type"] == "api-request"]
    assert len(requests) == 3 and all(r["querySource"] == "repl_main_thread" for r in requests)
    assert _ts(requests[1]) - _ts(requests[0]) >= 0.18 and _ts(requests[2]) - _ts(requests[1]) >= 0.18
    (answer,) = [x for x in turn if x["type"] == "assistant"]
    assert (answer["isApiErrorMessage"], answer["error"], answer["message"]["model"]) == (True, "server_error", "<synthetic>")
    assert turn.index(answer) > turn.index(requests[-1]) and "requestRef" not in answer
    assert "Stop" not in sim.names()


@needs_tmux
def test_a_call_retried_then_answered_refers_to_its_last_attempt(sim: SimHarness) -> None:
    """As 2.1.330 when only the first attempts fail: the answer's requestRef is the last api-request line's id."""
    sid = started(sim, env={"CSD_SIM_RETRY_SECONDS": "0"})["session_id"]
    sim.submit("RETRY:2 REPLY:fine after all")
    assert sim.wait_event("Stop")["last_assistant_message"] == "fine after all"
    # the answer lands in the transcript just after the Stop hook, as with the real one
    def answered() -> list[dict] | None:
        turn = _turn_lines(sim, sid)
        return turn if any(x["type"] == "assistant" for x in turn) else None

    turn = wait_until("the answer in the transcript", answered)
    requests = [x for x in turn if x["type"] == "api-request"]
    answer = next(x for x in turn if x["type"] == "assistant")
    assert len(requests) == 3 and answer["requestRef"] == requests[-1]["id"]
    assert "isApiErrorMessage" not in answer


@needs_tmux
def test_a_release_before_2_1_47_has_no_prompt_id_no_last_message_and_no_stop_failure(sim: SimHarness) -> None:
    """CSD_SIM_RELEASE=2.1.40: no prompt_id in any payload, no promptId in the transcript, no
    last_assistant_message in Stop, and a failed turn fires Stop; the transcript says which release."""
    env = {"CSD_SIM_RELEASE": "2.1.40", "CSD_SIM_IDLE_SECONDS": "3600"}
    sid = started(sim, env=env, events=("SessionStart", "UserPromptSubmit", "Stop", "StopFailure"))["session_id"]
    ups = sim.submit("REPLY:old answer")
    stop = sim.wait_event("Stop")
    assert "prompt_id" not in ups and "prompt_id" not in stop and "last_assistant_message" not in stop
    sim.submit("FAIL:rate_limit")
    failed = sim.wait_event("Stop", 2)
    assert "last_assistant_message" not in failed and "StopFailure" not in sim.names()
    lines = sim.transcript(sid)
    assert not any("promptId" in x for x in lines)
    assert not any(x["type"] == "api-request" for x in lines)  # 2.1.112 wrote none either
    assert {x["version"] for x in lines if "uuid" in x} == {"2.1.40"}
    assert [x.get("error") for x in lines if x.get("isApiErrorMessage")] == ["rate_limit"]
    assert "Claude Code v2.1.40" in sim.screen()


@needs_tmux
def test_a_release_between_2_1_47_and_2_1_78_fires_stop_with_the_error_text(sim: SimHarness) -> None:
    """Before StopFailure (2.1.78) a failed turn's Stop carries the API error text as its message (a rate
    limit on 2.1.50 said "API Error: Request rejected (429) ..."); prompt_id is still missing (before ~2.1.196)."""
    started(sim, env={"CSD_SIM_RELEASE": "2.1.60"}, events=("SessionStart", "UserPromptSubmit", "Stop", "StopFailure"))
    sim.submit("FAIL:rate_limit")
    stop = sim.wait_event("Stop")
    assert stop["last_assistant_message"] == API_ERROR_TEXT["rate_limit"] and "prompt_id" not in stop
    assert "StopFailure" not in sim.names()


def test_version_follows_the_release(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess

    from test_simworker import SIM_SCRIPT

    out = subprocess.run([str(SIM_SCRIPT), "--version"], capture_output=True, text=True,
                         env={**os.environ, "CSD_SIM_RELEASE": "2.1.112"}).stdout
    assert out == "2.1.112 (Claude Code simulated)\n"
    help_text = subprocess.run([str(SIM_SCRIPT), "--help"], capture_output=True, text=True).stdout
    for piece in ("RETRY:<n>", "CSD_SIM_RELEASE", "CSD_SIM_RETRY_SECONDS", "2.1.196", "2.1.78", "2.1.47"):
        assert piece in help_text
