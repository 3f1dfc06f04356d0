"""Worker states, the TRANSITIONS table, and the per-worker ``transitions`` machine that folds events into a state.

One table, two ways to run it: the ``transitions`` machine (``Worker(machine=True)``: what a supervisor
that drives workers uses), and a plain lookup in the same table (the default: what the read side and the
waiters use, because importing ``transitions`` costs a short command most of its start-up and a waiting
process megabytes). A property test (tests/test_states.py) folds random event logs both ways and
requires the same worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from csd.clock import epoch, now_iso
from csd.errors import NotRunning
from csd.events import SYNTHETIC_PROMPT_PREFIX, TURN_ENDS, Event
from csd.value import Value


class State(StrEnum):
    LAUNCHING = "launching"
    IDLE = "idle"
    WORKING = "working"
    TERMINATED = "terminated"
    GONE = "gone"


STATES: tuple[str, ...] = tuple(s.value for s in State)
#: States in which the controller may not treat the worker's turn as over.
BUSY = frozenset({State.LAUNCHING, State.WORKING})
#: States in which the worker cannot take a prompt any more (a command that needs one exits
#: errors.NOT_RUNNING, 3).
ENDED = frozenset({State.TERMINATED, State.GONE})

#: The liveness trigger: the tmux session or the worker process no longer exists.
DIED = "died"


class Row(Value):
    _fields = ("source", "event", "dest", "guard")
    source: State
    event: str
    dest: State
    guard: str  # name of a Worker method; the row applies only when it returns True ("": always)

    def __init__(self, source: State, event: str, dest: State, guard: str = "") -> None:
        self._set(source=source, event=event, dest=dest, guard=guard)

    @property
    def label(self) -> str:
        return f"{self.event} [{GUARD_TEXT[self.guard]}]" if self.guard else self.event


# Guards, as statemachine.md writes them.
GUARD_TEXT = {
    "is_idle_prompt": "idle_prompt",
    "ends_turn_on_start": "not compact, or ends a /compact",
    "not_clear": "reason is not clear",
}

L, I, W, T, G = State.LAUNCHING, State.IDLE, State.WORKING, State.TERMINATED, State.GONE

# Every transition a worker can take. An event with no row for the current state changes nothing
# (it is still recorded as the last event). statemachine.md carries the same table; a test keeps them equal.
TRANSITIONS: tuple[Row, ...] = (
    Row(L, "session_start", I),
    Row(L, "user_prompt_submit", W),
    Row(L, "stop", I),
    Row(L, "stop_failure", I),
    Row(L, "session_end", T, "not_clear"),
    Row(L, DIED, G),
    Row(I, "user_prompt_submit", W),
    Row(I, "pre_compact", W),
    Row(I, "session_start", I),
    Row(I, "stop", I),
    Row(I, "stop_failure", I),
    Row(I, "session_end", T, "not_clear"),
    Row(I, DIED, G),
    Row(W, "stop", I),
    Row(W, "stop_failure", I),
    Row(W, "notification", I, "is_idle_prompt"),
    Row(W, "session_start", I, "ends_turn_on_start"),
    Row(W, "session_end", T, "not_clear"),
    Row(W, DIED, G),
    Row(T, "session_start", I),
    Row(T, "user_prompt_submit", W),
    Row(T, DIED, G),
)


class Worker:
    """The model a ``transitions.Machine`` drives: state plus what the guards and the CLI need."""

    state: str  # set by the machine, or by _step

    def __init__(self, initial: State = State.LAUNCHING, machine: bool = False) -> None:
        self.prompt_id: str | None = None  # prompt of the turn now running (or last run)
        self.bg_running = 0  # background tasks running at the last stop
        # background agents launched (post_tool_use: isAsync + agentId) whose <task-notification> prompt has
        # not arrived yet: Claude Code can end the turn with an empty background_tasks when the agent finished
        # first, and only then start the notification's turn
        self.bg_pending: set[str] = set()
        self.compacting = False  # a /compact typed at the prompt is running
        self.turns = 0  # turns ended by a stop
        self.last_event: Event | None = None
        self.turn_end: Event | None = None  # the last stop/stop_failure/session_end that ended a turn
        self.turn_start: Event | None = None  # the user_prompt_submit that began the current/last turn
        self.state_event: Event | None = None  # the event that moved the machine into its state
        self.started: Event | None = None  # the last session_start (a new process, resume or /clear)
        self.state = initial.value
        self.machine: object | None = None
        if machine:
            self._attach_machine(initial)

    def _attach_machine(self, initial: State) -> None:
        from transitions import Machine

        self.machine = machine = Machine(
            model=self,
            states=STATES,
            initial=initial.value,
            auto_transitions=False,
            ignore_invalid_triggers=True,
            send_event=True,
        )
        for row in TRANSITIONS:
            machine.add_transition(
                row.event, row.source.value, row.dest.value, conditions=[row.guard] if row.guard else None
            )

    # -- guards (transitions calls them with the EventData of the trigger)
    def not_clear(self, ed: object) -> bool:
        # /clear ends the session and at once starts a new one in the same process: not an exit
        return ed.kwargs["event"].data.get("reason") != "clear"  # type: ignore[attr-defined]

    def is_idle_prompt(self, ed: object) -> bool:
        return ed.kwargs["event"].notification_type == "idle_prompt"  # type: ignore[attr-defined]

    def ends_turn_on_start(self, ed: object) -> bool:
        # /compact at the prompt runs as a turn of its own that ends with session_start (source compact)
        # and no stop; a compaction in the middle of a turn (auto) does not end that turn
        return ed.kwargs["event"].source != "compact" or self.compacting  # type: ignore[attr-defined]

    def _fire(self, trigger: str, event: Event | None = None) -> None:
        """Take the first row of the table for (state, trigger) whose guard holds, as the machine does."""
        if self.machine is not None:
            self.trigger(trigger, event=event)  # type: ignore[attr-defined]
            return
        data = _Trigger(event)
        for row in ROWS.get((self.state, trigger), ()):
            if not row.guard or getattr(self, row.guard)(data):
                self.state = row.dest.value
                return

    # -- feeding
    def feed(self, event: Event) -> None:
        """Apply one event: bookkeeping first, then the machine's trigger."""
        self.last_event = event
        name = event.name
        if name == "user_prompt_submit":
            self.prompt_id = event.prompt_id
            self.turn_start = event
            prompt = event.data.get("prompt")
            if self.bg_pending and isinstance(prompt, str) and prompt.startswith(SYNTHETIC_PROMPT_PREFIX):
                self.bg_pending = {a for a in self.bg_pending if f"<task-id>{a}</task-id>" not in prompt}
        elif name == "post_tool_use":
            response = event.data.get("tool_response")
            if isinstance(response, dict) and response.get("isAsync") is True and isinstance(response.get("agentId"), str):
                self.bg_pending.add(response["agentId"])
        before = self.state
        # only triggers the table has for this state: transitions would log a warning for the others,
        # and a warning on stderr is noise in `csd status`
        if (self.state, name) in TRIGGERS:
            self._fire(name, event)
            if self.state != before or self.state_event is None:
                self.state_event = event
        if name == "pre_compact":
            self.compacting = self.compacting or (before == State.IDLE and self.state == State.WORKING)
        elif name in ("user_prompt_submit", "session_start", "session_end"):
            self.compacting = False
        if name in TURN_ENDS:
            if name == "stop":
                self.bg_running = event.bg_running
            if before != self.state or before == State.LAUNCHING:
                self.turns += 1
                self.turn_end = event
            elif before == State.IDLE and self.turn_end is None:
                self.turn_end = event
        elif name == "session_end" and event.data.get("reason") != "clear":
            self.turn_end = event
            self.bg_running = 0  # the process is exiting: its background work ends with it
            self.bg_pending = set()
        elif name == "session_start":
            if event.source != "compact":
                self.started = event
            if before == State.WORKING and self.state == State.IDLE:
                self.turn_end = event  # the end of a /compact turn (it has no stop)
            if event.source != "compact":
                # a new or resumed session has no background work of this process running
                self.bg_running = 0
                self.bg_pending = set()

    def lose(self) -> None:
        """Liveness says the process or session is gone."""
        self._fire(DIED)

    @property
    def outcome(self) -> str | None:
        """How the last turn ended: ``ok`` (stop), ``api_error`` (stop_failure), ``exited`` (session_end), or
        None before any turn ended."""
        end = self.turn_end
        if end is None:
            return None
        return {"stop": "ok", "stop_failure": "api_error", "session_end": "exited"}.get(end.name, "ok")

    @property
    def transcript_path(self) -> str | None:
        """The transcript the newest event that names one points to (it changes with /clear); None when
        none of them does (csd.transcriptfile.session_transcript has Claude Code's own rule)."""
        for ev in (self.last_event, self.turn_end, self.turn_start):
            if ev is not None and isinstance(ev.data.get("transcript_path"), str):
                return ev.data["transcript_path"]
        return None

    @property
    def settled(self) -> bool:
        return self.state == State.IDLE and self.bg_running == 0 and not self.bg_pending


class _Trigger:
    """What the guards read of a trigger: the ``kwargs`` of transitions' EventData."""

    __slots__ = ("kwargs",)

    def __init__(self, event: Event | None) -> None:
        self.kwargs = {"event": event}


#: The table by (state, trigger), rows in table order (the order the machine tries them in).
ROWS: dict[tuple[str, str], tuple[Row, ...]] = {}
for _row in TRANSITIONS:
    ROWS[(_row.source.value, _row.event)] = (*ROWS.get((_row.source.value, _row.event), ()), _row)

#: (state, event) pairs the table has a row for.
TRIGGERS = frozenset((row.source.value, row.event) for row in TRANSITIONS if row.event != DIED)

#: Events after which the state no longer depends on anything earlier in the log: folding may start
#: at the last of them (the tail of the log decides the state; replaying 100 000 lines would not scale).
#: Two of their variants are not anchors: see is_anchor.
ANCHORS = frozenset({"session_start", "user_prompt_submit", "session_end"})


def is_anchor(name: object, data: Mapping[str, object]) -> bool:
    """Whether an event fixes the state whatever came before it (the guards of the table above)."""
    if name == "session_start" and data.get("source") == "compact":
        return False  # depends on whether a /compact turn was running
    if name == "session_end" and data.get("reason") == "clear":
        return False  # /clear is not an exit: no change
    return name in ANCHORS


def fold(events: Iterable[Event], alive: bool = True, initial: State = State.LAUNCHING, machine: bool = False) -> Worker:
    """Fold events (oldest first) plus liveness into a Worker (on the ``transitions`` machine with ``machine``)."""
    worker = Worker(initial, machine)
    for event in events:
        worker.feed(event)
    if not alive:
        worker.lose()
    return worker


# ---------------------------------------------------------------- what ends a wait for a turn


def turn_over(name: str, worker: Worker, removed: bool, after_line: int | None, settled: bool) -> Event | None:
    """What a wait for ``name``'s turn answers now: the event that ended the turn (stop, stop_failure or
    session_end), a stand-in for a state no line announces, or None while the turn goes on. With
    ``after_line``, only a line after it (Event.pos); with ``settled``, an idle worker's background tasks too.
    One rule for every waiter (csd.supervisor's and csd.waiter's).

    Raises NotRunning when the worker is gone (died without session_end) or was stopped (``removed``: its
    events file was deleted)."""
    if removed:
        raise NotRunning(f"worker {name!r} was stopped while waiting (its events file was removed)")
    state = State(worker.state)
    if state == State.GONE:
        last = worker.last_event.summary() if worker.last_event else "none"
        raise NotRunning(f"worker {name!r} is gone: its process ended without session_end (last event: {last})")
    if state in BUSY:
        return None
    if settled and state == State.IDLE and not worker.settled:
        return None
    ev = worker.turn_end or worker.state_event
    if after_line is not None:
        # a line after a truncation is later than any line number of the file before it
        candidates = [e for e in (worker.turn_end, worker.state_event) if e is not None and e.pos > (0, after_line)]
        ev = candidates[0] if candidates else None
    if ev is None and after_line is None:
        return state_event(state)  # idle with an empty tail window: nothing to print but the state itself
    return ev


def state_event(state: State, ts: str | None = None) -> Event:
    """A stand-in event line for a state that no line of the log announces (gone; idle with no turn yet)."""
    import json

    data = {"ts": ts or now_iso(), "event": str(state)}
    return Event(0, data["event"], data["ts"], data, json.dumps(data))


def describe(worker: Worker, now: float) -> str:
    """What the worker was doing, for a wait's timeout message (``now``: seconds since the epoch)."""
    ev = worker.last_event
    if ev is None:
        return f"{worker.state}, no events yet"
    then = epoch(ev.ts)
    if then is None:
        ago = "at an unknown time"
    else:
        secs = max(0.0, now - then)
        ago = f"{secs:.1f}s ago" if secs < 120 else f"{secs / 60:.0f} min ago"
    return f"{worker.state}; last event {ev.summary()} ({ago})"
