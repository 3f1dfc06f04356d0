"""Events files: tolerant parsing and the tail that decides the state."""

from __future__ import annotations

import json
import time
from pathlib import Path

from csd.events import BadLine, parse_lines
from csd.states import fold
from csd.workers import iter_events, read_tail

# The bash v3 hook wrote these five events with these fields.
V3_LINES = [
    '{"ts":"2026-01-01T00:00:00Z","event":"session_start","cwd":"/tmp/p"}',
    '{"ts":"2026-01-01T00:00:01Z","event":"user_prompt_submit"}',
    '{"ts":"2026-01-01T00:00:02Z","event":"pre_tool_use","tool":"Bash","tool_input":{"command":"ls"}}',
    '{"ts":"2026-01-01T00:00:03Z","event":"stop"}',
]


def test_v3_events_parse_with_their_fields() -> None:
    events = list(parse_lines(V3_LINES))
    assert [e.name for e in events] == ["session_start", "user_prompt_submit", "pre_tool_use", "stop"]
    assert events[0].data["cwd"] == "/tmp/p"
    assert events[2].summary() == "Bash: ls"
    assert fold(events).state == "idle"


def test_a_malformed_middle_line_is_reported_and_hides_nothing_after_it() -> None:
    bad: list[BadLine] = []
    lines = [V3_LINES[0], V3_LINES[1], '{"ts":"x","event":"st', "[1,2]", V3_LINES[3]]
    events = list(parse_lines(lines, on_bad=bad.append))
    assert [e.name for e in events] == ["session_start", "user_prompt_submit", "stop"]
    assert [b.line_no for b in bad] == [3, 4]
    assert events[-1].line_no == 5
    assert fold(events).state == "idle"


def test_tail_skips_a_half_written_last_line(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join(V3_LINES[:2]) + "\n" + V3_LINES[3][:20])
    tail = read_tail(p)
    assert tail.line_count == 2 and fold(tail.events).state == "working"


def test_tail_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    tail = read_tail(tmp_path / "none.jsonl")
    assert tail.events == [] and tail.line_count == 0


def test_tail_reads_back_only_to_the_last_anchor_and_numbers_lines(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    lines = [V3_LINES[0]] + [V3_LINES[1], V3_LINES[2], V3_LINES[3]] * 10
    p.write_text("\n".join(lines) + "\n")
    tail = read_tail(p)
    assert [e.line_no for e in tail.events] == [29, 30, 31]
    assert tail.line_count == 31
    assert [e.line_no for e in read_tail(p, min_line=5).events][0] <= 5
    assert len(list(iter_events(p))) == 31


def test_status_fold_of_a_100k_line_log_is_fast_and_exact(tmp_path: Path) -> None:
    """The tail decides: folding 100 000 lines must not replay them all (well under a second)."""
    p = tmp_path / "e.jsonl"
    turn = [
        json.dumps({"ts": "t", "event": "user_prompt_submit", "prompt_id": "p", "prompt": "x" * 50}),
        json.dumps({"ts": "t", "event": "pre_tool_use", "tool": "Bash", "tool_input": {"command": "ls"}}),
        json.dumps({"ts": "t", "event": "post_tool_use", "tool": "Bash"}),
        json.dumps({"ts": "t", "event": "stop", "prompt_id": "p"}),
    ]
    body = [json.dumps({"ts": "t", "event": "session_start"})] + turn * 25000
    p.write_text("\n".join(body[:100000]) + "\n")
    t0 = time.perf_counter()
    tail = read_tail(p)
    state = fold(tail.events).state
    elapsed = time.perf_counter() - t0
    assert tail.line_count == 100000
    assert state == "working"  # line 100000 is post_tool_use of the last turn
    assert len(tail.events) <= 4
    assert elapsed < 1.0, elapsed


def test_tail_without_line_numbers_reads_only_the_end(tmp_path: Path) -> None:
    """Plain status needs no line numbers: the tail is read from the end without counting the file."""
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join(V3_LINES * 3) + "\n")
    tail = read_tail(p, count_lines=False)
    assert tail.line_count == -1 and [e.name for e in tail.events] == ["user_prompt_submit", "pre_tool_use", "stop"]
    assert all(e.line_no == 0 for e in tail.events)
    counted = read_tail(p)
    assert [e.line_no for e in counted.events] == [10, 11, 12] and counted.line_count == 12


def test_tail_for_after_line_reaches_back_to_that_line(tmp_path: Path) -> None:
    p = tmp_path / "e.jsonl"
    p.write_text("\n".join(V3_LINES * 3) + "\n")
    tail = read_tail(p, min_line=3)
    assert tail.events[0].line_no == 2 and tail.line_count == 12
