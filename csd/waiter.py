"""A wait for one local worker's turn with no event loop: what ``wait-for-turn`` runs.

A controller may keep dozens of these waiting at once, so a waiting process stays small (SPEC budget: 15 MB
of RSS; the event loop alone costs a Python process ~5 MB more than this module's whole import). The same
facts as csd.supervisor's wait, read the same way: the tail folded by the one table (csd.states.fold), the
lines appended since read by csd.lines.FileLines on inotify's word (a watch of the workers dir, as
csd.watch.DirWatcher's), the process's end by its pidfd, the disk checked every SPACE_CHECK_INTERVAL, and
one rule for what ends the wait (csd.states.turn_over). One epoll over those descriptors is the loop.

What this does not do, it hands back (``wait_turn`` returns None before it waited at all) and the caller
runs csd.supervisor's wait instead: a worker whose launch is under way (no tmux session to watch yet), a
platform without pidfd, inotify unavailable or CSD_WATCH_BACKEND=poll.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable

from csd import config, inotify, tmux
from csd.console import err, warn_bad_line, warn_long_line
from csd.errors import CsdError, Terminated
from csd.events import BadLine, Event, parse_line
from csd.lines import READ_BUDGET, FileLines
from csd.states import ENDED, State, Worker, describe, fold, turn_over
from csd.workers import SPACE_CHECK_INTERVAL, Meta, WorkersDir, events_unwritable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms and some RSS of a waiter)
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")


def wait_turn(wdir: WorkersDir, meta: Meta, after_line: int | None, settled: bool, timeout: float,
              answer: Callable[[Event], T]) -> T | None:
    """``answer`` of the event that ended ``meta``'s turn, as csd.supervisor.Supervisor.wait_for_turn answers
    it, waiting up to ``timeout`` seconds; None when this worker needs the supervisor's wait (the module's
    docstring). ``answer`` runs before the watch is taken down: closing an inotify instance waits for the
    kernel to retire its watch (an SRCU grace period, up to ~15 ms here), which the answer need not wait for.

    Raises NotRunning (gone, stopped while waiting), or CsdError (timed out, the disk is full, tmux)."""
    if config.get("CSD_WATCH_BACKEND") == "poll" or not hasattr(os, "pidfd_open"):
        return None
    deadline = time.monotonic() + timeout
    watch = _watch(wdir)
    if watch is None:
        return None
    try:
        with _sigterm_raises():  # from here on: the tmux call below may be what SIGTERM interrupts
            waiter = _Waiter(wdir, meta, after_line, settled, watch)
            try:
                if not waiter.watch_liveness(deadline - time.monotonic()):
                    return None
                return answer(waiter.run(deadline, timeout))
            finally:
                waiter.close()
    finally:
        watch.close()


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


class _Waiter:
    """One worker followed from its events file's tail on (set up with the watch already on: nothing
    appended in between is missed), until its turn is over."""

    def __init__(self, wdir: WorkersDir, meta: Meta, after_line: int | None, settled: bool, watch: inotify.Inotify) -> None:
        self.wdir, self.meta, self.after_line, self.settled = wdir, meta, after_line, settled
        self.inotify = watch
        self.path = path = wdir.events_path(meta.session_id)
        self.on_bad = warn_bad_line(path)
        tail = wdir.read_tail(meta.session_id, self.on_bad, None if after_line is None else after_line + 1)
        self.worker: Worker = fold(tail.events)
        self.line_count = tail.line_count
        self.lines = FileLines(path, tail.line_count, warn_long_line(path), on_reset=lambda why: err(why))
        self.removed = False
        self.pidfd: int | None = None
        # read up to the end now: what came after the tail is taken in, and a truncation from here on is
        # seen as one (FileLines knows where it was)
        self.pump(False)

    def watch_liveness(self, within: float) -> bool:
        """Look the worker's process up (one tmux call, inside the wait's time) and hold its pidfd; False when
        its launch is under way (no session yet: the supervisor's wait knows how to wait for one)."""
        w, meta = self.worker, self.meta
        if self.line_count == 0 and w.state == State.LAUNCHING and self.wdir.launch_under_way(meta):
            return False
        pane = tmux.list_panes_sync(meta.tmux_socket, within=within).get(meta.tmux_name)
        if not tmux.worker_alive(pane, meta.pid, meta.proc_start):
            w.lose()  # no pane, a dead one, or one that runs another process now
            return True
        assert pane is not None
        try:
            self.pidfd = os.pidfd_open(pane.pid)
        except ProcessLookupError:
            w.lose()
        return True

    def run(self, deadline: float, timeout: float) -> Event:
        poller = select.epoll()
        try:
            return self._loop(poller, deadline, timeout)
        finally:
            poller.close()

    def _loop(self, poller: select.epoll, deadline: float, timeout: float) -> Event:
        poller.register(self.inotify.fileno(), select.EPOLLIN)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.EPOLLIN)
        space_at = 0.0
        while (ev := self.check()) is None:
            now = time.monotonic()
            if now >= deadline:
                doing = describe(self.worker, time.time())
                raise CsdError(f"timed out after {timeout:g}s waiting for {self.meta.tmux_name!r} to end its turn ({doing})")
            if now >= space_at:
                # a full disk has no event: the hook's next lines would be lost, and the wait blind
                if (why := events_unwritable(self.wdir)) is not None:
                    raise CsdError(why)
                space_at = now + SPACE_CHECK_INTERVAL
            ready = {fd for fd, _ in poller.poll(max(0.0, min(deadline, space_at) - now))}
            pidfd = self.pidfd
            exited = pidfd is not None and pidfd in ready
            self.wake(self.inotify.fileno() in ready, exited)
            if pidfd is not None and exited:
                poller.unregister(pidfd)  # the process ended: nothing more to hear from it
                self._close_pidfd()
        return ev

    def check(self) -> Event | None:
        return turn_over(self.meta.tmux_name, self.worker, self.removed, self.after_line, self.settled)

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
            if not text.strip():
                continue
            try:
                event = parse_line(text, number).replace(gen=self.lines.resets)
            except BadLine as bad:
                self.on_bad(bad)
                continue
            self.worker.feed(event)

    def _close_pidfd(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def close(self) -> None:
        self._close_pidfd()
        self.lines.end()


class _sigterm_raises:
    """SIGTERM ends the wait as it ends csd.cli's event loop: Terminated (exit 143), not a silent death."""

    def __enter__(self) -> None:
        def terminated(signum: int, frame: object) -> None:
            raise Terminated("terminated (SIGTERM); cleaned up")

        self.previous: Callable[..., object] | int | None = signal.signal(signal.SIGTERM, terminated)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]
