"""One local worker followed with no event loop: what ``wait-for-turn``, ``send`` and ``converse`` run.

A controller may keep dozens of waits at once, so a waiting process stays small (SPEC budget: 15 MB of RSS;
the event loop alone costs a Python process ~5 MB more than this module's whole import), and a send or a
converse starts without importing asyncio (~45 ms of a send's ~100 on the bench's machine). The same facts as
csd.supervisor's, read the same way: the tail folded by the one table (csd.states.fold), the lines appended
since read by csd.lines.FileLines on inotify's word (a watch of the workers dir, as csd.watch.DirWatcher's),
the process's end by its pidfd, the disk checked every SPACE_CHECK_INTERVAL; one rule for what ends a wait
(csd.states.turn_over) and send's one set of steps (csd/sending.py, driven here step by step). One epoll
over those descriptors is the loop.

What this does not do, it hands back (``wait_turn``, ``send`` and ``converse`` return None before they
waited or typed anything) and the caller runs csd.supervisor's instead: a platform without pidfd, inotify
unavailable or CSD_WATCH_BACKEND=poll; for a wait, a worker whose launch is under way (no tmux session to
watch yet; a send refuses it either way).
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable

from csd import config, inotify, tmux
from csd.console import err, warn_bad_line, warn_long_line
from csd.errors import CsdError, TimedOut
from csd.events import BadLine, Event, parse_line
from csd.lines import READ_BUDGET, FileLines
from csd.proc import sigterm_raises
from csd.states import ENDED, State, Worker, describe, fold, turn_over
from csd.workers import SPACE_CHECK_INTERVAL, Meta, WorkersDir, events_unwritable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms and some RSS of a waiter)
if TYPE_CHECKING:
    from typing import TypeVar

    from csd.reply import Reply

    T = TypeVar("T")


def wait_turn(wdir: WorkersDir, meta: Meta, after_line: int | None, settled: bool, timeout: float,
              answer: Callable[[Event], T]) -> T | None:
    """``answer`` of the event that ended ``meta``'s turn, as csd.supervisor.Supervisor.wait_for_turn answers
    it, waiting up to ``timeout`` seconds; None when this worker needs the supervisor's wait (the module's
    docstring). The watch is removed once the turn is over and the instance closed after ``answer``: closing an
    instance that still holds its watch waits for the kernel to retire it (an SRCU grace period, up to ~15 ms
    here), which the answer need not wait for (csd.inotify.Inotify.unwatch).

    Raises NotRunning (gone, stopped while waiting), or CsdError (timed out, the disk is full, tmux)."""
    deadline = time.monotonic() + timeout
    with _following(wdir, meta, None if after_line is None else after_line + 1) as follow:
        if follow is None or not follow.watch_liveness(deadline - time.monotonic()):
            return None
        name = meta.tmux_name
        ev = follow.until(lambda: turn_over(name, follow.worker, follow.removed, after_line, settled), deadline)
        if ev is None:
            doing = describe(follow.worker, time.time())
            raise CsdError(f"timed out after {timeout:g}s waiting for {name!r} to end its turn ({doing})")
        follow.inotify.unwatch()  # nothing more to hear: retired in the background while the answer is written
        return answer(ev)


def send(wdir: WorkersDir, meta: Meta, prompt: str, shell: bool, answer: Callable[[Event], T]) -> T | None:
    """Send ``prompt`` as csd.supervisor.Supervisor.send does (the same steps: csd/sending.py) and return
    ``answer`` of the event that confirms it; None, before anything was typed, when this worker needs the
    supervisor (the module's docstring)."""
    with _following(wdir, meta, None) as follow:
        if follow is None:
            return None
        ev = follow.send(prompt, shell, None)
        follow.inotify.unwatch()  # as wait_turn: retired while the answer is written
        return answer(ev)


def converse(wdir: WorkersDir, meta: Meta, prompt: str, timeout: float) -> Reply | None:
    """Send, wait for this turn to end and return its reply, as csd.supervisor.Supervisor.converse does, within
    ``timeout`` seconds (TimedOut); None, before anything was typed, when this worker needs the supervisor.
    A reply whose transcript must be waited for (csd.reply.Reply.needs_transcript) runs that wait with asyncio:
    only then is asyncio imported."""
    from csd.reply import file_size, transcript_file
    from csd.sending import checked, path_hint, reply_of, turn_end

    deadline = time.monotonic() + timeout
    with _following(wdir, meta, None) as follow:
        if follow is None:
            return None
        before = transcript_file(wdir, meta, path_hint((), follow.worker))
        offset = file_size(before)
        submitted = follow.send(prompt, False, deadline)
        name = meta.tmux_name
        stop = follow.until(lambda: turn_end(name, follow.worker, follow.removed, submitted, follow.doing), deadline)
        if stop is None:
            raise TimedOut(follow.doing())
        follow.inotify.unwatch()  # as wait_turn: the reply is read while the kernel retires the watch
        reply = reply_of(wdir, meta, submitted, stop, before, offset, None)
        if reply.needs_transcript:  # inside: SIGTERM still ends it with its line (sigterm_raises)
            import asyncio

            asyncio.run(reply.wait_transcript())
        return checked(reply, str(wdir.shim_path(name)))


class _following:
    """The watch of the workers dir and one worker followed from its tail on (the line ``min_line`` on, when
    given); ``None`` inside when this process cannot follow it without an event loop."""

    def __init__(self, wdir: WorkersDir, meta: Meta, min_line: int | None) -> None:
        self.wdir, self.meta, self.min_line = wdir, meta, min_line
        self.watch: inotify.Inotify | None = None
        self.follow: Follow | None = None
        self.sigterm: sigterm_raises | None = None

    def __enter__(self) -> Follow | None:
        if config.get("CSD_WATCH_BACKEND") == "poll" or not hasattr(os, "pidfd_open"):
            return None
        self.watch = _watch(self.wdir)
        if self.watch is None:
            return None
        try:
            self.sigterm = sigterm_raises()
            self.sigterm.__enter__()  # from here on: the tmux call that follows may be what SIGTERM interrupts
            self.follow = Follow(self.wdir, self.meta, self.min_line, self.watch)
        except BaseException:
            self.__exit__()
            raise
        return self.follow

    def __exit__(self, *exc: object) -> None:
        try:
            if self.follow is not None:
                self.follow.close()
            if self.sigterm is not None:
                self.sigterm.__exit__()
        finally:
            if self.watch is not None:
                self.watch.close()


def _watch(wdir: WorkersDir) -> inotify.Inotify | None:
    """An inotify instance watching the workers dir, or None when the system has none for us."""
    try:
        watch = inotify.Inotify()
    except (AttributeError, OSError):  # AttributeError: a C library without inotify
        return None
    try:
        watch.add_watch(wdir.path, inotify.DIR_MASK)  # as csd.watch's DirWatcher watches it
    except OSError:
        watch.close()
        return None
    return watch


class Follow:
    """One worker followed from its events file's tail on (set up with the watch already on: nothing
    appended in between is missed): its folded state, the events since a mark (send's confirmation is among
    them), its process's end; ``until`` waits for a check to answer."""

    def __init__(self, wdir: WorkersDir, meta: Meta, min_line: int | None, watch: inotify.Inotify) -> None:
        self.wdir, self.meta = wdir, meta
        self.inotify = watch
        self.path = path = wdir.events_path(meta.session_id)
        self.on_bad = warn_bad_line(path)
        tail = wdir.read_tail(meta.session_id, self.on_bad, min_line)
        self.worker: Worker = fold(tail.events)
        self.line_count = tail.line_count
        self.lines = FileLines(path, tail.line_count, warn_long_line(path), on_reset=lambda why: err(why))
        self.removed = False
        self.pidfd: int | None = None
        self.since: list[Event] | None = None  # while send waits for its confirmation: the events read since it typed
        self.poller = select.epoll()
        self.poller.register(watch.fileno(), select.EPOLLIN)
        # read up to the end now: what came after the tail is taken in, and a truncation from here on is
        # seen as one (FileLines knows where it was)
        self.pump(False)

    def doing(self) -> str:
        return describe(self.worker, time.time())

    def watch_liveness(self, within: float) -> bool:
        """Look the worker's process up (one tmux call, inside the wait's time) and hold its pidfd; False when
        its launch is under way (no session yet: the supervisor's wait knows how to wait for one)."""
        w, meta = self.worker, self.meta
        if self.line_count == 0 and w.state == State.LAUNCHING and self.wdir.launch_under_way(meta):
            return False
        pane = tmux.worker_pane(tmux.list_panes_sync(meta.tmux_socket, within=within), meta.tmux_name, meta.pane)
        if not tmux.worker_alive(pane, meta.pid, meta.proc_start):
            w.lose()  # no pane, a dead one, or one that runs another process now
            return True
        assert pane is not None
        try:
            self.pidfd = os.pidfd_open(pane.pid)
        except ProcessLookupError:
            w.lose()
            return True
        self.poller.register(self.pidfd, select.EPOLLIN)
        return True

    def until(self, check: Callable[[], T | None], deadline: float) -> T | None:
        """``check()`` once it is not None, re-checked after each change; None once ``deadline`` (monotonic) has
        passed. Raises CsdError when the events file cannot be written (a full disk: the wait would be blind)."""
        space_at = 0.0
        while (result := check()) is None:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now >= space_at:
                # a full disk has no event: the hook's next lines would be lost, and the wait blind
                if (why := events_unwritable(self.wdir)) is not None:
                    raise CsdError(why)
                space_at = now + SPACE_CHECK_INTERVAL
            ready = {fd for fd, _ in self.poller.poll(max(0.0, min(deadline, space_at) - now))}
            pidfd = self.pidfd
            exited = pidfd is not None and pidfd in ready
            self.wake(self.inotify.fileno() in ready, exited)
            if exited:
                self._close_pidfd()  # the process ended: nothing more to hear from it
        return result

    def send(self, prompt: str, shell: bool, deadline: float | None) -> Event:
        """csd/sending.py's steps, each done here with no event loop; TimedOut once ``deadline`` has passed."""
        from csd.sending import WorkerLock, announce, check_arrival, check_sendable, drive, enter_hold, prepare, steps

        name = self.meta.tmux_name
        p = prepare(prompt, shell)
        # the first look at the screen runs while tmux is asked about the process (two round trips overlapped)
        look = tmux.start_sync(tmux.visible_call(self.meta.where, self.meta.tmux_socket))
        try:
            self.watch_liveness(config.seconds("CSD_TMUX_TIMEOUT") if deadline is None else deadline - time.monotonic())
            check_sendable(self.wdir, name, State(self.worker.state))
        except BaseException:
            with contextlib.suppress(Exception):
                look.result()  # reaped, not read: the refusal is the answer
            raise
        screen = look.result()
        announce(p)
        shim = str(self.wdir.shim_path(name))
        with WorkerLock(self.wdir, self.meta, "csd send"):
            mark, self.since = (self.lines.resets, self.line_count), []
            gen = steps(self.meta, shim, p, screen, lambda: enter_hold(self.worker, time.time()), self.doing)
            ev = drive(gen, lambda step: self._step(step, mark, p.slash or p.shell, deadline))
        self.since = None
        check_arrival(name, shim, p, ev)
        return ev

    def _step(self, step: object, mark: tuple[int, int], slash: bool, deadline: float | None) -> object:
        from csd.sending import Died, Pause, Submitted, confirmation

        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise TimedOut(self.doing())
        if isinstance(step, tmux.Call):
            return tmux.call_sync(step, None if deadline is None else deadline - now)
        if isinstance(step, Pause):
            time.sleep(step.seconds if deadline is None else min(step.seconds, deadline - now))
        elif isinstance(step, Died):
            self.worker.lose()
        else:
            assert isinstance(step, Submitted), step
            name, until = self.meta.tmux_name, now + step.seconds
            return self.until(lambda: confirmation(name, State(self.worker.state), self.removed, self.since or (), mark, slash,
                                                   self.doing), until if deadline is None else min(until, deadline))
        return None

    def wake(self, changed: bool, exited: bool) -> None:
        """Take in what woke the wait: new lines first (what the hook wrote before the process ended
        counts), then the process's end."""
        gone_dir = False
        if changed:
            names = set()
            for _, mask, name in self.inotify.read():
                names.add(name)
                gone_dir = gone_dir or bool(mask & inotify.DIR_GONE)
            if self.path.name in names or "" in names:  # "": the dir itself (or an overflow: read anyway)
                self.pump(gone_dir)
        if exited:
            self.pump(False)
            # a session_end read before the end is the answer (terminated); otherwise the worker is gone
            if self.worker.state not in ENDED:
                self.worker.lose()

    def pump(self, gone_dir: bool) -> None:
        """Fold what was appended, a few MB at a time (a huge append is never held whole)."""
        more = True
        while more:
            lines, more = self.lines.read(READ_BUDGET)
            self.feed(lines)
        if gone_dir:
            self.feed(self.lines.drain())  # the dir is gone: what the open file holds is the last there is
            self.lines.end()
        if self.lines.ended and not self.path.exists():
            self.removed = True

    def feed(self, lines: list[tuple[int, str]]) -> None:
        for number, text in lines:
            self.line_count = number
            if not text.strip():
                continue
            try:
                event = parse_line(text, number).replace(gen=self.lines.resets)
            except BadLine as bad:
                self.on_bad(bad)
                continue
            self.worker.feed(event)
            if self.since is not None:
                self.since.append(event)

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            self.poller.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def close(self) -> None:
        self._close_pidfd()
        self.poller.close()
        self.lines.end()
