"""Cost and tokens per worker: csd's statusLine command (hook.py --statusline) keeps a cost file per worker;
status/list --json show ``cost_usd`` and ``tokens``, ``csd list`` a COST column. Over real tmux with the
simulated worker, which runs the statusLine command as 2.1.330 does (start-up, ~0.3 s after each Stop, after
/clear and /compact) and writes usage on its assistant lines and cost-state lines at session ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from csd import hook
from csd.sim.session import PRICE_INPUT_USD, PRICE_OUTPUT_USD
from support import Env, csd, launch, listed, until

HOOK = str(Path(hook.__file__).resolve())


def transcript_figures(*paths: str) -> tuple[float, dict[str, int]]:
    """The cost (at the simulated model's prices) and tokens of transcripts, each API message once."""
    tokens = {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
    cost, seen = 0.0, set()
    for path in paths:
        for text in Path(path).read_text().splitlines():
            line = json.loads(text)
            msg = line.get("message") if line.get("type") == "assistant" else None
            if not msg or msg["id"] in seen:
                continue
            seen.add(msg["id"])
            u = msg["usage"]
            tokens["input"] += u["input_tokens"]
            tokens["output"] += u["output_tokens"]
            tokens["cache_read"] += u.get("cache_read_input_tokens", 0)
            tokens["cache_creation"] += u.get("cache_creation_input_tokens", 0)
            cost += u["input_tokens"] * PRICE_INPUT_USD + u["output_tokens"] * PRICE_OUTPUT_USD
    return round(cost, 6), tokens


def converse(shim: Path, prompt: str) -> str:
    proc = subprocess.run([str(shim), "converse", prompt, "30"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_cost_and_tokens_after_two_turns_and_kept_across_clear(env: Env) -> None:
    shim = launch(env, "c")
    first = listed("c")
    assert first["tokens"] == {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
    converse(shim, "one")
    converse(shim, "TOOL:Bash:echo two")  # a tool call: one response on two transcript lines, counted once
    t1 = _transcript(shim)
    # the turn's last transcript lines land ~50 ms after Stop, the statusLine run ~0.3 s after it
    row = until(lambda: (r := listed("c"))["tokens"] == transcript_figures(t1)[1] and r["cost_usd"] and r)
    cost, tokens = transcript_figures(t1)
    assert cost > 0 and tokens["input"] > 0 and tokens["output"] > 0
    assert row["cost_usd"] == pytest.approx(cost, abs=2e-6)

    # /clear: a new session (cost back at 0 in Claude Code's own figure); the worker's figures never drop
    assert subprocess.run([str(shim), "send", "/clear"], capture_output=True).returncode == 0
    assert subprocess.run([str(shim), "wait-for-turn", "30"], capture_output=True).returncode == 0
    after_clear = until(lambda: (r := listed("c"))["session_id"] != row["session_id"] and r)
    assert after_clear["cost_usd"] == row["cost_usd"] and after_clear["tokens"] == tokens
    # as 2.1.330 does, the old transcript ends with a cost-state line holding that session's total
    last = json.loads(Path(t1).read_text().splitlines()[-1])
    assert last["type"] == "cost-state" and last["totalCostUSD"] == pytest.approx(cost, abs=2e-6)

    converse(shim, "three")
    t2 = _transcript(shim)
    assert t2 != t1
    row2 = until(lambda: (r := listed("c"))["tokens"] == transcript_figures(t1, t2)[1] and r["cost_usd"] > row["cost_usd"] and r)
    cost2, tokens2 = transcript_figures(t1, t2)
    assert row2["cost_usd"] == pytest.approx(cost2, abs=4e-6) and row2["cost_usd"] > row["cost_usd"]

    # csd list: the v3 columns first, COST after them
    lines = csd("list", "c").stdout.decode().splitlines()
    assert lines[0].split("\t") == ["STATUS", "TMUX", "SESSION_ID", "SHIM", "CWD", "HOST", "COST"]
    assert lines[1].split("\t")[6] == f"${row2['cost_usd']:.4f}"


def test_compact_adds_to_the_cost_and_keeps_the_tokens(env: Env) -> None:
    shim = launch(env, "k")
    converse(shim, "one")
    cost, tokens = transcript_figures(_transcript(shim))
    before = until(lambda: (r := listed("k"))["tokens"] == tokens and r)
    assert subprocess.run([str(shim), "send", "/compact"], capture_output=True).returncode == 0
    assert subprocess.run([str(shim), "wait-for-turn", "30"], capture_output=True).returncode == 0
    after = until(lambda: (r := listed("k"))["cost_usd"] > before["cost_usd"] and r)
    assert after["tokens"]["input"] >= tokens["input"]


def test_an_older_release_gives_tokens_and_no_cost(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CSD_SIM_RELEASE", "1.0.80")  # the simulator's stand-in for a release without cost
    shim = launch(env, "o")
    converse(shim, "one")
    _, tokens = transcript_figures(_transcript(shim))
    row = until(lambda: (r := listed("o"))["tokens"] == tokens and r)
    assert tokens["input"] > 0 and row["cost_usd"] is None
    assert csd("list", "o").stdout.decode().splitlines()[1].split("\t")[6] == "-"


def _transcript(shim: Path) -> str:
    """The worker's current transcript (the session_start/stop events name it)."""
    out = subprocess.run([str(shim), "read-events"], capture_output=True, text=True).stdout
    paths = [json.loads(line).get("transcript_path") for line in out.splitlines()]
    return [p for p in paths if p][-1]


# ---- the statusLine command itself (a real process, as Claude Code runs it)


def run_statusline(events_file: Path, payload: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-I", "-S", HOOK, "--statusline"], input=json.dumps(payload).encode(),
                          capture_output=True, env={"CSD_EVENTS_FILE": str(events_file)}, timeout=10)


def assistant(msg_id: str, inp: int, out: int, cache_read: int = 0) -> str:
    return json.dumps({"type": "assistant", "message": {"id": msg_id, "usage": {
        "input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": 1}}}) + "\n"


def test_statusline_keeps_per_session_maxima_and_reads_transcripts_on(tmp_path: Path) -> None:
    wdir = tmp_path / "w"
    wdir.mkdir(mode=0o700)
    events = wdir / "sid.events.jsonl"
    events.touch(mode=0o600)
    t1, t2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    t1.write_text(assistant("m1", 100, 10) + assistant("m1", 100, 10) + assistant("m2", 200, 20, 5) + '{"type":"assi')
    proc = run_statusline(events, {"session_id": "A", "transcript_path": str(t1), "cost": {"total_cost_usd": 0.02}})
    assert proc.returncode == 0 and proc.stdout == b""  # the TUI shows no status line
    cost_file = wdir / "sid.cost.json"
    assert os.stat(cost_file).st_mode & 0o777 == 0o600
    with t1.open("a") as f:  # the partial line completes; a new message follows
        f.write('nt"}\n' + assistant("m3", 1, 1))
    run_statusline(events, {"session_id": "A", "transcript_path": str(t1), "cost": {"total_cost_usd": 0.01}})
    t2.write_text(assistant("m9", 7, 3))
    run_statusline(events, {"session_id": "B", "transcript_path": str(t2), "cost": {"total_cost_usd": 0.005}})
    from csd.workers import Cost

    got = Cost.of_sessions(hook.load_costs(str(cost_file)))
    assert got.cost_usd == pytest.approx(0.025)  # A's largest figure (a smaller one never lowers it) + B's
    assert got.tokens == {"input": 308, "output": 34, "cache_read": 5, "cache_creation": 4}
    # no events file (a stopped worker): nothing is made
    events.unlink()
    cost_file.unlink()
    run_statusline(events, {"session_id": "A", "transcript_path": str(t1), "cost": {"total_cost_usd": 1}})
    assert not cost_file.exists()
