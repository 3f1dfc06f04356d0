"""What /proc says of a process: its state, session and start time (Linux; elsewhere: unknown, and callers
trust tmux). A pid with its start time names one process for good (a pid alone can be reused). And this
process's own SIGTERM where no event loop handles it (sigterm_raises)."""

from __future__ import annotations

import signal
from collections.abc import Callable

from csd.errors import Terminated


def proc_stat(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (the state letter) on: [state, ppid, pgrp, session, ...]. None when
    there is no such process; [] when there is no /proc to ask."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    except OSError:
        return []
    # the fields follow the parenthesised command name, which may itself contain ')'
    return stat[stat.rfind(b")") + 2 :].split()


def is_zombie(pid: int) -> bool:
    """True when the process is gone or a zombie (tmux may keep a dead claude unreaped for seconds)."""
    if pid <= 0:
        return True
    fields = proc_stat(pid)
    if fields is None:
        return True
    return bool(fields) and fields[0] in (b"Z", b"X")  # no /proc here: trust tmux


def proc_start(pid: int) -> int:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22): with the pid, it names
    one process for good (a pid alone can be reused). 0 when unknown (no such process, or no /proc)."""
    fields = proc_stat(pid) or []
    try:
        return int(fields[19])  # field 22
    except (IndexError, ValueError):
        return 0


class sigterm_raises:
    """SIGTERM raises Terminated (exit 143, its one line), as it cancels csd.cli's event loop, where no loop runs:
    the waits of csd.waiter, and launch's first half (the clean-up of what it made runs, not a silent death)."""

    def __enter__(self) -> None:
        def terminated(signum: int, frame: object) -> None:
            raise Terminated("terminated (SIGTERM); cleaned up")

        self.previous: Callable[..., object] | int | None = signal.getsignal(signal.SIGTERM)
        try:
            signal.signal(signal.SIGTERM, terminated)
        except BaseException:  # a SIGTERM the moment it was set: __exit__ will not run, so put the old one back here
            signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]
            raise

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]


class signals_held:
    """SIGINT and SIGTERM held back over a few lines that must not be cut short, then delivered as they would have
    been: a tmux client that makes a session, which its server makes whether or not the client lives, so that an
    undo after an interrupt finds what it undoes. A second one of the same signal is delivered at once (the way
    out of a hang). Only Python handlers are held (KeyboardInterrupt, Terminated, an event loop's): a default or
    ignored disposition is left as it is, and so is every signal outside the main thread."""

    def __enter__(self) -> signals_held:
        self.held: list[int] = []
        self.previous: dict[int, Callable[[int, object], object]] = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                handler = signal.getsignal(sig)
                if callable(handler):
                    signal.signal(sig, self._hold)
                    self.previous[sig] = handler
        except ValueError:  # not the main thread: nothing to hold
            self._restore()
        except BaseException:  # a signal as the handlers were being set: __exit__ will not run
            self._restore()
            raise
        return self

    def _hold(self, signum: int, frame: object) -> None:
        if signum not in self.held:
            self.held.append(signum)
            return
        self.held.clear()  # the second: now, and not again on the way out
        handler = self.previous[signum]
        self._restore()
        handler(signum, frame)

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def __exit__(self, *exc: object) -> None:
        handlers = self.previous
        self._restore()
        for sig in self.held:
            handlers[sig](sig, None)
