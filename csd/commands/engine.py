"""The engine's commands: the fan-out wait-for-turn over many workers, read-events --follow, watch and demo;
and send, converse and wait-for-turn of one worker where csd.waiter hands it back (csd.commands.send and
.wait). Each returns a coroutine that runs one Supervisor and prints what the command answers; cli runs it
(Ctrl-C and SIGTERM cancel it, so its clean-up runs)."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from csd import config
from csd.commands import out, report_ended
from csd.console import err, submitted, warn_long_line
from csd.errors import OK, CsdError, EmptyReply, UsageError
from csd.events import Event
from csd.supervisor import Supervisor
from csd.workers import Meta, WorkersDir


async def send_in_supervisor(wdir: WorkersDir, meta: Meta, prompt: str, shell: bool) -> int:
    """``send`` of one worker that csd.waiter handed back (csd.commands.send)."""
    async with Supervisor(wdir, machine=False) as sup:  # one command: the table's fold (states.py), not the machine
        ev = await sup.send(meta.tmux_name, prompt, shell=shell)
        err(submitted(meta.tmux_name, ev.line_no))
    return OK


def watch(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from csd.render import watch

    return watch(args.pattern, notify=args.notify)


def demo(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    from csd.demo import demo

    return demo(args.workers, table=not args.no_table)


def fan_wait(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """``csd wait-for-turn --any|--all NAME... [TIMEOUT]``: local workers through one Supervisor; any remote
    one makes it csd.commands.remote's (one stream per host)."""
    args.names, args.timeout = _names_and_timeout(list(args.names))
    wdir = WorkersDir()
    if any(wdir.remote_path(n).is_file() for n in args.names if "/" not in n):
        from csd.commands import remote

        return remote.fan_wait(args)
    for name in args.names:
        wdir.resolve(name)  # every unknown name rejected before any wait
    return _fan_wait(wdir, args)


def _names_and_timeout(names: list[str]) -> tuple[list[str], float]:
    """NAME... [TIMEOUT]: the last word is the timeout when it reads as one (default 60 s)."""
    from csd.commands.table import timeout_arg

    if len(names) > 1:
        try:
            return names[:-1], timeout_arg(names[-1])
        except argparse.ArgumentTypeError as exc:
            # 'nan', '-1', 'inf', '5_0': meant as a timeout, unless a worker has that name
            if _numberish(names[-1]) and not _is_worker(names[-1]):
                raise UsageError(f"csd wait-for-turn: {exc}") from None
    return names, 60.0


def _numberish(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_worker(name: str) -> bool:
    wdir = WorkersDir()
    return wdir.check() and any(m.tmux_name == name for m in wdir.metas())


def timed_out(message: str) -> CsdError:
    """The error for a wait that timed out: tmux's silence when a tmux call was what kept it waiting."""
    from csd import tmux

    return tmux.unanswered() or CsdError(message)


async def wait_in_supervisor(wdir: WorkersDir, meta: Meta, args: argparse.Namespace) -> int:
    """``wait-for-turn`` of one worker that csd.waiter handed back (csd.commands.wait)."""
    async with Supervisor(wdir, machine=False) as sup:  # a waiter only reads states: no transitions import
        return await _wait_in(sup, meta, args)


async def _wait_in(sup: Supervisor, meta: Meta, args: argparse.Namespace) -> int:
    try:
        # tracking asks tmux about the worker's process: inside the timeout, which holds whatever tmux does
        async with asyncio.timeout(args.timeout):
            await sup.track(meta, min_line=None if args.after_line is None else args.after_line + 1)
            ev = await sup.wait_for_turn(meta.tmux_name, args.after_line, args.settled)
    except TimeoutError:
        tr = sup.tracked()
        doing = f" ({tr[0].describe()})" if tr else ""
        raise timed_out(f"timed out after {args.timeout:g}s waiting for {meta.tmux_name!r} to end its turn{doing}") from None
    from csd.reply import turn_failure  # the meta in hand: unreadable metas were reported when it was found

    return report_ended([(meta.tmux_name, ev)], lambda name, e: turn_failure(sup.wdir, meta, e), named=False)


async def _fan_wait(wdir: WorkersDir, args: argparse.Namespace) -> int:
    async with Supervisor(wdir, machine=False) as sup:  # a waiter only reads states: no transitions import
        return await _fan_wait_in(sup, args)


async def _fan_wait_in(sup: Supervisor, args: argparse.Namespace) -> int:
    try:
        async with asyncio.timeout(args.timeout):
            if args.any:
                ended = [await sup.wait_any(args.names, args.settled)]
            else:
                ended = await sup.wait_all(args.names, args.settled)
    except TimeoutError:
        busy = [f"{tr.name} ({tr.describe()})" for tr in sup.tracked() if tr.state in ("working", "launching")]
        raise timed_out(f"timed out after {args.timeout:g}s; still busy: {', '.join(busy) or 'none'}") from None
    return report_ended(ended, sup.turn_failure)


async def converse_in_supervisor(wdir: WorkersDir, meta: Meta, prompt: str, args: argparse.Namespace) -> int:
    """``converse`` of one worker that csd.waiter handed back (csd.commands.send)."""
    async with Supervisor(wdir, machine=False) as sup:  # one command: the table's fold (states.py), not the machine
        return await _converse_in(sup, wdir, meta, prompt, args)


async def _converse_in(sup: Supervisor, wdir: WorkersDir, meta: Meta, prompt: str, args: argparse.Namespace) -> int:
    try:
        async with asyncio.timeout(args.timeout):
            reply = await sup.converse(meta.tmux_name, prompt)
    except TimeoutError:
        tr = sup.tracked()[0] if sup.tracked() else None
        msg = f"timed out after {args.timeout:g}s waiting for {meta.tmux_name!r}" + (f" ({tr.describe()})" if tr else "")
        await diagnose(wdir, meta, msg)
        raise timed_out(msg) from None
    except EmptyReply as exc:
        await diagnose(wdir, meta, f"no reply text: {exc.reason}")
        raise
    if args.with_turn:
        # Claude Code writes a turn's last transcript lines after its Stop hook: wait for them
        await reply.wait_transcript()
    out(reply.markdown() if args.with_turn else reply.text())
    return OK


async def diagnose(wdir: WorkersDir, meta: Meta, reason: str) -> None:
    """Write the diagnostic file when CSD_CONVERSE_DIAG_FILE asks for one, and say where it is."""
    diag = config.get("CSD_CONVERSE_DIAG_FILE")
    if diag:
        from csd.lifecycle import write_diagnostic

        try:
            await write_diagnostic(wdir, meta, diag, reason)
            err(f"csd-diagnostic: {diag}")
        except CsdError as exc:
            err(f"csd: warning: {exc} (CSD_CONVERSE_DIAG_FILE)")


async def follow_events(
    wdir: WorkersDir, meta: Meta, last: int | None, type_: str | None, emit: Callable[[Event], None]
) -> int:
    """read-events --follow: what is there (or the last N), then new lines until the worker is stopped."""
    from csd.events import BadLine, parse_line

    path = wdir.events_path(meta.session_id)
    async with Supervisor(wdir, machine=False) as sup:
        follower = sup.watcher.follow(path.name, on_long=warn_long_line(path))
        present = _count_lines(path)  # the backlog; --last applies to it only
        backlog: list[Event] = []
        flushed = present == 0
        try:
            async for number, text in follower:
                try:
                    ev: Event | None = parse_line(text, number)
                except BadLine as bad:
                    err(f"csd: warning: {path}: skipping {bad}")
                    ev = None
                keep = ev is not None and (type_ is None or ev.name == type_)
                if flushed:
                    if keep:
                        emit(ev)  # type: ignore[arg-type]
                    continue
                if keep:
                    backlog.append(ev)  # type: ignore[arg-type]
                if number >= present:
                    _flush(backlog, last, emit)
                    flushed = True
        finally:
            follower.close()
        if not flushed:
            _flush(backlog, last, emit)
    return OK


def _flush(backlog: list[Event], last: int | None, emit: Callable[[Event], None]) -> None:
    if last is not None:
        backlog = backlog[-last:] if last else []
    for ev in backlog:
        emit(ev)


def _count_lines(path: Path) -> int:
    from csd.lines import count_newlines
    from csd.workers import open_if_there

    fd = open_if_there(path)
    if fd is None:
        return 0
    try:
        return count_newlines(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
