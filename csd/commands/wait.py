"""``wait-for-turn`` of one local worker: csd.waiter's wait, with no event loop (a controller keeps many of
these waiting, so each stays small), or csd.supervisor's where the waiter hands the worker back (a launch
under way, no pidfd, no inotify: csd/waiter.py says why). Either way the same answer: the event line that
ended the turn on stdout, exit 4 with one line when the turn failed."""

from __future__ import annotations

from csd.commands import report_ended, resolve

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~4 ms of a waiter's start)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine
    from typing import Any

    from csd.events import Event


def wait_for_turn(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    wdir, meta = resolve(args.worker)  # unreadable metas are reported, as status reports them
    from csd.waiter import wait_turn

    def failure(name: str, ended: Event) -> str | None:
        from csd.reply import turn_failure  # after the answer is out: not held while waiting, nor paid before it

        return turn_failure(wdir, meta, ended)

    code = wait_turn(wdir, meta, args.after_line, args.settled, args.timeout,
                     lambda ev: report_ended([(meta.tmux_name, ev)], failure, named=False))
    if code is None:
        from csd.commands.engine import wait_in_supervisor

        return wait_in_supervisor(wdir, meta, args)
    return code
