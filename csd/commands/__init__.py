"""The command layer: one handler per csd command, declared in csd/commands/table.py. Handlers print the
answer on stdout and lines on stderr (csd.console), and return an exit code (or a coroutine that does).

By theme: ``read`` (status, list, read-events, read-turn, ...: no engine), ``wait`` and ``send`` (one worker's
wait-for-turn, send and converse, with no event loop: csd.waiter), ``engine`` (fan-out waits, watch, demo, and
what csd.waiter hands back: one Supervisor each), ``manage`` (launch, adopt, stop, prune, grant-consent),
``install`` (plugin-dir, skill, completion, help) and ``remote`` (workers on other hosts, ``csd stream``).
This module holds what several of them use, and stays light: every read-side command imports it."""

from __future__ import annotations

import sys

from csd.console import err
from csd.errors import OK, TURN_FAILED, CsdError, Terminated, UsageError
from csd.workers import Meta, WorkersDir

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any, TypeVar

    from csd.events import Event

    T = TypeVar("T")


def out(text: str) -> None:
    """One answer line on stdout, flushed (a controller reads it at once)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def resolve(handle: str, warn: bool = True) -> tuple[WorkersDir, Meta]:
    """The workers dir and the meta of the worker ``handle`` names (a name or either session id);
    ``warn``: say which unreadable metas were skipped."""
    wdir = WorkersDir()
    if not wdir.check():
        raise CsdError(f"unknown worker {handle!r}: workers dir {wdir.path} does not exist; start one with: csd launch NAME DIR")
    return wdir, wdir.resolve(handle, err if warn else None)


def read_prompt(arg: str) -> str:
    """A prompt argument: the text itself, or ``-``: stdin (UTF-8)."""
    if arg != "-":
        return arg
    if sys.stdin.isatty():
        err("csd: reading the prompt from the terminal; end it with Ctrl-D")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the prompt on stdin is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); send UTF-8 text") from None


def report_ended(ended: list[tuple[str, Event]], failure: Callable[[str, Event], str | None], named: bool = True) -> int:
    """Print a wait's answer: each ended turn's event line (``NAME<TAB>line`` for a fan-out wait, ``named``);
    exit 4 when any of those turns failed (``failure`` gives a turn's one-line failure, None when it did not)."""
    for name, ev in ended:
        out(f"{name}\t{ev.raw}" if named else ev.raw)
    failed = [line for name, ev in ended if (line := failure(name, ev)) is not None]
    for line in failed:
        err(f"csd: error: {line}")
    return TURN_FAILED if failed else OK


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine (csd.cli runs what an engine handler returns; ``launch`` runs its second half
    itself). Ctrl-C and SIGTERM cancel it, so its clean-up (``finally``) runs: locks are released and a half-made
    worker is removed before csd exits 130 / 143. A Ctrl-C before the loop has started it (``import asyncio``
    takes ~40 ms) leaves it unstarted: it is closed here, so exit 130 says so in one line (no "never awaited")."""
    try:
        return _run(coro)
    finally:
        coro.close()  # done already, or never started: nothing to run either way


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio
    import signal

    terminated: list[int] = []

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def on_sigterm() -> None:
            terminated.append(signal.SIGTERM)
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    main = guarded()
    try:
        return asyncio.run(main)
    except asyncio.CancelledError:
        if terminated:
            raise Terminated("terminated (SIGTERM); cleaned up") from None
        raise
    finally:
        main.close()
