"""The state machine: the documented table is the code's table, and folds give the documented states."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from csd.events import EVENT_NAMES, parse_line
from csd.states import DIED, STATES, TRANSITIONS, State, fold

ROOT = Path(__file__).resolve().parent.parent


def ev(name: str, n: int = 1, **fields: object):
    return parse_line(json.dumps({"ts": "2026-11-25T00:00:00Z", "event": name, **fields}), n)


def seq(*names: str | tuple[str, dict]):
    out = []
    for i, item in enumerate(names, 1):
        name, fields = (item, {}) if isinstance(item, str) else item
        out.append(ev(name, i, **fields))
    return out


def test_statemachine_md_table_equals_code_table() -> None:
    text = (ROOT / "statemachine.md").read_text()
    rows = re.findall(r"^\| (\w+) \| ([^|]+?) \| (\w+) \|$", text, re.M)
    documented = [(a, b.strip(), c) for a, b, c in rows if a != "from"]
    code = [(r.source.value, r.label, r.dest.value) for r in TRANSITIONS]
    assert documented == code


def test_statemachine_md_has_a_paragraph_per_state() -> None:
    text = (ROOT / "statemachine.md").read_text()
    for state in STATES:
        assert f"**{state}**" in text


def test_every_table_event_is_a_known_event_or_died() -> None:
    assert {r.event for r in TRANSITIONS} <= set(EVENT_NAMES) | {DIED}


@pytest.mark.parametrize(
    ("events", "alive", "state"),
    [
        ([], True, "launching"),
        (["session_start"], True, "idle"),
        (["session_start", "user_prompt_submit"], True, "working"),
        (["session_start", "user_prompt_submit", "pre_tool_use", "post_tool_use"], True, "working"),
        (["session_start", "user_prompt_submit", "stop"], True, "idle"),
        (["session_start", "user_prompt_submit", "stop", "session_end"], True, "terminated"),
        (["session_start", "user_prompt_submit"], False, "gone"),
        (["session_start", "session_end"], False, "gone"),
        ([], False, "gone"),
    ],
)
def test_fold(events: list[str], alive: bool, state: str) -> None:
    assert fold(seq(*events), alive=alive).state == state


def test_duplicate_stop_and_stop_while_idle_change_nothing() -> None:
    w = fold(seq("session_start", "user_prompt_submit", "stop", "stop", "stop"))
    assert w.state == "idle" and w.turns == 1


def test_a_prompt_queued_while_busy_does_not_restart_the_turn() -> None:
    """Claude Code's queued user_prompt_submit carries the running turn's prompt_id; one stop ends it."""
    w = fold(seq("session_start", ("user_prompt_submit", {"prompt_id": "p1"}), ("user_prompt_submit", {"prompt_id": "p1"}),
                 ("stop", {"prompt_id": "p1"})))
    assert w.state == "idle" and w.turns == 1


def test_background_tasks_are_counted_and_tool_events_while_idle_stay_idle() -> None:
    w = fold(seq("session_start", "user_prompt_submit", ("stop", {"bg_running": 1}), "pre_tool_use", "post_tool_use"))
    assert w.state == "idle" and w.bg_running == 1 and not w.settled
    w.feed(ev("user_prompt_submit", 10, prompt="<task-notification>done</task-notification>"))
    assert w.state == "working"
    w.feed(ev("stop", 11, bg_running=0))
    assert w.settled


def test_idle_prompt_notification_ends_a_turn_that_had_no_stop() -> None:
    w = fold(seq("session_start", "user_prompt_submit", ("notification", {"notification_type": "other"})))
    assert w.state == "working"
    w.feed(ev("notification", 5, notification_type="idle_prompt"))
    assert w.state == "idle"


def test_compact_does_not_end_a_turn_and_clear_passes_through_terminated() -> None:
    w = fold(seq("session_start", "user_prompt_submit", "pre_compact", ("session_start", {"source": "compact"})))
    assert w.state == "working"  # compaction in the middle of a turn
    w = fold(seq("session_start", "user_prompt_submit", "stop", ("pre_compact", {"trigger": "manual"})))
    assert w.state == "working"  # /compact at the prompt is a turn of its own...
    w.feed(ev("subagent_stop", 5))
    w.feed(ev("session_start", 6, source="compact"))
    assert w.state == "idle"  # ...ended by its session_start
    w = fold(seq("session_start", ("session_end", {"reason": "clear"})))
    assert w.state == "idle"  # /clear is not an exit
    w.feed(ev("session_start", 3, source="clear"))
    assert w.state == "idle"
    assert fold(seq("session_start", ("session_end", {"reason": "prompt_input_exit"}))).state == "terminated"


def test_unknown_events_are_kept_as_last_event() -> None:
    w = fold(seq("session_start", "brand_new_event"))
    assert w.state == "idle" and w.last_event is not None and w.last_event.name == "brand_new_event"


def test_gone_is_final() -> None:
    w = fold(seq("session_start"), alive=False)
    w.feed(ev("session_start", 5))
    assert w.state == State.GONE


AGENT = ("post_tool_use", {"tool": "Agent", "tool_response": {"isAsync": True, "status": "async_launched", "agentId": "a1"}})
NOTE = ("user_prompt_submit", {"prompt": "<task-notification>\n<task-id>a1</task-id>\n<status>completed</status>", "prompt_id": "p2"})


@pytest.mark.parametrize(
    "order",
    [
        # (a) the agent is still running when the turn ends
        [AGENT, "subagent_stop", ("stop", {"bg_running": 1}), NOTE, "stop"],
        # (b) the agent finished first: the stop lists no background task, yet its report comes later
        [AGENT, "subagent_stop", ("stop", {"bg_running": 0}), NOTE, "stop"],
    ],
    ids=["running-at-stop", "finished-before-stop"],
)
def test_settled_only_after_the_background_agent_reported(order: list) -> None:
    """Orders seen from the real Claude Code: settled must not come before the task-notification turn."""
    w = fold(seq("session_start", ("user_prompt_submit", {"prompt_id": "p1"}), *order[:3]))
    assert w.state == "idle" and not w.settled
    w.feed(ev(NOTE[0], 20, **NOTE[1]))
    assert w.state == "working" and not w.settled
    w.feed(ev("stop", 21))
    assert w.settled


def test_a_report_absorbed_into_the_running_turn_settles_with_its_one_stop() -> None:
    """(c) the notification arrives while the launching turn still runs: one stop ends both."""
    w = fold(seq("session_start", ("user_prompt_submit", {"prompt_id": "p1"}), AGENT, "subagent_stop",
                 ("user_prompt_submit", {**NOTE[1], "prompt_id": "p1"})))
    assert w.state == "working"
    w.feed(ev("stop", 9))
    assert w.settled


def test_folding_from_the_last_anchor_gives_the_state_of_the_whole_log() -> None:
    """What lets status read only a log's tail: for any order of events, the fold of everything from the
    last anchor (states.is_anchor) equals the fold of the whole log."""
    import random

    from csd.states import is_anchor

    kinds = [("session_start", {}), ("session_start", {"source": "compact"}), ("user_prompt_submit", {}),
             ("pre_tool_use", {}), ("post_tool_use", {}), ("stop", {}), ("stop", {"bg_running": 1}),
             ("notification", {"notification_type": "idle_prompt"}), ("pre_compact", {}), ("subagent_stop", {}),
             ("session_end", {}), ("session_end", {"reason": "clear"})]
    rng = random.Random(7)
    for _ in range(2000):
        events = [ev(name, i, **fields) for i, (name, fields) in enumerate(rng.choices(kinds, k=rng.randint(1, 12)), 1)]
        anchors = [i for i, e in enumerate(events) if is_anchor(e.name, e.data)]
        if not anchors:
            continue
        tail_events = events[anchors[-1]:]
        whole, tail = fold(events), fold(tail_events)
        assert tail.state == whole.state, [e.name for e in events]
        # bg_running is what the last stop reported (reset by a new session or an exit): the same once
        # the tail has its own stop, or starts with a session boundary
        if tail_events[0].name != "user_prompt_submit" or any(e.name == "stop" for e in tail_events):
            assert tail.bg_running == whole.bg_running, [e.name for e in events]


def test_the_table_lookup_and_the_transitions_machine_fold_alike() -> None:
    """One table, run two ways: the plain lookup the read side and the waiters use, and the transitions
    machine. On random logs (every event kind and guard variant, liveness lost or not, every initial
    state) both give the same worker."""
    import random
    import sys

    kinds = [("session_start", {}), ("session_start", {"source": "compact"}), ("user_prompt_submit", {}),
             ("pre_tool_use", {}), ("post_tool_use", {}), ("stop", {}), ("stop", {"bg_running": 1}), ("stop_failure", {}),
             ("notification", {"notification_type": "idle_prompt"}), ("notification", {}), ("pre_compact", {}),
             ("subagent_stop", {}), ("session_end", {}), ("session_end", {"reason": "clear"})]
    rng = random.Random(13)
    for _ in range(3000):
        events = [ev(name, i, **fields) for i, (name, fields) in enumerate(rng.choices(kinds, k=rng.randint(0, 15)), 1)]
        alive, initial = rng.random() < 0.8, rng.choice(list(State))
        pure, machine = fold(events, alive, initial), fold(events, alive, initial, machine=True)
        assert pure.machine is None and machine.machine is not None
        seen = [e.name for e in events]
        for attr in ("state", "bg_running", "bg_pending", "compacting", "turns", "turn_end", "turn_start", "state_event", "outcome", "settled"):
            assert getattr(pure, attr) == getattr(machine, attr), (attr, initial, alive, seen)
    assert "transitions" in sys.modules  # the machine really ran
