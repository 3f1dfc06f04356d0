"""The real Claude Code's cost and tokens, as csd's statusLine command records them (hook.py --statusline).

The mock's model is priced by Claude Code itself (FACTS "Cost"), so a real turn costs a little; the figure
list --json shows must be the one Claude Code writes into the transcript's cost-state line when the session
ends (/clear), and the tokens the sum of the transcript's usage, each API message once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from test_api_failures import old_real  # noqa: F401  (the older-release world)


def row(real, name: str) -> dict:  # type: ignore[no-untyped-def]
    proc = real.csd("list", "--json", name)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def until(real, name: str, check, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def]
    """The statusLine command runs ~0.3 s after the Stop hook: wait for its figures."""
    deadline = time.monotonic() + timeout
    while True:
        got = row(real, name)
        if check(got):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.05)


def cost_states(path: str, timeout: float = 30) -> list[dict]:
    """The transcript's cost-state lines, once there is one. Claude Code writes the old session's line at /clear with
    no hook or event marking it: it may land after the new session's SessionStart (it did once in a full run)."""
    deadline = time.monotonic() + timeout
    while True:
        states = [json.loads(t) for t in Path(path).read_text().splitlines() if '"cost-state"' in t]
        if states:
            return states
        assert time.monotonic() < deadline, f"no cost-state line in {path} after {timeout:g}s"
        time.sleep(0.05)


def usage_of(path: str) -> dict[str, int]:
    tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
    seen = set()
    for text in Path(path).read_text().splitlines():
        line = json.loads(text)
        msg = line.get("message") if line.get("type") == "assistant" else None
        if not isinstance(msg, dict) or not isinstance(msg.get("usage"), dict) or msg.get("id") in seen:
            continue
        seen.add(msg.get("id"))
        u = msg["usage"]
        tokens["input"] += u.get("input_tokens", 0)
        tokens["output"] += u.get("output_tokens", 0)
        tokens["cache_read"] += u.get("cache_read_input_tokens", 0)
        tokens["cache_creation"] += u.get("cache_creation_input_tokens", 0)
    return tokens


def test_the_cost_of_a_real_turn_in_list_json_kept_across_clear(real) -> None:  # type: ignore[no-untyped-def]
    real.worker("cost")
    first = real.shim("cost", "converse", "hello cost", "60")
    assert first.returncode == 0, first.stderr
    (stop,) = real.events("cost", "stop")[-1:]
    transcript = stop["transcript_path"]
    # the turn's last transcript lines land 30-70 ms after Stop, the statusLine run ~0.3 s after it
    got = until(real, "cost", lambda r: r["cost_usd"] and r["tokens"]["output"] and r["tokens"] == usage_of(transcript))
    tokens = got["tokens"]
    assert tokens["input"] > 0 and tokens["output"] > 0
    assert got["cost_usd"] > 0
    cost_file = real.workers / f"{got['first_session_id']}.cost.json"
    assert os.stat(cost_file).st_mode & 0o777 == 0o600

    # /clear ends the session: Claude Code writes that session's total as a cost-state line; csd's figure,
    # taken from the statusLine, is the same, and it does not drop with the new session at 0
    assert real.shim("cost", "send", "/clear").returncode == 0
    assert real.shim("cost", "wait-for-turn", "60").returncode == 0
    after = until(real, "cost", lambda r: r["session_id"] != got["session_id"])
    states = cost_states(transcript)
    assert abs(states[-1]["totalCostUSD"] - got["cost_usd"]) < 1e-6
    assert after["cost_usd"] == got["cost_usd"] and after["tokens"] == tokens

    second = real.shim("cost", "converse", "hello again", "60")
    assert second.returncode == 0, second.stderr
    both = until(real, "cost", lambda r: r["cost_usd"] > got["cost_usd"])
    assert all(both["tokens"][k] >= tokens[k] for k in tokens) and both["tokens"]["input"] > tokens["input"]
    line = real.csd("list", "cost").stdout.splitlines()[1].split("\t")
    assert line[6] == f"${both['cost_usd']:.4f}"  # after the v3 columns and HOST



def test_an_older_release_cost_and_tokens(old_real) -> None:  # type: ignore[no-untyped-def]
    """2.1.112 (CSD_E2E_CLAUDE_OLD; skipped without it): tokens summed from its transcript, and its cost."""
    old_real.launch("oc")
    first = old_real.shim("oc", "converse", "hello old cost", "60")
    assert first.returncode == 0, first.stderr
    transcript = old_real.events("oc", "stop")[-1]["transcript_path"]
    got = until(old_real, "oc", lambda r: r["tokens"]["output"] and r["tokens"] == usage_of(transcript))
    assert got["tokens"]["input"] > 0
    # observed: 2.1.112's statusLine payload carries the cost too
    assert until(old_real, "oc", lambda r: r["cost_usd"])["cost_usd"] > 0
