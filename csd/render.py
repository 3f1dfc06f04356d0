"""The operators' live table: worker rows rendered as a rich Table (pure), kept current by supervisor events, and ``csd watch``."""

from __future__ import annotations

import asyncio
import contextlib
import math
import operator
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from rich.table import Table
from rich.text import Text

from csd.clock import epoch, now_iso
from csd.console import err
from csd.errors import OK, CsdError
from csd.states import State, fold
from csd.workers import Meta, WorkersDir, format_cost, iter_events

if TYPE_CHECKING:
    from rich.console import Console

    from csd.livetable import TableLines

    from csd.attention import Facts

    from csd.events import Event
    from csd.supervisor import Supervisor, Tracked
    from csd.watch import Change, ChangeStream

#: How each state is coloured in the table (the same lowercase names as everywhere else).
STATE_STYLES: dict[str, str] = {
    State.IDLE: "green",
    State.WORKING: "yellow",
    State.LAUNCHING: "cyan",
    State.TERMINATED: "magenta",
    State.GONE: "dim red",
}
COLUMNS = ("NAME", "STATE", "IN STATE", "ATTENTION", "LAST EVENT", "LAST TURN", "TURNS", "BG", "COST", "CWD")
#: The state column of a plain row for a worker whose meta vanished (it was stopped). Not a worker
#: state: the worker no longer exists for csd, and scripts need one line saying so.
REMOVED = "removed"
META_SUFFIX = ".meta"
EVENTS_SUFFIX = ".events.jsonl"
COST_SUFFIX = ".cost.json"
TICK_SECONDS = 1.0  # the live table's clock: time in state (and time-based attention) is redrawn this often
#: The shortest time between two full redraws (table or plain rows): a burst of events over many workers is
#: drawn once (rebuilding and rendering the rows is the watch's main cost), and an event still shows within 100 ms.
#: (Shorter than WATCH_GATHER: the changes come a pass at a time, so a pass's redraw seldom waits for it.)
MIN_REDRAW_SECONDS = 0.03
#: How long watch's watchers let changes gather after a wake before reading them all in one pass
#: (DirWatcher.gather): at 200 busy workers a wake then handles a dozen changes instead of one or two,
#: which cuts the event pipeline's CPU by more than half (bench/scale.md). Latency: a change waits at most
#: this long to be read, then at most MIN_REDRAW_SECONDS for its redraw (seldom: see above). It also sets how
#: often the table is drawn under a steady stream of changes (once per pass): 50 ms drew ~16 frames a second at
#: 200 busy workers, 70 ms ~13, which took the live table from 5.6 % to 5.0 % of a core while an event still
#: shows ~42 ms after its append (median), the slowest ~83 ms (bench/scale.md; budget 100 ms).
#: Waiters (wait-for-turn) never gather: their wake stays immediate.
WATCH_GATHER = 0.07
#: The gather of the transcript dirs' watchers (Supervisor.follow_api): their lines only say whether a turn is
#: retrying API calls (a retry waits seconds between attempts), while a working worker appends several a second
#: (a line per message, tool call and result) into a directory it often shares with others; a longer window
#: reads each transcript once for many lines, and wakes the watch a few times a second instead of twenty.
WATCH_API_GATHER = 0.25
#: Lines of the live table that are not worker rows (title, borders, header, caption, a spare).
TABLE_CHROME_LINES = 7


def watched_suffixes(costs: bool) -> tuple[str, ...]:
    """The names of the workers dir whose changes LiveRows.on_change acts on: the rest (the cost files' temp
    files, locks, env files) are filtered out by the watcher, neither queued nor waking the watch."""
    return (META_SUFFIX, EVENTS_SUFFIX, COST_SUFFIX) if costs else (META_SUFFIX, EVENTS_SUFFIX)


# ---------------------------------------------------------------- pure: rows -> table


@dataclass(frozen=True)
class WorkerRow:
    """One worker as the table shows it, frozen at the moment of a snapshot."""

    name: str
    state: str
    seconds: float  # time in the current state, as of the snapshot (to the whole second: LiveRows.snapshot)
    last_event: str  # Event.summary() of the last event, "" when there is none yet
    turns: int  # turns ended by a stop
    bg_running: int  # background tasks still running at the last stop
    cwd: str
    retrying: bool = False  # the API call in flight was sent more than once (last_event says how often)
    attention: str | None = None  # why the operator should look (csd/attention.py), or None
    cost_usd: float | None = None  # None: unknown (no statusLine run yet, or a release without cost)
    outcome: str | None = None  # how the last turn ended: ok | api_error | exited
    turn_seconds: float | None = None  # how long the last turn took
    reply: str = ""  # the last turn's reply (its first line), or its error

    def at(self, seconds: float, attention: str | None) -> WorkerRow:
        """This row as of another moment. The watch copies every row per frame: dataclasses.replace, which
        re-runs __init__ through its field list, was a tenth of the watch's time at 200 workers."""
        row = object.__new__(WorkerRow)
        row.__dict__.update(self.__dict__, seconds=seconds, attention=attention)
        return row


def format_duration(seconds: float) -> str:
    """Time in state, coarse on purpose: ``12s``, ``3m``, ``5h``, ``2d``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def order(rows: Sequence[WorkerRow]) -> list[WorkerRow]:
    """Rows that need attention first, each group by name."""
    by_name = operator.attrgetter("name")
    return sorted((r for r in rows if r.attention is not None), key=by_name) + \
        sorted((r for r in rows if r.attention is None), key=by_name)


def summary(rows: Sequence[WorkerRow]) -> str:
    """The line under the table: workers per state, how many need attention, the total cost."""
    return summary_of(Counter(r.state for r in rows), sum(r.attention is not None for r in rows), total_cost(rows))


def summary_of(per_state: Mapping[str, int], need: int, cost: float | None) -> str:
    """``summary`` from its counts: workers per state, how many need attention, the total cost (None: unknown)."""
    counts = [f"{n} {state}" for state in STATE_STYLES if (n := per_state.get(state, 0))]
    return f"{', '.join(counts)} · {need} need{'s' if need == 1 else ''} attention · {format_cost(cost)} total"


def total_cost(rows: Sequence[WorkerRow]) -> float | None:
    """The rows' costs summed (None: no row's cost is known), exactly rounded (math.fsum): the same figure
    whatever the order of the sum, so LiveView can keep it by worker."""
    known = [r.cost_usd for r in rows if r.cost_usd is not None]
    return math.fsum(known) if known else None


def last_turn(r: WorkerRow) -> str:
    if r.outcome is None:
        return ""
    return r.outcome + (f" {format_duration(r.turn_seconds)}" if r.turn_seconds is not None else "")


def table_parts(rows: Sequence[WorkerRow], as_of: str | None = None, limit: int | None = None) -> tuple[str, str, list[WorkerRow]]:
    """(title, caption, rows shown) of the live table for one snapshot: attention rows first, a summary line
    under it (of all rows); ``limit``: show only that many rows (what fits the terminal)."""
    shown = order(rows)
    if limit is not None:
        shown = shown[: max(limit, 0)]
    return title_of(rows), caption_of(len(rows), summary(rows) if rows else "", limit, as_of), shown


def title_of(rows: Sequence[WorkerRow]) -> str:
    return f"csd workers ({len(rows)})"


def caption_of(count: int, summary_line: str, limit: int | None, as_of: str | None) -> str:
    """The caption under a table of ``count`` rows: ``summary_line``, what did not fit, the time of the snapshot."""
    if not count:
        return "no workers yet; start one with: csd launch NAME DIR"
    caption = summary_line
    if limit is not None and count > limit:
        caption = f"{count - max(limit, 0)} more not shown · " + caption
    return caption + f" · as of {as_of}" if as_of else caption


def table_template(title: str = "", caption: str = "") -> Table:
    """The live table's columns and settings, without rows."""
    table = Table(title=title or None, caption=caption or None, caption_justify="left", expand=False)
    # Only LAST EVENT and CWD may give up width on a narrow terminal (rich shrinks wrappable columns first);
    # their cells still never wrap, they end in an ellipsis, so each worker stays on one line.
    table.add_column(COLUMNS[0], no_wrap=True, style="bold")
    table.add_column(COLUMNS[1], no_wrap=True, min_width=len("terminated"))
    table.add_column(COLUMNS[2], justify="right", no_wrap=True)
    table.add_column(COLUMNS[3], max_width=40)
    table.add_column(COLUMNS[4], min_width=24, max_width=40)
    table.add_column(COLUMNS[5], no_wrap=True)
    table.add_column(COLUMNS[6], justify="right", no_wrap=True)
    table.add_column(COLUMNS[7], justify="right", no_wrap=True)
    table.add_column(COLUMNS[8], justify="right", no_wrap=True)
    table.add_column(COLUMNS[9])
    return table


def _plain(text: str, style: str) -> str:
    return text


def _text(text: str, style: str) -> Text:
    return Text(text, style=style)


def _one_line(text: str, style: str) -> Text:
    return Text(text, no_wrap=True, overflow="ellipsis", style=style)


#: What each column's cell is for rich, from its (text, style): a plain string, a Text, or a Text that ends in
#: an ellipsis rather than wrap.
CELL_MAKERS = (_plain, _text, _plain, _one_line, _one_line, _text, _plain, _plain, _plain, _one_line)


def row_cells(r: WorkerRow) -> tuple[tuple[str, str], ...]:
    """The (text, style) of each of the row's cells."""
    return (
        (r.name, ""),
        (r.state, STATE_STYLES.get(r.state, "")),
        (format_duration(r.seconds), ""),
        (r.attention or "", "bold red"),
        (r.last_event or "—", "bold red" if r.retrying else ""),
        (last_turn(r), "red" if r.outcome == "api_error" else ""),
        (str(r.turns), ""),
        (str(r.bg_running) if r.bg_running else "", ""),
        (format_cost(r.cost_usd) if r.cost_usd is not None else "", ""),
        (r.cwd, ""),
    )


def render_table(rows: Sequence[WorkerRow], as_of: str | None = None, limit: int | None = None) -> Table:
    """The live table's renderable for one snapshot (pure: no clock, no I/O); see table_parts. A terminal's
    watch draws the same lines through csd.livetable, cell by cell."""
    title, caption, shown = table_parts(rows, as_of, limit)
    table = table_template(title, caption)
    for r in shown:
        table.add_row(*(make(*cell) for make, cell in zip(CELL_MAKERS, row_cells(r))))
    return table


def api_summary(tr: Tracked, last: str) -> tuple[str, bool]:
    """The LAST EVENT text with what the transcript says of the API calls: a retrying call while working
    (its attempts so far), the attempts of a call that failed, the API error of a release without
    StopFailure. Returns (text, retrying)."""
    api, w = tr.api, tr.worker
    if api is None:
        return last, False
    if tr.state == State.WORKING:
        return (f"API retrying: attempt {api.attempts}", True) if api.retrying else (last, False)
    end = w.turn_end
    if api.error is not None and end is not None and end is w.last_event:
        if end.error is None:  # a stop, and only the transcript says the turn failed
            return f"stop: API error ({api.error})", False
        if api.attempts:  # 0: a release that writes no api-request lines
            return f"{last} after {api.attempts} attempt{'s' if api.attempts != 1 else ''}", False
    return last, False


def turn_facts(tr: Tracked) -> tuple[str | None, str | None, float | None, str]:
    """(outcome, error, duration in seconds, reply's first line) of the worker's last turn; the transcript
    decides a failed turn of a release without StopFailure (as api_summary shows it)."""
    w = tr.worker
    end, start = w.turn_end, w.turn_start
    outcome, error = w.outcome, end.error if end is not None else None
    api = tr.api
    if end is not None and end.error is None and api is not None and api.error is not None and end is w.last_event \
            and tr.state != State.WORKING:
        outcome, error = "api_error", api.error
    seconds = None
    if end is not None and start is not None and start.line_no < end.line_no:
        a, b = epoch(start.ts), epoch(end.ts)
        seconds = b - a if a is not None and b is not None and b >= a else None
    reply = ""
    if end is not None:
        text = end.data.get("last_assistant_message")
        reply = text if isinstance(text, str) else error or ""
    return outcome, error, seconds, reply.strip().split("\n", 1)[0] if reply.strip() else ""


def plain_line(ts: str, row: WorkerRow | None, name: str) -> str:
    """One scriptable line ``<ts>\\t<name>\\t<state>\\t<last event>``; row None: the worker was removed."""
    if row is None:
        return f"{ts}\t{name}\t{REMOVED}\t"
    # a summary quotes hook data (a notification's message, a tool name): keep it to one field of one line
    return f"{ts}\t{row.name}\t{row.state}\t{' '.join(row.last_event.split())}"


# ---------------------------------------------------------------- the rows, kept current by events


@dataclass
class _Entry:
    meta: Meta
    tracked: Tracked | None  # None until first tracked
    state: str
    since: float  # wall-clock time the row entered `state`
    turns_offset: int = 0  # turns before the tracked tail began (Tracked folds only the log's tail)
    cost_usd: float | None = None  # from the worker's cost file, read when it changes
    shim_exists: bool = True  # checked when the row enters terminated or gone (not polled)
    # the row as of its last change, its facts, and whether the clock alone can change its attention
    cached: tuple[WorkerRow, Facts, bool] | None = None
    shown: WorkerRow | None = None  # the row of the last snapshot (kept while only time's fraction moved)


class LiveRows:
    """The rows of the workers a Supervisor tracks, updated by its listener; redrawn only when one changed.

    ``add``/``remove`` follow metas appearing and vanishing; ``draw_on_change(draw)`` calls ``draw(rows)``
    once at start and then once per burst of changes; with ``tick`` it also hands ``tick(rows)`` fresh rows
    every TICK_SECONDS (the clock of time in state: the known model, no file read), and redraws in full
    when the clock alone changed a row's attention (a launch or background tasks past their time).
    ``redraws`` counts the full redraws.
    """

    def __init__(self, sup: Supervisor, pattern: str = "", clock: Callable[[], float] = time.time,
                 costs: bool = True) -> None:
        self.sup = sup
        self.pattern = pattern
        #: False: nobody looks at the costs (plain rows print none), so cost files are never read
        self.costs = costs
        self.redraws = 0
        self._clock = clock
        self._entries: dict[str, _Entry] = {}  # by session id
        self._order: list[_Entry] | None = None  # the entries by name, None when one came or went
        self._index: dict[str, int] = {}  # session id -> place in _order
        self._rows: list[WorkerRow] = []  # the last snapshot's rows, in _order
        self._full_at = 0.0  # when every row was last brought up to the clock
        self._touched: set[str] = set()  # session ids whose rows changed since the last snapshot
        self._timed: set[str] = set()  # session ids whose attention the clock alone can change
        self._dirty = asyncio.Event()
        self._dirty.set()  # the first table is drawn even when there is no worker yet
        self._drawn: list[WorkerRow] = []  # the rows of the last full redraw
        sup.add_listener(self._on_event)
        #: rows from elsewhere (remote hosts' streams, csd.commands.remote.watch_rows), drawn beside the local ones
        self.extra_rows: list[Callable[[], list[WorkerRow]]] = []

    def changed(self) -> None:
        """Redraw: something behind ``extra_rows`` changed."""
        self._dirty.set()

    # -- membership

    async def add(self, meta: Meta) -> None:
        """Show a worker (idempotent); a rewritten meta (adopt) of a gone worker is tracked afresh."""
        if self.pattern not in meta.tmux_name:
            return
        entry = self._entries.get(meta.session_id)
        if entry is not None:
            entry.meta = meta
            self._touch(entry)
            self._order = None
            if entry.tracked is not None and entry.tracked.state != State.GONE:
                return
        clash = next((e for e in self._entries.values() if e.meta.tmux_name == meta.tmux_name and e.meta != meta), None)
        if clash is not None:
            err(f"csd: warning: two metas name worker {meta.tmux_name!r} ({clash.meta.session_id}, {meta.session_id}); showing the first")
            return
        if entry is None:
            started = epoch(meta.started_at) or self._clock()
            entry = self._entries[meta.session_id] = _Entry(meta, None, State.LAUNCHING, min(started, self._clock()))
            self._order = None
        await self._track(entry)
        self._dirty.set()

    def remove(self, session_id: str) -> None:
        """Drop a worker's row (its meta vanished: it was stopped) and stop following it."""
        entry = self._entries.pop(session_id, None)
        if entry is None:
            return
        self._order = None
        if entry.tracked is not None and any(t is entry.tracked for t in self.sup.tracked()):
            self.sup.untrack(entry.meta.tmux_name)
        self._dirty.set()

    async def on_change(self, change: Change) -> None:
        """Apply one change of the workers dir (a DirWatcher.changes() item)."""
        from csd.watch import ChangeKind

        name = change.name
        if name.startswith("."):
            return  # a meta being written: the temp file is renamed over <sid>.meta when complete
        if name.endswith(META_SUFFIX):
            sid = name[: -len(META_SUFFIX)]
            if change.kind is ChangeKind.DELETED:
                self.remove(sid)
                return
            meta = self.sup.wdir.meta_if_readable(sid, _warn)
            if meta is not None:
                await self.add(meta)
        elif name.endswith(COST_SUFFIX) and change.kind is not ChangeKind.DELETED and self.costs:
            entry = self._entries.get(name[: -len(COST_SUFFIX)])
            if entry is not None:
                self._read_cost(entry)
                self._dirty.set()
        elif name.endswith(EVENTS_SUFFIX) and change.kind is not ChangeKind.DELETED:
            entry = self._entries.get(name[: -len(EVENTS_SUFFIX)])
            if entry is not None and (entry.tracked is None or entry.tracked.state == State.GONE):
                # The log of a worker seen gone grew: adopt respawned it in place. Check its liveness again.
                await self._track(entry)
                self._dirty.set()

    async def _track(self, entry: _Entry) -> None:
        if entry.tracked is not None and any(t is entry.tracked for t in self.sup.tracked()):
            self.sup.untrack(entry.meta.tmux_name)  # tracked afresh: liveness is checked once per track
        # A launch still on its way into tmux reads as launching: the supervisor waits for its session.
        tr = await self.sup.track(entry.meta)
        entry.tracked = tr
        # Tracked folds only the tail of the log (from its last anchor); count the turns before it once.
        # Lines after tr.line_count are still on their way to the tracker, which will count them itself.
        path = self.sup.wdir.events_path(entry.meta.session_id)
        upto = tr.line_count
        total = fold(ev for ev in iter_events(path) if ev.line_no <= upto).turns
        entry.turns_offset = max(0, total - tr.worker.turns)
        self._read_cost(entry)
        self._entered(entry, tr)

    def _read_cost(self, entry: _Entry) -> None:
        if self.costs:
            entry.cost_usd = self.sup.wdir.read_cost(entry.meta.session_id).cost_usd
        self._touch(entry)

    def _entered(self, entry: _Entry, tr: Tracked) -> None:
        """Date the row's state from the log: when its state event was written (launching: the meta's start)."""
        state = str(tr.state)
        if state == entry.state and state in (State.LAUNCHING, State.GONE):
            return  # still launching since the meta was written, or gone since we first saw it
        ev = tr.worker.state_event
        if state == State.LAUNCHING:
            when = epoch(entry.meta.started_at)
        elif state == State.GONE or ev is None:
            when = None  # death leaves no line in the log: the row dates it from when csd noticed
        else:
            when = epoch(ev.ts)
        now = self._clock()
        entry.state, entry.since = state, min(when, now) if when is not None else now
        self._touch(entry)
        self._check_shim(entry)

    def _check_shim(self, entry: _Entry) -> None:
        if entry.state in (State.TERMINATED, State.GONE):
            entry.shim_exists = self.sup.wdir.shim_path(entry.meta.tmux_name).exists()

    def _on_event(self, tr: Tracked, event: Event | None) -> None:
        entry = self._entries.get(tr.meta.session_id)
        if entry is None or entry.tracked is not tr:
            return
        state = str(tr.state)
        self._touch(entry)
        if state != entry.state:
            entry.state, entry.since = state, self._clock()
            self._check_shim(entry)
        self._dirty.set()

    # -- output

    def snapshot(self) -> list[WorkerRow]:
        """The rows as of now: a worker's row is rebuilt only when something of it changed (``_touch``), and
        copied for time in state (and the attention that depends on it, from the clock) once a second: a frame
        while events pour in costs what changed, not one step per worker."""
        from csd import config

        now = self._clock()
        limits = config.seconds("CSD_LAUNCH_TIMEOUT"), config.seconds("CSD_BG_REPORT_TIMEOUT")
        if self._order is None:
            self._order = sorted(self._entries.values(), key=lambda e: (e.meta.tmux_name, e.meta.session_id))
            self._index = {e.meta.session_id: i for i, e in enumerate(self._order)}
            self._rows = []
        if len(self._rows) != len(self._order) or now - self._full_at >= TICK_SECONDS:
            self._full_at = now
            self._rows = [self._current(e, now, limits) for e in self._order]
        else:
            for sid in self._touched | self._timed:
                if (i := self._index.get(sid)) is not None:
                    self._rows[i] = self._current(self._order[i], now, limits)
        self._touched.clear()
        rows = list(self._rows)
        for extra in self.extra_rows:
            rows.extend(extra())
        return rows

    def _current(self, e: _Entry, now: float, limits: tuple[float, float]) -> WorkerRow:
        from csd.attention import attention

        seconds = now - e.since
        if e.cached is None:
            e.cached, e.shown = self._row_of(e, seconds, limits), None
        row, facts, timed = e.cached
        (self._timed.add if timed else self._timed.discard)(e.meta.session_id)
        shown = e.shown
        # a row is copied when its whole seconds (all that is shown of them) or its clock's attention change
        if shown is None or timed or int(shown.seconds) != int(seconds):
            reason = attention(facts.replace(seconds_in_state=seconds), *limits) if timed else row.attention
            shown = e.shown = row.at(seconds, reason)
        return shown

    def _touch(self, entry: _Entry) -> None:
        """The entry's row must be rebuilt at the next snapshot."""
        entry.cached = None
        self._touched.add(entry.meta.session_id)

    @staticmethod
    def _row_of(e: _Entry, seconds: float, limits: tuple[float, float]) -> tuple[WorkerRow, Facts, bool]:
        from csd.attention import Facts, attention, changes_with_time

        tr = e.tracked
        if tr is None:
            facts = Facts(State.LAUNCHING, seconds, None, None, False, None, 0, True)
            row = WorkerRow(e.meta.tmux_name, State.LAUNCHING, 0.0, "", 0, 0, e.meta.cwd,
                            attention=attention(facts, *limits), cost_usd=e.cost_usd)
        else:
            w = tr.worker
            last = w.last_event.summary() if w.last_event is not None else ""
            last, retrying = api_summary(tr, last)
            outcome, error, turn_seconds, reply = turn_facts(tr)
            attempts = tr.api.attempts if tr.api is not None and tr.api.attempts else None
            facts = Facts(str(tr.state), seconds, outcome, error, retrying, attempts, w.bg_running, e.shim_exists)
            row = WorkerRow(tr.name, str(tr.state), 0.0, last, w.turns + e.turns_offset, w.bg_running, e.meta.cwd,
                            retrying, attention(facts, *limits), e.cost_usd, outcome, turn_seconds, reply)
        return row, facts, changes_with_time(facts)

    async def draw_on_change(self, draw: Callable[[list[WorkerRow]], None],
                             tick: Callable[[list[WorkerRow]], None] | None = None, min_interval: float = 0.0) -> None:
        """Call ``draw(rows)`` after each burst of changes, forever (cancel to stop); with ``tick``, the
        clock too (see the class); ``min_interval``: the changes of that long after a redraw wait for the next."""
        try:
            while True:
                if tick is None:
                    await self._dirty.wait()
                else:
                    try:
                        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that lands as
                        # the wait completes, and then the watch would never end
                        async with asyncio.timeout(TICK_SECONDS):
                            await self._dirty.wait()
                    except TimeoutError:
                        rows = self.snapshot()
                        if {r.name: r.attention for r in rows} != {r.name: r.attention for r in self._drawn}:
                            self._dirty.set()  # the clock alone made a worker need attention
                        else:
                            tick(rows)
                            continue
                self._draw(draw)
                if min_interval > 0:
                    await asyncio.sleep(min_interval)
        finally:
            self.sup.remove_listener(self._on_event)
            if self._dirty.is_set():
                self._draw(draw)  # a change that landed just before the end is still shown

    def _draw(self, draw: Callable[[list[WorkerRow]], None]) -> None:
        # Cleared before drawing: a change during draw() sets it again and is drawn next.
        self._dirty.clear()
        self.redraws += 1
        rows = self.snapshot()
        self._drawn = rows
        draw(rows)


def _warn(message: str) -> None:
    err(f"csd: warning: {message}")


# ---------------------------------------------------------------- sinks


class PlainRows:
    """Scriptable output: one ``<ts>\\t<name>\\t<state>\\t<last event>`` line per row that changed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._shown: dict[str, tuple[str, str]] = {}
        # the row objects last looked at, by name: a snapshot hands the same object while the row did not change,
        # so a draw over many workers compares the few that did
        self._seen: dict[str, WorkerRow] = {}

    def __call__(self, rows: list[WorkerRow]) -> None:
        ts = now_iso()
        lines = []
        seen, shown = self._seen, self._shown
        for r in rows:
            if seen.get(r.name) is r:
                continue
            seen[r.name] = r
            key = (r.state, r.last_event)
            if shown.get(r.name) != key:
                shown[r.name] = key
                lines.append(plain_line(ts, r, r.name))
        if len(seen) != len(rows):  # a row seen before is gone
            current = {r.name for r in rows}
            lines[:0] = [plain_line(ts, None, name) for name in sorted(shown.keys() - current)]
            self._shown = {name: key for name, key in shown.items() if name in current}
            self._seen = {name: r for name, r in seen.items() if name in current}
        if lines:
            self.out.write("".join(line + "\n" for line in lines))
            self.out.flush()


class Notifier:
    """``watch --notify CMD``: runs CMD (``/bin/sh -c``) once each time a worker starts needing attention or
    finishes a turn, with CSD_WORKER_NAME, CSD_WORKER_STATE, CSD_WORKER_REASON (the attention reason, or
    empty) and CSD_WORKER_REPLY (the reply's first line, or the failed turn's error) in its environment.
    The rows of the first redraw are the baseline: nothing already true when watch started is announced.
    CMD's output goes to stderr (stdout carries watch's own rows); a failing CMD is reported once and
    never stops the watch. ``runs`` counts the commands started."""

    def __init__(self, command: str, warn: Callable[[str], None] | None = None) -> None:
        self.command = command
        self.runs = 0
        self._warn = warn or err
        self._known: dict[str, tuple[str | None, int]] | None = None
        self._failed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, rows: list[WorkerRow]) -> None:
        known = self._known
        self._known = {r.name: (r.attention, r.turns) for r in rows}
        if known is None:
            return
        for r in rows:
            attention, turns = known.get(r.name, (None, r.turns))
            # a worker already needing attention whose reason changes (terminated, then gone) is not told again
            if (r.attention is not None and attention is None) or r.turns > turns:
                self._start(r)

    def _start(self, r: WorkerRow) -> None:
        env = {**os.environ, "CSD_WORKER_NAME": r.name, "CSD_WORKER_STATE": r.state,
               "CSD_WORKER_REASON": r.attention or "", "CSD_WORKER_REPLY": r.reply}
        self.runs += 1
        task = asyncio.get_running_loop().create_task(self._run(env))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, env: dict[str, str]) -> None:
        try:
            try:
                errfd: int = sys.stderr.fileno()
            except (AttributeError, ValueError, OSError):  # a stderr without a descriptor (captured)
                errfd = asyncio.subprocess.DEVNULL
            proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", self.command, env=env,
                                                        stdin=asyncio.subprocess.DEVNULL, stdout=errfd)
            code = await proc.wait()
            failure = f"exit status {code}" if code else None
        except OSError as exc:
            failure = str(exc)
        if failure and not self._failed:
            self._failed = True
            self._warn(f"csd: warning: the --notify command {self.command!r} failed ({failure}); watch goes on "
                       "(later failures are not reported)")

    async def drain(self) -> None:
        """Wait for the commands still running (watch ends)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks))


class _Kept:
    """A shown row as the last frame drew it: its cells, measured at a width (each cell's measure and the row's),
    and its lines at some widths (each cell's lines and the row's)."""

    __slots__ = ("row", "cells", "width", "each", "measure", "widths", "parts", "lines", "last")

    def __init__(self, row: WorkerRow) -> None:
        self.row, self.cells = row, row_cells(row)
        self.width = -1
        self.each: list[tuple[int, int]] = []
        self.measure: tuple[int, ...] = ()
        self.widths: tuple[int, ...] = ()
        self.parts: list[list[str]] = []
        self.lines: list[str] = []
        self.last = False  # drawn as the table's last row


class LiveView:
    """The live table's lines frame after frame (``csd watch`` in a terminal), at the cost of the rows that
    changed: the lines of ``TableLines.lines(*table_parts(rows, as_of, limit), width)``, with the summary, the
    order and each shown row's cells, measure and lines carried over from the last frame for the rows a
    snapshot hands unchanged (LiveRows.snapshot hands the same object while a row did not change). At 200
    workers a frame changes a handful of rows; passing over every row several times a frame (the summary, the
    order, each shown row's cells looked up by value) was most of what drawing cost (bench/scale.md)."""

    def __init__(self, lines: TableLines) -> None:
        self.lines = lines
        self._rows: list[WorkerRow] = []  # the last frame's rows, as the snapshot handed them
        self._order: list[int] = []  # their indices in the table's order (attention first, by name)
        self._per_state: Counter[str] = Counter()
        self._need = 0
        self._costs: dict[str, float] = {}  # the known costs by name (summed from one dict: see _update)
        self._summary = ""
        self._kept: dict[str, _Kept] = {}  # by name
        self._shown: list[WorkerRow] = []  # the last frame's shown rows, and their _Kept
        self._got: list[_Kept] = []
        # the last widths worked out, and the width and measures of the shown rows they are for
        self._measured: list[tuple[int, ...]] = []
        self._width = -1
        self._widths: tuple[int, ...] | None = None

    def frame(self, rows: list[WorkerRow], as_of: str | None, width: int, limit: int) -> list[str]:
        """The table's lines for ``rows`` (as ``table_parts`` orders and sums them) at most ``width`` wide."""
        self._update(rows)
        self.lines.trim()
        shown = [rows[i] for i in self._order[: max(limit, 0)]]
        title, caption = title_of(rows), caption_of(len(rows), self._summary, limit, as_of)
        lines, last_shown, last_got = self.lines, self._shown, self._got
        got, measured = [], []
        # A frame's time goes in touching objects the last frame left cold in the caches: a shown row that is
        # the last frame's (the same object at the same place) takes its _Kept without being looked at.
        for j, r in enumerate(shown):
            if j < len(last_shown) and last_shown[j] is r and last_got[j].width == width:
                k = last_got[j]
            else:
                k = self._kept_of(r, width)
            got.append(k)
            measured.append(k.measure)
        self._shown, self._got = shown, got
        if measured == self._measured and width == self._width:  # no shown row measures otherwise: the same widths
            widths = self._widths
        else:
            widths = lines.widths([k.cells for k in got], measured, width)
            self._measured, self._width, self._widths = measured, width, widths
        if widths is None:
            return lines.cropped(title, caption, [k.cells for k in got], width)
        for n, k in enumerate(got, 1 - len(got)):  # n is 0 for the last row
            if k.widths is not widths or k.last != (n == 0):
                k.parts, k.lines = lines.lines_again(k.cells, widths, None, k.parts, n == 0)
                k.widths, k.last = widths, n == 0
        return lines.assemble(title, caption, [k.lines for k in got], widths, width)

    def _kept_of(self, r: WorkerRow, width: int) -> _Kept:
        """``r``'s _Kept, measured at ``width``."""
        lines = self.lines
        k = self._kept.get(r.name)
        if k is None:
            k = self._kept[r.name] = _Kept(r)
        if k.row is not r:  # the row changed (the clock: its time in state only): redrawn from its last version
            k.row, old, k.cells = r, k.cells, row_cells(r)
            k.each, k.measure = lines.measure_again(k.cells, width, old if k.width == width else None, k.each)
            k.width = width
            k.parts, k.lines = lines.lines_again(k.cells, k.widths, old, k.parts, k.last) if k.widths else ([], [])
        elif k.width != width:
            k.each, k.measure = lines.measure_again(k.cells, width, None, k.each)
            k.width = width
        return k

    def _update(self, rows: list[WorkerRow]) -> None:
        """The summary and the order, from the rows that are not the last frame's (all of them when some came
        or went)."""
        old, self._rows = self._rows, rows
        changed = [i for i, (a, b) in enumerate(zip(old, rows)) if a is not b] if len(old) == len(rows) else None
        if changed is None or any(old[i].name != rows[i].name for i in changed):
            self._per_state = Counter(r.state for r in rows)
            self._need = sum(r.attention is not None for r in rows)
            self._costs = {r.name: r.cost_usd for r in rows if r.cost_usd is not None}
            self._order = sorted(range(len(rows)), key=lambda i: (rows[i].attention is None, rows[i].name))
            names = {r.name for r in rows}
            self._kept = {name: k for name, k in self._kept.items() if name in names}
        elif changed:
            reorder = False
            costs = self._costs
            for i in changed:
                a, b = old[i], rows[i]
                if a.state != b.state:
                    self._per_state[a.state] -= 1
                    self._per_state[b.state] += 1
                if (a.attention is None) != (b.attention is None):
                    self._need += 1 if b.attention is not None else -1
                    reorder = True
                if b.cost_usd is not None:
                    costs[b.name] = b.cost_usd
                else:
                    costs.pop(b.name, None)
            if reorder:
                self._order = sorted(range(len(rows)), key=lambda i: (rows[i].attention is None, rows[i].name))
        else:
            return
        # the costs summed as total_cost sums them (exactly rounded), from one dict rather than from every row: at
        # 200 rows, reading each row's cost again per frame was the most of a frame (the rows are cold by then)
        self._summary = summary_of(self._per_state, self._need, math.fsum(self._costs.values()) if self._costs else None)


@contextlib.contextmanager
def live_table(console: Console, rows: Sequence[WorkerRow] = ()) -> Iterator[Callable[[list[WorkerRow]], None]]:
    """The live table on the terminal ``console``, redrawn by each ``draw(rows)``: only the lines that changed
    are written, each cell rendered once (csd.livetable), what fits the terminal (attention rows first), each
    frame at the cost of the rows that changed (LiveView)."""
    from csd.livetable import TableLines, shown, terminal_size

    view = LiveView(TableLines(console, table_template(), CELL_MAKERS))

    # stdout is left alone (it carries answers); stderr writes (warnings) are printed above the table.
    with shown(console) as screen, terminal_size(console) as size:

        def draw(rows: Sequence[WorkerRow], as_of: str | None = None) -> None:
            width, height = size()
            screen.show(view.frame(list(rows), as_of, width, height - TABLE_CHROME_LINES), width, height)

        draw(rows)
        yield lambda rows: draw(rows, time.strftime("%H:%M:%S"))


@contextlib.contextmanager
def on_sigint(handler: Callable[[], None]) -> Iterator[None]:
    """Run ``handler`` on Ctrl-C instead of cancelling the program (where the loop can take signals)."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGINT)
    try:
        loop.add_signal_handler(signal.SIGINT, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        yield  # not the main thread, or no signals here: Ctrl-C interrupts as usual (exit 130)
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------- csd watch


async def _remote_rows(rows: LiveRows, pattern: str) -> None:
    """The rows of the remote workers this controller knows, added to ``rows`` and kept current as workers
    are launched on other hosts or stopped there while watch runs. Ends when cancelled."""
    from csd.commands import remote

    streams: list[Any] = []
    rows.extra_rows.append(lambda: remote.watch_rows(streams, rows._clock, WorkerRow))
    await remote.follow_remote(rows.sup.wdir, pattern, rows.changed, streams)


async def watch(
    pattern: str = "",
    console: Console | None = None,
    *,
    out: TextIO | None = None,
    on_redraw: Callable[[list[WorkerRow]], None] | None = None,
    notify: str | None = None,
    on_tick: Callable[[list[WorkerRow]], None] | None = None,
) -> int:
    """``csd watch``: the live table of the workers whose name contains ``pattern``, until Ctrl-C (exit 0).

    Event-driven throughout: metas appearing/vanishing in the workers dir add/remove rows (the
    supervisor's DirWatcher), each event or liveness change redraws (Supervisor.add_listener). Nothing is
    redrawn in full while nothing happens; the clock alone redraws the table every second (time in state),
    reading nothing. With a terminal ``console`` (default: stderr) the table is drawn there; otherwise plain
    lines go to ``out`` (default: stdout). ``on_redraw`` is called with the rows after each full redraw,
    ``on_tick`` after each clock redraw. ``notify``: a command run per worker that starts needing attention
    or finishes a turn (Notifier). Raises CsdError if the workers dir is removed.
    """
    from rich.console import Console

    from csd.supervisor import Supervisor

    console = console or Console(stderr=True)
    stopping = False
    # machine=False: watch only reads states (the table looked up, as waiters do), no transitions machine per worker
    async with Supervisor(machine=False, gather=WATCH_GATHER) as sup:
        sup.follow_api(WATCH_API_GATHER)  # retrying API calls show in the table, driven by the transcripts' changes
        _make_remote_dir(sup.wdir)
        # plain rows show no cost: unless a caller takes the rows, cost files are not read at all
        costs = console.is_terminal or on_redraw is not None
        # Listen before listing: a meta written in between is both listed and reported (add is idempotent).
        changes = sup.watcher.changes(suffixes=watched_suffixes(costs))

        def stop() -> None:
            nonlocal stopping
            stopping = True
            sup.watcher.flush()  # what changed just before (gathering: not yet read) is shown too
            changes.close()  # the loop below ends after the changes already queued

        with on_sigint(stop):
            rows = LiveRows(sup, pattern, costs=costs)
            async with sup.one_pane_listing():  # one tmux call for all the workers, not one each
                for meta in sup.wdir.metas(_warn):
                    await rows.add(meta)
            notifier = Notifier(notify) if notify else None
            sink: contextlib.AbstractContextManager[Callable[[list[WorkerRow]], None]]
            if console.is_terminal:
                sink = live_table(console, rows.snapshot())
            else:
                sink = contextlib.nullcontext(PlainRows(out or sys.stdout))
            with sink as draw:
                redraw, tick = _callbacks(draw, console.is_terminal, notifier, on_redraw, on_tick)
                await _follow(rows, changes, redraw, tick, pattern)
            if notifier is not None:
                await notifier.drain()
    if not stopping:
        raise CsdError(f"the workers dir {sup.wdir.path} was removed; watch ended")
    return OK


Draw = Callable[[list[WorkerRow]], None]


def _make_remote_dir(wdir: WorkersDir) -> None:
    """The remote records' dir, made before the first rows: followed for the remote rows (made rather than waited
    for: commands.remote.follow_remote); one that cannot be made is waited for there."""
    with contextlib.suppress(OSError, CsdError):
        wdir.ensure_remote_dir()


def _callbacks(draw: Draw, terminal: bool, notifier: Notifier | None, on_redraw: Draw | None,
               on_tick: Draw | None) -> tuple[Draw, Draw]:
    """(redraw, tick): what a full redraw and a clock redraw call."""

    def redraw(snapshot: list[WorkerRow]) -> None:
        draw(snapshot)
        if notifier is not None:
            notifier(snapshot)
        if on_redraw is not None:
            on_redraw(snapshot)

    def tick(snapshot: list[WorkerRow]) -> None:
        if terminal:
            draw(snapshot)
        if on_tick is not None:
            on_tick(snapshot)

    return redraw, tick


async def _follow(rows: LiveRows, changes: ChangeStream, redraw: Draw, tick: Draw, pattern: str) -> None:
    """Keep ``rows`` current from the workers dir's ``changes`` and draw them, until the changes end."""
    async with asyncio.TaskGroup() as tg:
        drawer = tg.create_task(rows.draw_on_change(redraw, tick, MIN_REDRAW_SECONDS))
        far = [tg.create_task(_remote_rows(rows, pattern))]
        try:
            async for change in changes:
                await rows.on_change(change)
        finally:
            drawer.cancel()
            for task in far:
                task.cancel()
