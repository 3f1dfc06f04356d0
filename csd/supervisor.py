"""The asyncio supervisor: one state machine per tracked worker, fed by the watcher and liveness, and the async API.

Python controllers use it directly; the CLI is a thin client of the same methods::

    async with Supervisor() as sup:
        await sup.send("api", "run the tests")
        async with asyncio.timeout(600):
            stop = await sup.wait_for_turn("api")
        reply = await sup.converse("api", "summarise what failed")

Timeouts belong to the caller (``asyncio.timeout``); every ``wait_*`` checks the current state before
it waits, so a change that happened before the call is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from csd import tmux
from csd.errors import CsdError, NotRunning
from csd.console import err, warn_bad_line, warn_long_line
from csd.events import BadLine, Event, parse_line
from csd.states import State, Worker, describe, fold, state_event, turn_over
from csd.watch import DirWatcher, Follower
from csd.reply import Reply, file_size, last_turn_markdown, transcript_file, turn_failure
from csd.sending import (Died, Driven, Pause, Submitted, WorkerLock, announce, check_arrival, check_sendable, checked,
                         confirmation, enter_hold, path_hint, prepare, reply_of, steps, turn_end)
from csd.workers import SPACE_CHECK_INTERVAL, Meta, WorkersDir, events_unwritable

if TYPE_CHECKING:
    from csd.sending import Steps
    from csd.transcript import ApiState

T = TypeVar("T")

#: Liveness check period where the OS has no pidfd (macOS): one tmux call a second.
LIVENESS_FALLBACK_INTERVAL = 1.0
#: How many recent events each tracked worker keeps (send's confirmation comes within a few).
RECENT_EVENTS = 1024
#: While a worker's launch is under way, how often to look for its tmux session.
STARTING_CHECK_INTERVAL = 0.1
@dataclass
class Tracked:
    """A worker the supervisor follows: its meta, its machine, and what arrived since tracking began."""

    meta: Meta
    worker: Worker
    line_count: int  # complete lines seen so far in the current file
    # the latest events read since tracking began (send looks for its confirmation among them); bounded
    # so that a long-lived watch over busy workers does not grow without end
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    removed: bool = False  # the events file was deleted (the worker was stopped)
    gen: int = 0  # truncations or replacements of the events file seen (see Event.gen)
    pidfd: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # what the transcript says of the turn's API calls (Supervisor.follow_api): while working, and after a
    # turn that failed (its attempts); None otherwise, when it says nothing (ApiState()), or when not followed
    api: ApiState | None = None
    # set by each event or liveness change of this worker (Supervisor.wait_worker)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.meta.tmux_name

    @property
    def state(self) -> State:
        return State(self.worker.state)

    @property
    def pos(self) -> tuple[int, int]:
        """The position of the last line read, comparable with Event.pos."""
        return (self.gen, self.line_count)

    def describe(self) -> str:
        """What the worker was doing, for timeout messages."""
        return describe(self.worker, time.time())


class Supervisor:
    """Tracks workers of one workers dir; every waiting method is event-driven."""

    def __init__(self, wdir: WorkersDir | None = None, backend: str | None = None, machine: bool = True,
                 gather: float = 0.0) -> None:
        self.wdir = wdir or WorkersDir()
        self._machine = machine  # each worker on the transitions machine (False: a waiter, see states.py)
        self._backend = backend
        # DirWatcher.gather of the watchers (a watch over many workers; never a waiter, whose wake it would delay)
        self._gather = gather
        self._api_gather = gather  # the transcript dirs' (follow_api)
        self._watcher: DirWatcher | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tracked: dict[str, Tracked] = {}
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[Tracked, Event | None], None]] = []
        self._follow_api = False
        # follow_api: one watcher per transcript directory, shared by the workers whose transcripts are there
        # (workers in one cwd share it), so a table of many workers costs a few inotify instances, not one each
        self._transcript_dirs: dict[Path, tuple[DirWatcher, int]] = {}
        self._unwritable: str | None = None  # why the events files cannot be written, once seen
        self._space_task: asyncio.Task[None] | None = None
        # within one_pane_listing(): each tmux server's panes, listed once (None: one tmux call per worker)
        self._panes: dict[str | None, dict[str, tmux.Pane]] | None = None

    # ------------------------------------------------------------ lifecycle of the supervisor

    async def __aenter__(self) -> Supervisor:
        self.wdir.ensure()
        self._watcher = DirWatcher(self.wdir.path, backend=self._backend, gather=self._gather)
        await self._watcher.__aenter__()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for tr in list(self._tracked.values()):
            self._untrack(tr)
        if self._space_task is not None:
            self._space_task.cancel()
        try:
            if self._tg is not None:
                # Every task was just cancelled; the body's own exception (if any) propagates as is,
                # not wrapped in an ExceptionGroup by the TaskGroup.
                await self._tg.__aexit__(None, None, None)
        finally:
            if self._watcher is not None:
                await self._watcher.__aexit__(None, None, None)

    @property
    def watcher(self) -> DirWatcher:
        assert self._watcher is not None, "use `async with Supervisor() as sup`"
        return self._watcher

    def add_listener(self, fn: Callable[[Tracked, Event | None], None]) -> None:
        """Call ``fn(tracked, event)`` after each event (event None: a liveness or tracking change)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[Tracked, Event | None], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    # ------------------------------------------------------------ tracking

    def resolve(self, handle: str) -> Meta:
        return self.wdir.resolve(handle, err)

    async def track(self, handle: str | Meta, min_line: int | None = None) -> Tracked:
        """Start following a worker (idempotent): fold the tail of its log, then follow new lines and liveness."""
        meta = handle if isinstance(handle, Meta) else self.resolve(handle)
        if meta.tmux_name in self._tracked:
            return self._tracked[meta.tmux_name]
        assert self._tg is not None
        # The watch is already on the directory, so lines appended after this read are not lost:
        # the follower starts at the first line the tail did not count.
        path = self.wdir.events_path(meta.session_id)
        tail = self.wdir.read_tail(meta.session_id, warn_bad_line(path), min_line)
        tr = Tracked(meta, fold(tail.events, machine=self._machine), tail.line_count)
        self._tracked[meta.tmux_name] = tr
        follower = self.watcher.follow(path.name, start_line=tail.line_count, on_long=warn_long_line(path))
        tr.tasks.append(self._tg.create_task(self._pump(tr, follower)))
        if self._follow_api:
            tr.tasks.append(self._tg.create_task(self._api_follower(tr)))
        await self._watch_liveness(tr)
        return tr

    def follow_api(self, gather: float | None = None) -> None:
        """From now on keep ``Tracked.api`` of every tracked worker current: while a worker is working, its
        transcript's changes (inotify on its directory, no polling) read the lines appended since the last
        read (transcriptfile.ApiFollower), so a retrying API call is seen with its attempts; listeners hear of
        each change (event None). ``gather``: the transcript dirs' watchers' DirWatcher.gather (default: the
        supervisor's)."""
        if self._follow_api:
            return
        self._follow_api = True
        if gather is not None:
            self._api_gather = gather
        assert self._tg is not None
        for tr in self._tracked.values():
            tr.tasks.append(self._tg.create_task(self._api_follower(tr)))

    @contextlib.asynccontextmanager
    async def _transcript_dir(self, directory: Path) -> AsyncIterator[DirWatcher]:
        """The shared watcher of a transcript directory, for as long as someone uses it."""
        watcher, users = self._transcript_dirs.get(directory, (None, 0))
        if watcher is None:
            watcher = DirWatcher(directory, backend=self._backend, gather=self._api_gather)
            await watcher.__aenter__()
        self._transcript_dirs[directory] = (watcher, users + 1)
        try:
            yield watcher
        finally:
            watcher, users = self._transcript_dirs[directory]
            if users > 1:
                self._transcript_dirs[directory] = (watcher, users - 1)
            else:
                del self._transcript_dirs[directory]
                await watcher.__aexit__(None, None, None)

    async def _api_follower(self, tr: Tracked) -> None:
        from csd.transcript import ApiState
        from csd.transcriptfile import ApiFollower

        # kept across turns: each read folds only the lines appended since the last (a new file after /clear)
        follower: ApiFollower | None = None
        path: Path | None = None  # the transcript of the current (or last) turn
        hint: object = None  # the transcript_path the hook gave when ``path`` was looked up
        subscribed: Path | None = None  # the file whose changes update() is called on

        def update() -> None:
            nonlocal follower
            if path is None:
                return
            if follower is None or follower.path != path:
                follower = ApiFollower(path)
            try:
                api = follower.read()
            except OSError as exc:  # not a reason to end the watch (this runs in the watcher's dispatch)
                err(f"csd: warning: cannot read {path}: {exc}")
                return
            if api == ApiState():
                api = None  # says nothing (no request pending, no failed call): as between turns, no redraw
            if api != tr.api:
                tr.api = api
                self._notify(tr, None)

        def on_change(change: object) -> None:
            if tr.state == State.WORKING:  # between turns the transcript's lines say nothing of an API call
                update()

        # One subscription per worker for its life (renewed when the transcript changes, after /clear), read
        # synchronously as the watcher dispatches: no change stream nor task per turn, no task woken per line.
        async with contextlib.AsyncExitStack() as stack:
            while True:
                await self.wait_worker(tr, lambda: tr.state == State.WORKING)
                ev = path_hint(tr.events, tr.worker)
                given = ev.data.get("transcript_path") if ev is not None else None
                if path is None or given is None or given != hint or str(path) != given:
                    path, hint = transcript_file(self.wdir, tr.meta, ev), given
                if path != subscribed:
                    await stack.aclose()
                    subscribed = None
                    if path is not None and path.parent.is_dir():
                        watcher = await stack.enter_async_context(self._transcript_dir(path.parent))
                        # before the first read: nothing written in between is missed; this file's changes only
                        # (a directory shared by many workers' transcripts would call every follower per line)
                        stack.callback(watcher.on_change(path.name, on_change).close)
                        subscribed = path
                update()
                await self.wait_worker(tr, lambda: tr.state != State.WORKING)
                end = tr.worker.turn_end
                # after the turn: keep what the transcript says of a failed one (its attempts), drop the rest
                if path is not None and end is not None and (end.error is not None or end.may_hide_api_error):
                    update()
                elif tr.api is not None:
                    tr.api = None
                    self._notify(tr, None)

    def _untrack(self, tr: Tracked) -> None:
        self._tracked.pop(tr.name, None)
        self._close_pidfd(tr)
        for task in tr.tasks:
            task.cancel()

    def untrack(self, name: str) -> None:
        tr = self._tracked.get(name)
        if tr is not None:
            self._untrack(tr)

    def tracked(self) -> list[Tracked]:
        return list(self._tracked.values())

    async def _pump(self, tr: Tracked, follower: Follower) -> None:
        path = self.wdir.events_path(tr.meta.session_id)
        try:
            async for number, text in follower:
                if follower.resets != tr.gen:
                    # truncated (log rotation) or replaced: a reset, its lines count from 1 again and
                    # are all later than anything read before
                    tr.gen = follower.resets
                tr.line_count = number
                if not text.strip():
                    continue
                try:
                    event = parse_line(text, number).replace(gen=tr.gen)
                except BadLine as bad:
                    warn_bad_line(path)(bad)
                    continue
                tr.events.append(event)
                tr.worker.feed(event)
                self._notify(tr, event)
        finally:
            follower.close()
        # the follower ended: the events file was removed (worker stopped) or the dir went away
        if not path.exists():
            tr.removed = True
            self._notify(tr, None)

    def _notify(self, tr: Tracked, event: Event | None) -> None:
        tr.changed.set()
        self.changed()
        for fn in self._listeners:
            fn(tr, event)

    def changed(self) -> None:
        """Wake every ``wait_until``: something it checks changed (an event, liveness, the disk, or a remote
        host's stream outside this supervisor)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, check: Callable[[], T | None]) -> T:
        """Return ``check()`` once it is not None; re-checked after every change (never polled)."""
        while True:
            result = check()
            if result is not None:
                return result
            await self._changed.wait()

    async def wait_worker(self, tr: Tracked, check: Callable[[], bool]) -> None:
        """Until ``check()``, re-checked after each change of ``tr`` only: a waiter per worker (follow_api) woken
        by every worker's events made the work per event grow with the workers (a third of watch's CPU at 200)."""
        while not check():
            tr.changed.clear()
            await tr.changed.wait()

    async def wait_events(self, check: Callable[[], T | None]) -> T:
        """wait_until for what only the hook's next lines can bring: fails (CsdError) instead of waiting
        blind once the events files cannot be written (a full disk)."""
        if self._space_task is None:
            assert self._tg is not None
            self._space_task = self._tg.create_task(self._watch_space())

        def guarded() -> T | None:
            result = check()
            if result is None and self._unwritable is not None:
                raise CsdError(self._unwritable)
            return result

        return await self.wait_until(guarded)

    async def _watch_space(self) -> None:
        while (why := events_unwritable(self.wdir)) is None:
            await asyncio.sleep(SPACE_CHECK_INTERVAL)
        self._unwritable = why
        self.changed()

    # ------------------------------------------------------------ liveness

    @contextlib.asynccontextmanager
    async def one_pane_listing(self) -> AsyncIterator[None]:
        """While in it, track() finds each worker's pane in one ``list-panes -a`` per tmux server (made when
        first needed) rather than with a tmux call per worker: for tracking many workers at once (a watch's
        start). The listing is dropped on leaving: later tracks ask tmux as it is then."""
        self._panes = {}
        try:
            yield
        finally:
            self._panes = None

    async def _pane(self, tr: Tracked) -> tmux.Pane | None:
        socket = tr.meta.tmux_socket
        if self._panes is None:
            return await tmux.pane_of(tr.name, socket, tr.meta.pane)
        panes = self._panes.get(socket)
        if panes is None:
            try:
                panes = await asyncio.to_thread(tmux.list_panes_sync, socket)
            except CsdError:
                return await tmux.pane_of(tr.name, socket, tr.meta.pane)  # as without the listing
            self._panes[socket] = panes
        return tmux.worker_pane(panes, tr.name, tr.meta.pane)

    async def _watch_liveness(self, tr: Tracked) -> None:
        pane = await self._pane(tr)
        if pane is None and self._starting(tr):
            # launch writes the meta and events file just before it creates the tmux session
            assert self._tg is not None
            tr.tasks.append(self._tg.create_task(self._await_session(tr)))
            return
        meta = tr.meta
        if not tmux.worker_alive(pane, meta.pid, meta.proc_start):
            self._died(tr)  # no pane, a dead one, or one that runs another process now
            return
        assert pane is not None
        try:
            pidfd = os.pidfd_open(pane.pid) if hasattr(os, "pidfd_open") else None
        except ProcessLookupError:
            self._died(tr)
            return
        except OSError as exc:
            if exc.errno == errno.ESRCH:
                self._died(tr)
                return
            pidfd = None
        if pidfd is not None:
            tr.pidfd = pidfd
            loop = asyncio.get_running_loop()

            def exited() -> None:
                self._close_pidfd(tr)
                if self._gather:
                    # the lines it wrote before it died (its session_end) may still be gathering: read them first
                    loop.call_later(self._gather, self._died, tr)
                else:
                    self._died(tr)

            loop.add_reader(pidfd, exited)
            return
        assert self._tg is not None
        tr.tasks.append(self._tg.create_task(self._poll_liveness(tr)))

    def _starting(self, tr: Tracked) -> bool:
        """A worker whose launch is under way (no event yet; WorkersDir.launch_under_way says how it knows)."""
        if tr.line_count or tr.state != State.LAUNCHING:
            return False
        return self.wdir.launch_under_way(tr.meta)

    async def _await_session(self, tr: Tracked) -> None:
        """Until the launching worker's tmux session exists (then watch it), or its launch has failed.

        tmux has no event for a session being created, so this checks every STARTING_CHECK_INTERVAL,
        and only while a launch is under way.
        """
        while self._starting(tr):
            await asyncio.sleep(STARTING_CHECK_INTERVAL)
            if await tmux.pane_of(tr.name, tr.meta.tmux_socket, tr.meta.pane) is not None:
                break
        await self._watch_liveness(tr)

    async def _poll_liveness(self, tr: Tracked) -> None:
        while tr.state != State.GONE:
            await asyncio.sleep(LIVENESS_FALLBACK_INTERVAL)
            pane = await tmux.pane_of(tr.name, tr.meta.tmux_socket, tr.meta.pane)
            if not tmux.worker_alive(pane, tr.meta.pid, tr.meta.proc_start):
                self._died(tr)

    def _close_pidfd(self, tr: Tracked) -> None:
        if tr.pidfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(tr.pidfd)
            os.close(tr.pidfd)
            tr.pidfd = None

    def _died(self, tr: Tracked) -> None:
        if tr.state != State.GONE:
            tr.worker.lose()
            self._notify(tr, None)

    # ------------------------------------------------------------ the API

    async def status(self, handle: str) -> State:
        """The worker's state now (tracking it from here on)."""
        return (await self.track(handle)).state

    def read_events(self, handle: str) -> list[Event]:
        """Every event of the worker's file, oldest first (malformed lines reported and skipped)."""
        from csd.workers import iter_events

        meta = self.resolve(handle)
        path = self.wdir.events_path(meta.session_id)
        return list(iter_events(path, warn_bad_line(path)))

    def read_turn(self, handle: str, full: bool = False) -> str:
        """The last turn of the worker's transcript as markdown."""
        return last_turn_markdown(self.wdir, self.resolve(handle), full)

    async def wait_for_turn(
        self, handle: str, after_line: int | None = None, settled: bool = False
    ) -> Event:
        """The event that ended the worker's turn (stop, stop_failure or session_end), waiting for it if need be.

        A turn that ended in an API error returns its stop_failure event (``event.error`` names the error).

        Raises NotRunning when the worker is gone (died without session_end) or was stopped.
        """
        tr = await self.track(handle, min_line=None if after_line is None else after_line + 1)
        return await self.wait_events(lambda: self._turn_over(tr, after_line, settled))

    def _turn_over(self, tr: Tracked, after_line: int | None, settled: bool) -> Event | None:
        return turn_over(tr.name, tr.worker, tr.removed, after_line, settled)

    def turn_failure(self, name: str, ev: Event) -> str | None:
        """The one-line failure of the turn that ``ev`` ended, or None (csd.reply.turn_failure)."""
        return turn_failure(self.wdir, self.resolve(name), ev)

    def turn_result(self, name: str, settled: bool = False) -> Event | None:
        """What a fan-out wait says of a tracked worker now: the line that ended its turn, a ``gone``
        stand-in when it is not running, or None while its turn goes on."""
        tr = self._tracked[name]
        try:
            return self._turn_over(tr, None, settled)
        except NotRunning:
            return _state_event(tr)

    async def wait_any(self, handles: Iterable[str], settled: bool = False) -> tuple[str, Event]:
        """The first of several workers to end its turn (a gone one counts, with its last event)."""
        trs = [await self.track(h) for h in handles]

        def check() -> tuple[str, Event] | None:
            for tr in trs:
                try:
                    ev = self._turn_over(tr, None, settled)
                except NotRunning:
                    return tr.name, _state_event(tr)  # gone: no line ended its turn
                if ev is not None:
                    return tr.name, ev
            return None

        return await self.wait_events(check)

    async def wait_all(self, handles: Iterable[str], settled: bool = False) -> list[tuple[str, Event]]:
        trs = [await self.track(h) for h in handles]

        def check() -> list[tuple[str, Event]] | None:
            out = []
            for tr in trs:
                try:
                    ev = self._turn_over(tr, None, settled)
                except NotRunning:
                    ev = _state_event(tr)  # gone: no line ended its turn
                if ev is None:
                    return None
                out.append((tr.name, ev))
            return out

        return await self.wait_events(check)

    async def send(self, handle: str, prompt: str, shell: bool = False) -> Event:
        """Submit a prompt and return the event that confirms it; refuses unless the worker is idle.

        The model gets ``prompt.clean_prompt(prompt)`` exactly (see csd/prompt.py for the rules). ``shell``
        runs the text as a command in Claude Code's bash mode (``!``); otherwise a leading ``!`` is text. The
        input line is emptied first: what was left there (an unconfirmed send, a human's typing) is cleared
        and named on stderr. An unknown slash command fails at once with the screen's own words.
        """
        tr, screen = await self._track_and_look(handle)
        return await self._send(tr, screen, prompt, shell)

    async def _send(self, tr: Tracked, screen: str, prompt: str, shell: bool = False) -> Event:
        """send, once the worker is tracked and ``screen`` is what send first saw of its pane: csd.sending's
        steps, driven here with asyncio (csd.waiter drives the same steps for the CLI with no event loop)."""
        p = prepare(prompt, shell)
        check_sendable(self.wdir, tr.name, tr.state)
        announce(p)
        shim = str(self.wdir.shim_path(tr.name))
        with WorkerLock(self.wdir, tr.meta, "csd send"):
            mark = tr.pos
            gen = steps(tr.meta, shim, p, screen, lambda: enter_hold(tr.worker, time.time()), tr.describe)
            ev = await self._drive(tr, gen, mark, p.slash or p.shell)
        check_arrival(tr.name, shim, p, ev)
        return ev

    async def _drive(self, tr: Tracked, gen: Steps, mark: tuple[int, int], slash: bool) -> Event:
        """Run send's steps (csd/sending.py): each one done with asyncio, its answer (or its error) handed back."""
        run = Driven(gen)
        for step in run:
            try:
                if isinstance(step, tmux.Call):
                    run.answer = await tmux.call(step)
                elif isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Died):
                    self._died(tr)
                else:
                    assert isinstance(step, Submitted), step
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(step.seconds):
                            run.answer = await self.wait_events(
                                lambda: confirmation(tr.name, tr.state, tr.removed, tr.events, mark, slash, tr.describe))
            except Exception as exc:  # into the steps, at the step that failed (a cancellation is not handed in)
                run.error = exc
        return run.value

    async def _track_and_look(self, handle: str) -> tuple[Tracked, str]:
        """track() and send's first look at the screen (the input line) at once: the two tmux round trips
        (liveness, capture-pane) overlap. The look needs no state; send reads it only once it knows the worker is
        idle and holds its lock, and the paste that follows could always meet a key typed after any look."""
        meta = self.resolve(handle) if handle not in self._tracked else self._tracked[handle].meta
        look = asyncio.ensure_future(tmux.visible(meta.where, meta.tmux_socket))
        try:
            tr = await self.track(meta)
        except BaseException:
            look.cancel()
            with contextlib.suppress(BaseException):
                await look
            raise
        return tr, await look

    async def converse(self, handle: str, prompt: str) -> Reply:
        """Send, wait for this turn to end, and return its reply (never an earlier turn's).

        The reply is the stop event's ``last_assistant_message`` when that is whole. Otherwise (a release
        before 2.1.47 has none, the hook truncated a long one, or it reads like an API error) the turn is
        found in the transcript, among the lines written after the send, and read once the transcript
        holds its end (waited for, bounded by TRANSCRIPT_LAG_LIMIT, woken by the file's changes).

        Raises TurnFailed (its ``event`` is the stop_failure line, or the stop of a release without
        StopFailure whose transcript ends the turn with the synthetic API error message) when the turn
        ended in an API error, EmptyReply when there is no reply text at all, and NotRunning when the
        worker exited or died during the turn. A truncated reply the transcript cannot complete is
        returned as it is, with a warning on stderr.
        """
        tr, screen = await self._track_and_look(handle)
        before = transcript_file(self.wdir, tr.meta, path_hint(tr.events, tr.worker))
        offset = file_size(before)
        submitted = await self._send(tr, screen, prompt)
        stop = await self.wait_events(lambda: turn_end(tr.name, tr.worker, tr.removed, submitted, tr.describe))
        reply = reply_of(self.wdir, tr.meta, submitted, stop, before, offset, self._backend)
        if reply.needs_transcript:
            await reply.wait_transcript()
        return checked(reply, str(self.wdir.shim_path(tr.name)))


async def until_enter_is_safe(tr: Tracked) -> None:
    """Hold an Enter (stop's /exit) that comes right after launch (csd.sending.enter_hold)."""
    hold = enter_hold(tr.worker, time.time())
    if hold:
        await asyncio.sleep(hold)


def _state_event(tr: Tracked) -> Event:
    """A stand-in event line for a state that no line of the log announces (gone; idle with no turn yet)."""
    return state_event(tr.state)
