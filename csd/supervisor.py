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
import fcntl
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from csd import config, tmux
from csd.errors import CsdError, EmptyReply, NotRunning, TurnFailed, UsageError
from csd.clock import epoch, now_iso
from csd.console import err, warn_bad_line, warn_long_line
from csd.events import BadLine, Event, failure_line, failure_text, parse_line
from csd.states import ENDED, State, Worker, describe, fold, state_event, turn_over
from csd.watch import DirWatcher, Follower
from csd.reply import TRANSCRIPT_LAG_LIMIT, Reply, file_size, last_turn_markdown, transcript_file, turn_failure
from csd.workers import SPACE_CHECK_INTERVAL, Meta, WorkersDir, events_unwritable, open_regular

if TYPE_CHECKING:
    from csd.prompt import InputLine
    from csd.transcript import ApiState

T = TypeVar("T")

#: Liveness check period where the OS has no pidfd (macOS): one tmux call a second.
LIVENESS_FALLBACK_INTERVAL = 1.0
#: How many recent events each tracked worker keeps (send's confirmation comes within a few).
RECENT_EVENTS = 1024
#: While a worker's launch is under way, how often to look for its tmux session.
STARTING_CHECK_INTERVAL = 0.1
#: How long a second controller reads the lock file for its holder's line before giving up on it, and how
#: often: the holder writes it a few microseconds after it takes the lock.
LOCK_HOLDER_WAIT, LOCK_HOLDER_RETRY = 1.0, 0.005
#: While a slash command waits for its confirmation, how often send looks for "Unknown command" on the screen.
UNKNOWN_COMMAND_CHECK = 0.1
#: How long send waits for the screen to show an emptied input line (the TUI redraws within ~50 ms).
CLEAR_INPUT_TIMEOUT = 2.0


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


def _flock_holder(fd: int) -> str:
    """Who holds the flock on ``fd``'s file, from /proc/locks (for a holder that never wrote its line)."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if "FLOCK" in parts and key in parts:
                    return f"pid {parts[parts.index(key) - 1]}"
    except OSError:
        pass
    return "another process"


class WorkerLock:
    """The per-worker lock that stops two controllers from interleaving input on one worker."""

    def __init__(self, wdir: WorkersDir, meta: Meta, what: str) -> None:
        self.path = wdir.lock_path(meta.session_id)
        self.meta = meta
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> WorkerLock:
        fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + LOCK_HOLDER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # The holder writes who it is just after it takes the lock: a loser that reads in between
                # reads nothing, so it reads again (briefly) rather than tell the user nothing.
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                if not holder and time.monotonic() < deadline:
                    time.sleep(LOCK_HOLDER_RETRY)
                    continue
                holder = holder or _flock_holder(fd)
                os.close(fd)
                raise CsdError(f"worker {self.meta.tmux_name!r} is busy: {holder} holds its lock; wait for it to finish, then retry") from None
            except BaseException:
                os.close(fd)
                raise
        with contextlib.suppress(OSError):  # who holds it is a courtesy: a full disk must not fail the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({self.what}, since {now_iso()})".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


class Supervisor:
    """Tracks workers of one workers dir; every waiting method is event-driven."""

    def __init__(self, wdir: WorkersDir | None = None, backend: str | None = None, machine: bool = True,
                 gather: float = 0.0) -> None:
        self.wdir = wdir or WorkersDir()
        self._machine = machine  # each worker on the transitions machine (False: a waiter, see states.py)
        self._backend = backend
        # DirWatcher.gather of the watchers (a watch over many workers; never a waiter, whose wake it would delay)
        self._gather = gather
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

    def follow_api(self) -> None:
        """From now on keep ``Tracked.api`` of every tracked worker current: while a worker is working, its
        transcript's changes (inotify on its directory, no polling) read the lines appended since the last
        read (transcriptfile.ApiFollower), so a retrying API call is seen with its attempts; listeners hear of
        each change (event None)."""
        if self._follow_api:
            return
        self._follow_api = True
        assert self._tg is not None
        for tr in self._tracked.values():
            tr.tasks.append(self._tg.create_task(self._api_follower(tr)))

    @contextlib.asynccontextmanager
    async def _transcript_dir(self, directory: Path) -> AsyncIterator[DirWatcher]:
        """The shared watcher of a transcript directory, for as long as someone uses it."""
        watcher, users = self._transcript_dirs.get(directory, (None, 0))
        if watcher is None:
            watcher = DirWatcher(directory, backend=self._backend, gather=self._gather)
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
                ev = _path_hint(tr)
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
            return await tmux.pane_of(tr.name, socket)
        panes = self._panes.get(socket)
        if panes is None:
            try:
                panes = await asyncio.to_thread(tmux.list_panes_sync, socket)
            except CsdError:
                return await tmux.pane_of(tr.name, socket)  # as without the listing
            self._panes[socket] = panes
        return panes.get(tr.name)

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
            if await tmux.pane_of(tr.name, tr.meta.tmux_socket) is not None:
                break
        await self._watch_liveness(tr)

    async def _poll_liveness(self, tr: Tracked) -> None:
        while tr.state != State.GONE:
            await asyncio.sleep(LIVENESS_FALLBACK_INTERVAL)
            pane = await tmux.pane_of(tr.name, tr.meta.tmux_socket)
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
        """send, once the worker is tracked and ``screen`` is what send first saw of its pane."""
        from csd.prompt import clean_prompt

        text = clean_prompt(prompt)
        if shell and text.startswith("!"):
            text = text[1:]
        if not text.strip():
            raise UsageError("refusing to send an empty prompt" + (" (the prompt was only whitespace and control characters)" if prompt else ""))
        self._check_sendable(tr)
        exact, submit_timeout = _delivery(text)
        slash = not shell and text.lstrip().startswith("/")
        with WorkerLock(self.wdir, tr.meta, "csd send"):
            mark = tr.pos
            before = await self._type_prompt(tr, text, shell, exact, slash, screen)
            ev = await self._until_submitted(tr, mark, submit_timeout, slash, shell, before, text)
        got = ev.data.get("prompt")
        if ev.name == "user_prompt_submit" and exact and not (slash or shell) and isinstance(got, str) and not _arrived_as_sent(text, got):
            err(f"csd: warning: {tr.name!r} received the prompt altered (sent {len(text)} characters, "
                f"it recorded {got[:60]!r}...); see it with: {self.wdir.shim_path(tr.name)} read-turn")
        return ev

    async def _track_and_look(self, handle: str) -> tuple[Tracked, str]:
        """track() and send's first look at the screen (the input line) at once: the two tmux round trips
        (liveness, capture-pane) overlap. The look needs no state; send reads it only once it knows the worker is
        idle and holds its lock, and the paste that follows could always meet a key typed after any look."""
        meta = self.resolve(handle) if handle not in self._tracked else self._tracked[handle].meta
        look = asyncio.ensure_future(tmux.visible(meta.tmux_name, meta.tmux_socket))
        try:
            tr = await self.track(meta)
        except BaseException:
            look.cancel()
            with contextlib.suppress(BaseException):
                await look
            raise
        return tr, await look

    def _check_sendable(self, tr: Tracked) -> None:
        """Only an idle worker takes a prompt, and only while its events can be written."""
        shim = self.wdir.shim_path(tr.name)
        state = tr.state
        if state == State.WORKING:
            raise CsdError(
                f"cannot send to {tr.name!r} while it is working (Claude Code would queue the prompt); run: {shim} wait-for-turn"
            )
        if state == State.LAUNCHING:
            raise CsdError(f"cannot send to {tr.name!r} while it is launching; run: {shim} wait-for-turn")
        if state in ENDED:
            raise NotRunning(f"cannot send to {tr.name!r}: it is {state}; check it with: {shim} status")
        why = events_unwritable(self.wdir)
        if why is not None:
            # the prompt would run, but its events (and the turn's end) would be lost
            raise CsdError(f"not sending to {tr.name!r}: {why}")

    async def _type_prompt(self, tr: Tracked, text: str, shell: bool, exact: bool, slash: bool, screen: str) -> str:
        """Empty the input line (``screen``: the pane as send first saw it), type ``text`` and press Enter; returns the
        screen before (for a slash command)."""
        from csd.prompt import input_stream

        socket = tr.meta.tmux_socket
        try:
            await self._empty_input(tr, socket, screen)
            before = await tmux.capture(tr.name, socket, lines=200) if slash else ""
            stream = input_stream(text, shell, exact)
            await until_enter_is_safe(tr)
            # the text and its Enter in one tmux call (checked on the real binary: tests/e2e/test_prompt_delivery.py)
            await tmux.type_raw(tr.name, stream, f"csd-{tr.meta.session_id}", socket, then=("Enter",))
        except tmux.TmuxError:
            if await tmux.pane_of(tr.name, socket) is None:
                raise NotRunning(f"worker {tr.name!r} is gone: its tmux session ended while the prompt was being sent") from None
            raise
        return before

    async def _until_submitted(self, tr: Tracked, mark: tuple[int, int], submit_timeout: float, slash: bool, shell: bool,
                               before: str, text: str) -> Event:
        """The event that confirms the prompt, pressing Enter again every CSD_SUBMIT_RETRY_INTERVAL (the TUI may
        have swallowed it) and, for a slash command, reading the screen for "Unknown command"."""
        from csd.prompt import unknown_command

        socket, retry = tr.meta.tmux_socket, config.seconds("CSD_SUBMIT_RETRY_INTERVAL")
        command = text.split(None, 1)[0] if slash else ""
        now = time.monotonic()
        deadline, next_press, presses = now + submit_timeout, now + retry, 1
        while (now := time.monotonic()) < deadline:
            wake = min(deadline, next_press, now + UNKNOWN_COMMAND_CHECK if slash else deadline)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, wake - now)):
                    return await self.wait_events(lambda: self._submitted(tr, mark, slash or shell))
            if slash:
                words = unknown_command(before, await tmux.capture(tr.name, socket, lines=200), command)
                if words is not None:
                    raise UsageError(f"{tr.name!r} does not know the command {command!r}; its screen says: {words}")
            if next_press <= time.monotonic() < deadline:
                try:
                    await tmux.send_keys(tr.name, "Enter", socket=socket)
                except tmux.TmuxError:
                    if await tmux.pane_of(tr.name, socket) is not None:
                        raise
                    self._died(tr)
                    continue  # _submitted reports it
                presses += 1
                next_press += retry
        raise CsdError(
            f"{tr.name!r} did not confirm the prompt within {submit_timeout:g}s (no user_prompt_submit after {presses} "
            f"Enter presses; {tr.describe()}); see the screen with: {self.wdir.shim_path(tr.name)} handoff"
        )

    async def _empty_input(self, tr: Tracked, socket: str | None, screen: str) -> None:
        """Start from an empty prompt-mode input line: Esc, Esc clears it wherever the cursor is, Backspace leaves an
        empty bash-mode line. What was cleared is named on stderr (it may be a human's typing after a handoff).

        Text that Esc, Esc leaves exactly as it was is not input but a hint the TUI draws in an empty line
        ("Press up to edit queued messages"): send goes on.
        """
        from csd.prompt import input_line

        async def read() -> InputLine | None:
            return input_line(await tmux.visible(tr.name, socket))

        line = input_line(screen)
        if line is None or line.clean:
            return  # an empty line, or none on the screen to read (csd cannot check it)
        left = line
        deadline = time.monotonic() + CLEAR_INPUT_TIMEOUT
        while line is None or not line.clean:
            if time.monotonic() >= deadline:
                if line == left and left.mode == "prompt":
                    return  # Esc, Esc never changed it: a hint, not input
                shows = "no input line" if line is None else repr(line.text[:80]) + (" in bash mode" if line.mode == "shell" else "")
                raise CsdError(f"could not empty the input line of {tr.name!r} (it shows {shows}); see it with: {self.wdir.shim_path(tr.name)} handoff")
            if line is None:
                # Esc, Esc on an input line that was empty already opens Claude Code's rewind menu: close it. The
                # line was empty, so what it showed was a hint.
                await tmux.send_keys(tr.name, "Escape", socket=socket)
                if left.mode == "prompt":
                    return
            elif line.text:
                await tmux.send_keys(tr.name, "Escape", socket=socket)
                await asyncio.sleep(0.1)  # two Escapes in one read would be one Meta-Escape
                await tmux.send_keys(tr.name, "Escape", socket=socket)
            else:
                await tmux.send_keys(tr.name, "BSpace", socket=socket)
            before = line
            # the TUI redraws; no event says when (~50 ms, more on a busy machine): look every 20 ms, 0.5 s at most
            for _ in range(25):
                await asyncio.sleep(0.02)
                line = await read()
                if line != before:
                    break
        what = f"{left.text[:80]!r}" if left.text else "nothing"
        err(f"csd: note: cleared what was left in {tr.name!r}'s input line" + (" (bash mode)" if left.mode == "shell" else "") + f": {what}")

    def _submitted(self, tr: Tracked, mark: tuple[int, int], slash: bool) -> Event | None:
        if tr.removed or tr.state in ENDED:
            raise NotRunning(f"worker {tr.name!r} ended while the prompt was being sent ({tr.describe()})")
        for ev in tr.events:
            if ev.pos <= mark:
                continue
            # slash commands such as /compact or /clear fire their own events, not user_prompt_submit
            if ev.name == "user_prompt_submit" or (slash and ev.known):
                return ev
        return None

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
        before = transcript_file(self.wdir, tr.meta, _path_hint(tr))
        offset = file_size(before)
        submitted = await self._send(tr, screen, prompt)

        def ended() -> Event | None:
            w = tr.worker
            if tr.removed or w.state == State.GONE:
                raise NotRunning(f"worker {tr.name!r} died during the turn ({tr.describe()})")
            if w.state == State.TERMINATED:
                raise NotRunning(f"worker {tr.name!r} exited during the turn ({tr.describe()})")
            end = w.turn_end
            if w.state == State.IDLE and end is not None and end.pos > submitted.pos:
                return end
            return None

        stop = await self.wait_events(ended)
        if stop.error is not None:
            raise TurnFailed(failure_line(tr.name, stop), stop)
        path = transcript_file(self.wdir, tr.meta, submitted)
        reply = Reply(tr.meta, submitted, stop, path, self._backend, offset if path == before else 0)
        if reply.needs_transcript:
            await reply.wait_transcript()
            turn = reply.turn()
            if turn is not None and turn.api_error is not None:
                from csd.transcript import final_text

                raise TurnFailed(failure_text(tr.name, turn.api_error, final_text(turn)), stop)
        text = reply.text()
        if not text.strip():
            reason = reply.why_empty()
            raise EmptyReply(
                f"{tr.name!r} ended its turn with no reply text ({reason}); see it with: {self.wdir.shim_path(tr.name)} read-turn",
                reason,
            )
        if reply.truncated(text):
            err(
                f"csd: warning: {tr.name!r}: the reply was cut to {len(text)} characters by the hook and the transcript "
                f"({reply.transcript}) did not complete it within {TRANSCRIPT_LAG_LIMIT:g}s; printing what there is"
            )
        return reply


def _path_hint(tr: Tracked) -> Event | None:
    """The newest event the tracker has seen that names the transcript (it changes with /clear)."""
    for ev in reversed(tr.events):
        if isinstance(ev.data.get("transcript_path"), str):
            return ev
    w = tr.worker
    for known in (w.last_event, w.turn_end, w.turn_start):
        if known is not None and isinstance(known.data.get("transcript_path"), str):
            return known
    return None


async def until_enter_is_safe(tr: Tracked) -> None:
    """Hold an Enter (send's, stop's /exit) that comes right after launch: until prompt.ENTER_READY_AFTER_START
    after the worker's session_start (the TUI swallows an earlier one). A later one does not wait."""
    from csd.prompt import ENTER_READY_AFTER_START

    started = tr.worker.started
    at = epoch(started.ts) if started is not None else None
    if at is None:
        return
    hold = at + ENTER_READY_AFTER_START - time.time()
    if 0 < hold <= ENTER_READY_AFTER_START:  # a clock that moved back must not hold longer than the fact says
        await asyncio.sleep(hold)




def _delivery(text: str) -> tuple[bool, float]:
    """(typed exactly, how long to wait for its user_prompt_submit): a prompt over CSD_EXACT_PROMPT_LIMIT goes
    as one paste (said on stderr); an exact one gets the time the TUI takes to ingest it on top."""
    from csd.prompt import INGEST_CHARS_PER_S

    submit_timeout = config.seconds("CSD_SUBMIT_TIMEOUT")
    limit = config.count("CSD_EXACT_PROMPT_LIMIT")
    if len(text) <= limit:
        return True, submit_timeout + len(text) // INGEST_CHARS_PER_S  # the TUI takes in many pastes at its own pace
    err(f"csd: note: the prompt has {len(text)} characters, over CSD_EXACT_PROMPT_LIMIT={limit}: sent as one "
        "paste, which Claude Code shows as [Pasted text] and hands to the model wrapped in <pasted_content>")
    return False, submit_timeout


def _arrived_as_sent(sent: str, recorded: str) -> bool:
    """The hook's ``prompt`` is what was sent (it caps long values: then the kept start must match)."""
    cut = recorded.rfind("…[truncated ")
    return recorded == sent or (cut >= 0 and sent.startswith(recorded[:cut]))


def _state_event(tr: Tracked) -> Event:
    """A stand-in event line for a state that no line of the log announces (gone; idle with no turn yet)."""
    return state_event(tr.state)
