"""The live table: pure rendering of a snapshot, and ``csd watch`` following real workers event by event."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from io import StringIO

import pytest
from rich.console import Console
from rich.text import Text

from csd.errors import CsdError
from csd.render import (
    COLUMNS,
    REMOVED,
    STATE_STYLES,
    PlainRows,
    WorkerRow,
    format_duration,
    render_table,
    watch,
)
from csd.fleet import Fleet
from support import Env


WAIT = 15.0  # generous ceiling for one expected change on a loaded 2-core machine; never slept


def capture_console() -> Console:
    """A fixed-width capture console that still counts as a terminal, so watch draws its table."""
    return Console(file=StringIO(), width=120, color_system=None, force_terminal=True)


def text_of(console: Console) -> str:
    return console.file.getvalue()  # type: ignore[attr-defined]


def row(rows: list[WorkerRow], name: str) -> WorkerRow | None:
    return next((r for r in rows if r.name == name), None)


class Redraws:
    """The on_redraw hook: every redraw with its time, and a way to await one that matches."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[WorkerRow]]] = []
        self._event = asyncio.Event()

    def __call__(self, rows: list[WorkerRow]) -> None:
        self.calls.append((time.monotonic(), rows))
        self._event.set()

    async def until(self, check: Callable[[list[WorkerRow]], bool], after: int = 0) -> tuple[float, list[WorkerRow]]:
        """The first redraw from index ``after`` on whose rows satisfy ``check``."""
        seen = after
        async with asyncio.timeout(WAIT):
            while True:
                for t, rows in self.calls[seen:]:
                    if check(rows):
                        return t, rows
                seen = len(self.calls)
                self._event.clear()
                await self._event.wait()


def in_state(name: str, state: str, **fields: object) -> Callable[[list[WorkerRow]], bool]:
    def check(rows: list[WorkerRow]) -> bool:
        r = row(rows, name)
        return r is not None and r.state == state and all(getattr(r, k) == v for k, v in fields.items())

    return check


def absent(name: str) -> Callable[[list[WorkerRow]], bool]:
    return lambda rows: row(rows, name) is None


async def stop_watch(task: asyncio.Task[int]) -> int:
    """Ctrl-C, as an operator would press it; watch must return 0."""
    os.kill(os.getpid(), signal.SIGINT)
    async with asyncio.timeout(WAIT):
        return await task


@pytest.fixture
async def watching(env: Env) -> AsyncIterator[tuple[asyncio.Task[int], Redraws, Console]]:
    """``watch("")`` running on a capture console; cancelled at the end if a test did not stop it."""
    console = capture_console()
    redraws = Redraws()
    task = asyncio.create_task(watch("", console, on_redraw=redraws))
    await redraws.until(lambda rows: True)  # the first table is drawn once the dir is listed
    try:
        yield task, redraws, console
    finally:
        if not task.done():
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif not task.cancelled():
            task.exception()  # retrieved: a failure there is reported by the test itself


def append_event(env: Env, sid: str, **event: object) -> None:
    """What the hook does: one line appended with a single write."""
    line = json.dumps({"ts": _now(), **event}) + "\n"
    fd = os.open(env.wdir.events_path(sid), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _now() -> str:
    from csd.workers import now_iso

    return now_iso()


# ---------------------------------------------------------------- pure rendering


SNAPSHOT = [
    WorkerRow("api", "working", 12.4, "Bash: pytest -q", 3, 0, "/src/api"),
    WorkerRow("docs", "idle", 185, "stop (1 background running)", 7, 1, "/src/docs"),
    WorkerRow("new", "launching", 0.5, "", 0, 0, "/src/new"),
    WorkerRow("old", "gone", 7300, "session_end (other)", 1, 0, "/src/old"),
]


def test_table_of_a_fixed_snapshot() -> None:
    """Every column of every row is shown, in order, with time in state made coarse."""
    console = Console(file=StringIO(), width=120, color_system=None)
    console.print(render_table(SNAPSHOT, as_of="12:00:00"))
    lines = text_of(console).splitlines()
    assert "csd workers (4)" in lines[0]
    header = next(line for line in lines if "NAME" in line)
    assert [c for c in COLUMNS if c in header] == list(COLUMNS)
    assert header.index("NAME") < header.index("STATE") < header.index("LAST EVENT") < header.index("CWD")

    def cells(name: str) -> list[str]:
        line = next(line for line in lines if f" {name} " in line)
        return [c.strip() for c in line.strip("│ ").split("│")]

    assert cells("api") == ["api", "working", "12s", "", "Bash: pytest -q", "", "3", "", "", "/src/api"]
    assert cells("docs") == ["docs", "idle", "3m", "", "stop (1 background running)", "", "7", "1", "", "/src/docs"]
    assert cells("new") == ["new", "launching", "0s", "", "—", "", "0", "", "", "/src/new"]
    assert cells("old") == ["old", "gone", "2h", "", "session_end (other)", "", "1", "", "", "/src/old"]
    assert "1 idle, 1 working, 1 launching, 1 gone · 0 need attention · - total · as of 12:00:00" in lines[-1]


def test_attention_rows_first_with_reason_outcome_duration_cost_and_summary() -> None:
    rows = [
        WorkerRow("a-ok", "idle", 5, "stop", 2, 0, "/a", cost_usd=0.0121, outcome="ok", turn_seconds=3.2),
        WorkerRow("z-bad", "idle", 5, "stop_failure: rate_limit", 1, 0, "/z", attention="last turn failed: rate_limit",
                  cost_usd=0.5, outcome="api_error", turn_seconds=61),
        WorkerRow("b-new", "launching", 0.5, "", 0, 0, "/b"),
    ]
    console = Console(file=StringIO(), width=160, color_system=None)
    console.print(render_table(rows))
    lines = text_of(console).splitlines()
    body = [line for line in lines if line.startswith("│") and "NAME" not in line]
    assert [line.split("│")[1].strip() for line in body] == ["z-bad", "a-ok", "b-new"]  # attention first
    cells = [c.strip() for c in body[0].strip("│ ").split("│")]
    assert cells == ["z-bad", "idle", "5s", "last turn failed: rate_limit", "stop_failure: rate_limit", "api_error 1m",
                     "1", "", "$0.5000", "/z"]
    assert [c.strip() for c in body[1].strip("│ ").split("│")][5:9] == ["ok 3s", "2", "", "$0.0121"]
    assert "2 idle, 1 launching · 1 needs attention · $0.5121 total" in lines[-1]


def test_states_are_coloured() -> None:
    table = render_table(SNAPSHOT)
    styles = {str(cell): cell.style for cell in table.columns[1].cells if isinstance(cell, Text)}
    assert styles == {"working": "yellow", "idle": "green", "launching": "cyan", "gone": "dim red"}
    assert STATE_STYLES["terminated"] == "magenta"


def test_empty_table_says_how_to_start() -> None:
    console = Console(file=StringIO(), width=120, color_system=None)
    console.print(render_table([]))
    assert "no workers yet; start one with: csd launch NAME DIR" in text_of(console)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0, "0s"), (12.9, "12s"), (59, "59s"), (60, "1m"), (185, "3m"), (3600, "1h"), (90000, "1d"), (-3, "0s")]
)
def test_time_in_state(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


def test_plain_rows_print_one_line_per_change() -> None:
    out = StringIO()
    plain = PlainRows(out)
    a = WorkerRow("a", "idle", 0, "session_start", 0, 0, "/")
    plain([a])
    plain([a])  # nothing changed: nothing printed
    plain([WorkerRow("a", "working", 0, "prompt: hi", 0, 0, "/")])
    plain([])
    lines = [line.split("\t") for line in out.getvalue().splitlines()]
    assert [fields[1:] for fields in lines] == [
        ["a", "idle", "session_start"],
        ["a", "working", "prompt: hi"],
        ["a", REMOVED, ""],
    ]
    assert all(fields[0].endswith("Z") for fields in lines)


# ---------------------------------------------------------------- csd watch, event-driven


async def test_rows_appear_change_and_disappear(env: Env, watching: tuple[asyncio.Task[int], Redraws, Console]) -> None:
    """A launched worker appears, shows its tool call while working, counts its turn, and vanishes when stopped."""
    task, redraws, console = watching
    async with Fleet() as sup:
        await sup.launch("alpha", str(env.root))
        await redraws.until(in_state("alpha", "idle"))
        await sup.send("alpha", "TOOL:Bash:echo from alpha\nSLEEP:1\nREPLY:ok")
        _, rows = await redraws.until(in_state("alpha", "working", last_event="Bash: echo from alpha"))
        assert row(rows, "alpha").cwd == str(env.root.resolve())  # type: ignore[union-attr]
        await sup.wait_for_turn("alpha")
        await redraws.until(in_state("alpha", "idle", turns=1, last_event="stop"))
        await sup.stop("alpha")
        await redraws.until(absent("alpha"))
    assert await stop_watch(task) == 0
    shown = text_of(console)
    for piece in ("alpha", "working", "Bash: echo from alpha", "idle", "stop", "csd workers (0)"):
        assert piece in shown


async def test_event_redraws_within_100ms_and_quiet_redraws_nothing(
    env: Env, watching: tuple[asyncio.Task[int], Redraws, Console]
) -> None:
    """An appended event is on screen within 100 ms; with nothing happening, nothing is redrawn."""
    task, redraws, console = watching
    meta = env.add_worker("beta", [{"event": "session_start", "source": "startup"}])
    await redraws.until(in_state("beta", "idle"))

    mark = len(redraws.calls)
    t0 = time.monotonic()
    append_event(env, meta.session_id, event="user_prompt_submit", prompt="run the tests", prompt_id="p1")
    t1, _ = await redraws.until(in_state("beta", "working"), after=mark)
    assert t1 - t0 < 0.1, f"event took {1000 * (t1 - t0):.0f} ms to reach the table"

    count = len(redraws.calls)
    await asyncio.sleep(0.5)  # the one sleep: absence of activity can only be shown by waiting
    assert len(redraws.calls) == count, "redrawn in full while nothing happened"  # (the clock may tick)

    append_event(env, meta.session_id, event="pre_tool_use", tool="Bash", tool_input={"command": "pytest -q"}, prompt_id="p1")
    await redraws.until(in_state("beta", "working", last_event="Bash: pytest -q"), after=count)
    append_event(env, meta.session_id, event="stop", prompt_id="p1")
    await redraws.until(in_state("beta", "idle", turns=1), after=count)
    assert await stop_watch(task) == 0


async def test_turns_count_the_whole_log(env: Env, watching: tuple[asyncio.Task[int], Redraws, Console]) -> None:
    """Turns done include those before the tail the state machine folds (it starts at the last anchor)."""
    _, redraws, _ = watching
    events: list[dict[str, object]] = [{"event": "session_start"}]
    for i in range(3):
        events += [{"event": "user_prompt_submit", "prompt_id": f"p{i}"}, {"event": "stop", "prompt_id": f"p{i}"}]
    env.add_worker("gamma", events)
    await redraws.until(in_state("gamma", "idle", turns=3, last_event="stop"))


async def test_worker_killed_shows_gone(env: Env, watching: tuple[asyncio.Task[int], Redraws, Console]) -> None:
    _, redraws, _ = watching
    env.add_worker("delta", [{"event": "session_start"}])
    await redraws.until(in_state("delta", "idle"))
    env.tmux("kill-session", "-t", "=delta")
    await redraws.until(in_state("delta", "gone"))


async def test_workers_found_at_the_start_share_one_pane_listing_and_are_followed_for_real(env: Env) -> None:
    """The workers there when watch starts are looked up in one ``list-panes -a`` (Supervisor.one_pane_listing):
    a live one is idle and its death is noticed later, a dead one is gone, one whose launch is under way is
    launching and followed once its session is up."""
    from csd.workers import Meta, now_iso

    env.add_worker("live", [{"event": "session_start"}])
    env.add_worker("dead", [{"event": "session_start"}], live=False)
    sid = str(uuid.uuid4())
    env.wdir.write_meta(Meta("late", sid, str(env.root), now_iso()))
    env.wdir.events_path(sid).touch()
    redraws = Redraws()
    task = asyncio.create_task(watch("", capture_console(), on_redraw=redraws))
    try:
        await redraws.until(lambda rows: bool(in_state("live", "idle")(rows) and in_state("dead", "gone")(rows)
                                              and in_state("late", "launching")(rows)))
        env.session("late")
        append_event(env, sid, event="session_start", source="startup")
        await redraws.until(in_state("late", "idle"))
        env.tmux("kill-session", "-t", "=live")
        await redraws.until(in_state("live", "gone"))
        assert await stop_watch(task) == 0
    finally:
        if not task.done():
            task.cancel()


async def test_meta_before_tmux_session_shows_launching(
    env: Env, watching: tuple[asyncio.Task[int], Redraws, Console]
) -> None:
    """launch writes the meta before tmux starts: the row is launching, not gone, and follows the worker once it is up."""
    _, redraws, _ = watching
    from csd.workers import Meta, now_iso

    sid = str(uuid.uuid4())
    env.wdir.write_meta(Meta("eps", sid, str(env.root), now_iso()))
    env.wdir.events_path(sid).touch()
    await redraws.until(in_state("eps", "launching"))
    env.session("eps")
    append_event(env, sid, event="session_start", source="startup")
    await redraws.until(in_state("eps", "idle"))
    # and it is followed for real now: a death is noticed
    env.tmux("kill-session", "-t", "=eps")
    await redraws.until(in_state("eps", "gone"))


async def test_pattern_filters_by_name(env: Env) -> None:
    env.add_worker("api-1", [{"event": "session_start"}])
    env.add_worker("web-1", [{"event": "session_start"}])
    redraws = Redraws()
    task = asyncio.create_task(watch("api", capture_console(), on_redraw=redraws))
    _, rows = await redraws.until(lambda rows: bool(rows))
    assert [r.name for r in rows] == ["api-1"]
    assert await stop_watch(task) == 0


async def test_missing_workers_dir_is_created(env: Env) -> None:
    assert not env.wdir.path.exists()
    redraws = Redraws()
    task = asyncio.create_task(watch("", capture_console(), on_redraw=redraws))
    _, rows = await redraws.until(lambda rows: True)
    assert rows == [] and env.wdir.path.is_dir()
    assert oct(env.wdir.path.stat().st_mode & 0o777) == "0o700"
    assert await stop_watch(task) == 0


async def test_unreadable_meta_is_skipped_with_a_warning(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.wdir.ensure()
    (env.wdir.path / f"{uuid.uuid4()}.meta").write_text("{not json")
    env.add_worker("zeta", [{"event": "session_start"}])
    console = capture_console()
    redraws = Redraws()
    task = asyncio.create_task(watch("", console, on_redraw=redraws))
    _, rows = await redraws.until(lambda rows: bool(rows))
    assert [r.name for r in rows] == ["zeta"]
    assert "skipping unreadable meta" in capsys.readouterr().err
    # one appearing later is skipped too; the live table prints the warning above itself
    (env.wdir.path / f"{uuid.uuid4()}.meta").write_text("[]")
    env.add_worker("eta", [{"event": "session_start"}])
    _, rows = await redraws.until(lambda rows: row(rows, "eta") is not None)
    assert [r.name for r in rows] == ["eta", "zeta"]
    assert "skipping unreadable meta" in text_of(console) + capsys.readouterr().err
    assert await stop_watch(task) == 0


async def test_workers_dir_removed_ends_watch_with_an_error(env: Env) -> None:
    env.wdir.ensure()
    redraws = Redraws()
    task = asyncio.create_task(watch("", capture_console(), on_redraw=redraws))
    await redraws.until(lambda rows: True)
    shutil.rmtree(env.wdir.path)
    with pytest.raises(CsdError, match="was removed"):
        async with asyncio.timeout(WAIT):
            await task


async def test_cli_watch_without_a_terminal_prints_plain_rows(env: Env) -> None:
    """``csd watch`` piped: one TSV line per change on stdout, nothing on stderr, Ctrl-C exits 0."""
    meta = env.add_worker("theta", [{"event": "session_start", "source": "startup"}])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "csd", "watch", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        async with asyncio.timeout(WAIT):
            assert proc.stdout is not None
            first = (await proc.stdout.readline()).decode().rstrip("\n").split("\t")
            assert first[1:] == ["theta", "idle", "session_start (startup)"]
            append_event(env, meta.session_id, event="user_prompt_submit", prompt="go", prompt_id="p1")
            second = (await proc.stdout.readline()).decode().rstrip("\n").split("\t")
            assert second[1:] == ["theta", "working", "prompt: go"]
            env.wdir.remove_files(meta)
            third = (await proc.stdout.readline()).decode().rstrip("\n").split("\t")
            assert third[1:] == ["theta", REMOVED, ""]
            proc.send_signal(signal.SIGINT)
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert out == b"" and err == b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_watch_on_the_polling_fallback(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where inotify is missing (macOS) the watcher polls; the table follows launches, events and stops the same way."""
    monkeypatch.setenv("CSD_WATCH_BACKEND", "poll")
    redraws = Redraws()
    task = asyncio.create_task(watch("", capture_console(), on_redraw=redraws))
    await redraws.until(lambda rows: True)
    meta = env.add_worker("iota", [{"event": "session_start"}])
    await redraws.until(in_state("iota", "idle"))
    append_event(env, meta.session_id, event="user_prompt_submit", prompt="go", prompt_id="p1")
    await redraws.until(in_state("iota", "working"))
    env.wdir.remove_files(meta)
    await redraws.until(absent("iota"))
    assert await stop_watch(task) == 0


def test_a_table_longer_than_the_terminal_shows_attention_rows_and_says_how_many_more() -> None:
    rows = [WorkerRow(f"w{i:03d}", "idle", 1, "stop", 1, 0, "/") for i in range(30)]
    rows.append(WorkerRow("zz-failed", "idle", 1, "stop_failure", 1, 0, "/", attention="last turn failed: unknown"))
    console = Console(file=StringIO(), width=160, color_system=None)
    console.print(render_table(rows, limit=5))
    text = text_of(console)
    body = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│") and "NAME" not in line]
    assert body == ["zz-failed", "w000", "w001", "w002", "w003"]
    assert "26 more not shown · 31 idle · 1 needs attention" in text


# ---------------------------------------------------------------- the terminal's table, cell by cell


WIDE = [
    *SNAPSHOT,
    WorkerRow("z-bad", "idle", 5, "stop_failure: rate_limit", 1, 0, "/z", attention="last turn failed: rate_limit",
              cost_usd=0.5, outcome="api_error", turn_seconds=61),
    WorkerRow("retry", "working", 75, "API retrying: attempt 3", 2, 0, "/r", retrying=True, cost_usd=0.0121,
              outcome="ok", turn_seconds=3.2),
    WorkerRow("t", "terminated", 9, "session_end (prompt_input_exit) " * 3, 4, 2, "/a/very/long/" * 8,
              attention="terminated while its shim still exists"),
]


@pytest.mark.parametrize("width", [200, 120, 80, 50])
@pytest.mark.parametrize("color_system", [None, "truecolor"])
def test_the_terminal_table_prints_what_rich_prints(width: int, color_system: str | None) -> None:
    """csd.livetable composes the table from cached cells; every line is the one rich prints for the same
    Table, at each width (narrow ones shrink and wrap columns), in colour or not, again once cached."""
    from csd.livetable import TableLines
    from csd.render import CELL_MAKERS, row_cells, table_parts, table_template

    console = Console(file=StringIO(), width=width, color_system=color_system, force_terminal=True)  # type: ignore[arg-type]
    lines = TableLines(console, table_template(), CELL_MAKERS)
    for rows, as_of, limit in [(WIDE, "12:00:00", None), (WIDE[:3], None, None), (WIDE, "12:00:01", 4), ([], None, None),
                               (WIDE, "12:00:00", None)]:
        console.file = StringIO()
        console.print(render_table(rows, as_of, limit))
        title, caption, shown = table_parts(rows, as_of, limit)
        assert lines.lines(title, caption, [row_cells(r) for r in shown], width) == text_of(console).splitlines()


def test_the_terminal_table_rewrites_only_the_lines_that_changed() -> None:
    """A redraw writes the changed row and the summary under the table, nothing else of it."""
    from dataclasses import replace

    from csd.render import live_table

    console = Console(file=StringIO(), width=160, height=40, color_system=None, force_terminal=True)
    rows = [WorkerRow(f"w{i}", "idle", 5, "stop", 1, 0, "/a") for i in range(10)]
    with live_table(console, rows) as draw:
        draw(rows)
        mark = len(text_of(console))
        changed = [*rows[:3], replace(rows[3], state="working", last_event="prompt: go"), *rows[4:]]
        draw(changed)
        written = text_of(console)[mark:]
    assert "prompt: go" in written and " w3 " in written and "9 idle, 1 working" in written
    assert not any(f" w{i} " in written for i in (0, 1, 2, 4, 9)) and "NAME" not in written


@pytest.mark.parametrize("width", [200, 90])
def test_the_live_view_draws_what_the_whole_table_draws_frame_after_frame(width: int) -> None:
    """csd.render.LiveView carries the summary, the order and each shown row's cells, measure and lines over from
    one frame to the next for the rows a snapshot hands unchanged; frame after frame (rows changing state, time,
    cost and attention, coming and going, a terminal resized and shortened), its lines are those of the whole
    table worked out anew."""
    import random
    from dataclasses import replace

    from csd.livetable import TableLines
    from csd.render import CELL_MAKERS, LiveView, row_cells, table_parts, table_template

    rng = random.Random(15)
    console = Console(file=StringIO(), width=width, color_system="truecolor", force_terminal=True)
    view = LiveView(TableLines(console, table_template(), CELL_MAKERS))
    reference = TableLines(console, table_template(), CELL_MAKERS)
    rows = [WorkerRow(f"w{i:02d}", "idle", 3, "stop", 1, 0, "/a", cost_usd=None if i % 7 else 0.25) for i in range(40)]
    for frame in range(200):
        rows = list(rows)
        for i in rng.sample(range(len(rows)), rng.choice([0, 1, 3, len(rows)])):
            r = rows[i]
            change = rng.choice(["state", "time", "cost", "attention", "long"])
            if change == "state":
                rows[i] = replace(r, state="working" if r.state == "idle" else "idle", seconds=0, last_event="prompt: go")
            elif change == "time":
                rows[i] = r.at(r.seconds + 1, r.attention)
            elif change == "cost":
                rows[i] = replace(r, cost_usd=round((r.cost_usd or 0) + 0.0121, 4), turns=r.turns + 1)
            elif change == "attention":
                rows[i] = r.at(r.seconds, None if r.attention else "last turn failed: overloaded")
            else:
                rows[i] = replace(r, last_event="notification: " + "waiting for input " * rng.randint(0, 4))
        if frame % 50 == 25:  # one goes, another comes
            del rows[rng.randrange(len(rows))]
            rows.append(WorkerRow(f"n{frame}", "launching", 0, "", 0, 0, "/new/" * rng.randint(1, 30)))
        w = width if frame % 90 < 80 else width - 17
        limit = 30 if frame % 60 < 40 else 12
        as_of = f"12:00:{frame % 60:02d}"
        title, caption, shown = table_parts(rows, as_of, limit)
        assert view.frame(rows, as_of, w, limit) == reference.lines(title, caption, [row_cells(r) for r in shown], w), frame


def test_watch_in_a_real_terminal_follows_a_change_and_a_resize(env: Env) -> None:
    """``csd watch`` in a tmux pane: the table shows the workers, a turn's start rewrites its row, and a wider
    pane (SIGWINCH: the size is asked of the terminal again only then) gets the whole table where a narrow one
    showed it cropped (the cwd is long)."""
    from support import until

    env.add_worker("alpha", [{"event": "session_start"}, {"event": "stop"}])
    env.add_worker("beta", [{"event": "session_start"}])
    # COLUMNS and LINES (a test runner's) would fix rich's idea of the terminal's size
    env.tmux("new-session", "-d", "-s", "watching", "-x", "100", "-y", "30", "--",
             "env", "-u", "COLUMNS", "-u", "LINES", sys.executable, "-m", "csd", "watch")
    env.tmux("resize-window", "-t", "=watching", "-x", "100", "-y", "30")  # the server's other sessions set its size

    def screen() -> list[str]:
        return env.tmux("capture-pane", "-p", "-t", "=watching:").stdout.splitlines()

    def top() -> str:
        return next((line for line in screen() if line.startswith("┏")), "")

    until(lambda: "csd workers (2)" in "\n".join(screen()) and len(top()) == 100)
    assert not top().endswith("┓")  # cropped
    alpha = next(m for m in env.wdir.metas() if m.tmux_name == "alpha")
    with open(env.wdir.events_path(alpha.session_id), "a") as f:
        f.write(json.dumps({"ts": "2026-11-25T00:00:02Z", "event": "user_prompt_submit", "prompt": "go"}) + "\n")
    until(lambda: any("alpha" in line and "working" in line for line in screen()))
    env.tmux("resize-window", "-t", "=watching", "-x", "220")
    until(lambda: top().endswith("┓") and 100 < len(top()) <= 220)
    assert any("alpha" in line and "working" in line for line in screen())
    env.tmux("send-keys", "-t", "=watching:", "C-c")  # watch ends, and its pane with it
    until(lambda: env.tmux("has-session", "-t", "=watching", check=False).returncode != 0)


@pytest.mark.parametrize("caption", ["2 idle · as of 12:30:45", "a :smile: and :100: here", "[bold]marked[/] up",
                                     "a caption far longer than the table is wide, so that rich wraps it " * 3])
def test_the_terminal_tables_caption_is_what_rich_prints(caption: str) -> None:
    """The caption as rich prints it: its short way (one line in one style) only where rich prints just that."""
    from csd.livetable import TableLines
    from csd.render import CELL_MAKERS, row_cells, table_template

    console = Console(file=StringIO(), width=200, color_system="truecolor", force_terminal=True)
    table = table_template("t", caption)
    table.add_row(*(make(*cell) for make, cell in zip(CELL_MAKERS, row_cells(SNAPSHOT[0]))))
    console.print(table)
    lines = TableLines(console, table_template(), CELL_MAKERS).lines("t", caption, [row_cells(SNAPSHOT[0])], 200)
    assert lines == text_of(console).splitlines() and lines[1].endswith("┓")  # whole, not cropped by rich
