"""``send`` and ``converse`` of one local worker: csd.waiter drives send's steps (csd/sending.py) with no event
loop, so that neither command pays for importing asyncio; csd.supervisor drives the same steps where the waiter
hands the worker back (no pidfd, no inotify: csd/waiter.py says why). Either way the same answers: send's
"submitted" line on stderr; converse's reply on stdout, exit 4 with one line when the turn failed."""

from __future__ import annotations

from csd.commands import out, read_prompt, resolve
from csd.console import err, submitted
from csd.errors import OK, CsdError, EmptyReply, TimedOut

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (send starts without it)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine
    from typing import Any

    from csd.events import Event
    from csd.workers import Meta, WorkersDir


def send(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    wdir, meta = resolve(args.worker, warn=False)
    prompt = read_prompt(args.prompt)
    from csd.waiter import send as send_here

    def said(ev: Event) -> int:
        err(submitted(meta.tmux_name, ev.line_no))
        return OK

    if send_here(wdir, meta, prompt, args.shell, said) is None:
        from csd.commands.engine import send_in_supervisor

        return send_in_supervisor(wdir, meta, prompt, args.shell)
    return OK


def converse(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    wdir, meta = resolve(args.worker, warn=False)
    prompt = read_prompt(args.prompt)
    from csd.waiter import converse as converse_here

    try:
        reply = converse_here(wdir, meta, prompt, args.timeout)
    except TimedOut as exc:
        _diagnose(wdir, meta, msg := f"timed out after {args.timeout:g}s waiting for {meta.tmux_name!r} ({exc})")
        raise CsdError(msg) from None
    except EmptyReply as exc:
        _diagnose(wdir, meta, f"no reply text: {exc.reason}")
        raise
    if reply is None:
        from csd.commands.engine import converse_in_supervisor

        return converse_in_supervisor(wdir, meta, prompt, args)
    if args.with_turn:
        import asyncio

        # Claude Code writes a turn's last transcript lines after its Stop hook: wait for them
        asyncio.run(reply.wait_transcript())
    out(reply.markdown() if args.with_turn else reply.text())
    return OK


def _diagnose(wdir: WorkersDir, meta: Meta, reason: str) -> None:
    """The diagnostic file CSD_CONVERSE_DIAG_FILE asks for (csd.commands.engine.diagnose, with asyncio: only here)."""
    from csd import config

    if config.get("CSD_CONVERSE_DIAG_FILE"):
        import asyncio

        from csd.commands.engine import diagnose

        asyncio.run(diagnose(wdir, meta, reason))
