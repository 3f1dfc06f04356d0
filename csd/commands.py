"""The CLI's event-driven commands: each runs one Supervisor and prints what the command answers."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from csd import config
from csd.console import err
from csd.errors import OK, TURN_FAILED, CsdError, EmptyReply
from csd.events import Event
from csd.supervisor import Supervisor
from csd.workers import Meta, WorkersDir


def out(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()




async def run_command(handle: str | None, cmd: str, args: argparse.Namespace, read_prompt: Callable[[str], str]) -> int:
    """Run one async command for the CLI; CsdError propagates to cli.main, which maps it to an exit code."""
    if cmd == "launch":
        from csd.lifecycle import launch

        return await launch(args.name, args.cwd, args.claude_args, args.invocation)
    if cmd == "adopt":
        from csd.lifecycle import adopt

        return await adopt(args.name, args.cwd, args.session_id, args.claude_args, args.invocation)
    if cmd == "demo":
        from csd.demo import demo

        return await demo(args.workers, table=not args.no_table)
    if cmd == "watch":
        from csd.render import watch

        return await watch(args.pattern, notify=args.notify)
    wdir = WorkersDir()
    if cmd == "wait-for-turn" and handle is None:
        for name in args.names:
            wdir.resolve(name)  # every unknown name rejected before any wait
        async with Supervisor(wdir, machine=False) as sup:  # a waiter only reads states: no transitions import
            return await _fan_wait(sup, args)
    assert handle is not None
    if not wdir.check() and cmd != "stop":
        raise CsdError(f"unknown worker {handle!r}: workers dir {wdir.path} does not exist; start one with: csd launch NAME DIR")
    if cmd == "stop":
        from csd.errors import UnknownWorker
        from csd.lifecycle import stop

        try:
            meta = wdir.resolve(handle)
        except UnknownWorker as exc:
            await _check_stopped(wdir, handle, exc, own_dir=getattr(args, "own_dir", False))
            err(f"csd: no worker {handle!r} in {wdir.path}: already stopped, nothing to do")
            return OK
        return await stop(meta, wdir)
    meta = wdir.resolve(handle)
    prompt = read_prompt(args.prompt) if cmd in ("send", "converse") else ""
    async with Supervisor(wdir, machine=cmd != "wait-for-turn") as sup:  # a waiter only reads states
        if cmd == "wait-for-turn":
            return await _wait_for_turn(sup, meta, args)
        if cmd == "send":
            ev = await sup.send(meta.tmux_name, prompt, shell=args.shell)
            err(f"csd: submitted to {meta.tmux_name!r} (events line {ev.line_no})")
            return OK
        if cmd == "converse":
            return await _converse(sup, wdir, meta, prompt, args)
    raise CsdError(f"unknown command {cmd!r}")


async def _check_stopped(wdir: WorkersDir, handle: str, unknown: CsdError, own_dir: bool) -> None:
    """``stop`` of a handle with no meta says "already stopped" only when the worker is provably gone:
    never for a likely typo, a tmux session of that name alive on this server, or a shim's own workers dir
    (a shim's worker has its meta there until csd stops it: something else removed it)."""
    from csd import tmux

    if getattr(unknown, "suggestions", ()):
        raise unknown
    socket = config.tmux_socket()
    server = f"tmux socket {socket}" if socket else "the default tmux server"
    if await tmux.has_session(handle, socket):
        raise CsdError(
            f"no worker {handle!r} in {wdir.path}, but a tmux session {handle!r} is alive on {server}: nothing "
            f"stopped (csd does not know it as a worker); bring it back with: csd adopt {handle} CWD SESSION_ID, "
            f"or end it with: {shlex.join(tmux.argv(['kill-session', '-t', tmux.session_target(handle)], socket))}"
        )
    if own_dir:
        raise CsdError(
            f"no worker {handle!r} in {wdir.path}, this shim's workers dir: nothing stopped, and there is no tmux "
            f"session {handle!r} on {server}; its files were removed by something other than stop (csd list --all)"
        )


def timed_out(message: str) -> CsdError:
    """The error for a wait that timed out: tmux's silence when a tmux call was what kept it waiting."""
    from csd import tmux

    return tmux.unanswered() or CsdError(message)


async def _wait_for_turn(sup: Supervisor, meta: Meta, args: argparse.Namespace) -> int:
    try:
        # tracking asks tmux about the worker's process: inside the timeout, which holds whatever tmux does
        async with asyncio.timeout(args.timeout):
            await sup.track(meta, min_line=None if args.after_line is None else args.after_line + 1)
            ev = await sup.wait_for_turn(meta.tmux_name, args.after_line, args.settled)
    except TimeoutError:
        tr = sup.tracked()
        doing = f" ({tr[0].describe()})" if tr else ""
        raise timed_out(f"timed out after {args.timeout:g}s waiting for {meta.tmux_name!r} to end its turn{doing}") from None
    out(ev.raw)
    failure = sup.turn_failure(meta.tmux_name, ev)
    if failure is not None:
        err(f"csd: error: {failure}")
        return TURN_FAILED
    return OK


async def _fan_wait(sup: Supervisor, args: argparse.Namespace) -> int:
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


def report_ended(ended: list[tuple[str, Event]], failure: Callable[[str, Event], str | None]) -> int:
    """Print a fan-out wait's answer (``NAME<TAB>event line``); exit 4 when any of those turns failed
    (``failure`` gives a turn's one-line failure, None when it did not fail)."""
    for name, ev in ended:
        out(f"{name}\t{ev.raw}")
    failed = [line for name, ev in ended if (line := failure(name, ev)) is not None]
    for line in failed:
        err(f"csd: error: {line}")
    return TURN_FAILED if failed else OK


async def _converse(sup: Supervisor, wdir: WorkersDir, meta: Meta, prompt: str, args: argparse.Namespace) -> int:
    try:
        async with asyncio.timeout(args.timeout):
            reply = await sup.converse(meta.tmux_name, prompt)
    except TimeoutError:
        tr = sup.tracked()[0] if sup.tracked() else None
        msg = f"timed out after {args.timeout:g}s waiting for {meta.tmux_name!r}" + (f" ({tr.describe()})" if tr else "")
        await _diagnose(wdir, meta, msg)
        raise timed_out(msg) from None
    except EmptyReply as exc:
        await _diagnose(wdir, meta, f"no reply text: {exc.reason}")
        raise
    if args.with_turn:
        # Claude Code writes a turn's last transcript lines after its Stop hook: wait for them
        await reply.wait_transcript()
    out(reply.markdown() if args.with_turn else reply.text())
    return OK


async def _diagnose(wdir: WorkersDir, meta: Meta, reason: str) -> None:
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
    from csd.events import BadLine, parse_line, too_long
    from csd.lines import MAX_LINE

    path = wdir.events_path(meta.session_id)
    async with Supervisor(wdir) as sup:
        follower = sup.watcher.follow(path.name, on_long=lambda n: err(f"csd: warning: {path}: skipping {too_long(n, MAX_LINE)}"))
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
