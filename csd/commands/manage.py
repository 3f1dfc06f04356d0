"""The commands that make and remove workers: launch, adopt, stop, prune, grant-consent.

launch, adopt and stop are one small handler each over csd/lifecycle.py (which does the work); with
``--host``, launch and adopt are csd.commands.remote's."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from csd import config
from csd.commands import run_async
from csd.commands.read import survey
from csd.console import err
from csd.errors import OK, CsdError
from csd.states import State
from csd.workers import WorkersDir

if TYPE_CHECKING:
    from csd.lifecycle import Launched
    from csd.startpane import Prepared


def launch(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    if args.host is not None:
        from csd.commands import remote

        return remote.launch(args.host, args.name, args.cwd, args.claude_args)
    return _launch(args.name, args.cwd, args.claude_args, args.invocation)


def hosted_launch(args: argparse.Namespace) -> int:
    """``csd hosted-launch [--resume SESSION_ID] NAME CWD [-- ARGS]``: what a controller's ``launch --host`` (and
    ``adopt --host``) runs on the host, over SSH. The launch is tied to the SSH channel: stdin closing before the
    launch has reported (the controller was interrupted, or the link dropped) is a SIGTERM of its own, so that
    the half-made worker is undone exactly as a signal would undo it here (exit 143, nothing left); once it has
    reported, nothing undoes it. The report is one JSON line (shim, session_id, cwd, started_at): all the
    controller needs for its record, without a second round trip."""
    from csd.workers import check_session_id

    resume = check_session_id(args.resume) if args.resume is not None else None
    invocation = ["csd", "launch" if resume is None else "adopt", args.name, args.cwd, *([resume] if resume else []),
                  *(["--", *args.claude_args] if args.claude_args else [])]
    _tie_to_stdin()
    return _launch(args.name, args.cwd, args.claude_args, invocation, resume, hosted=True)


def _tie_to_stdin() -> None:
    """SIGTERM to this process when stdin reaches EOF or fails. The thread that reads it is made with SIGINT and
    SIGTERM blocked (a thread inherits its maker's mask), so that both stay the main thread's: launch blocks
    them after its report, and a signal a thread took would still raise in the main thread."""
    import os
    import signal
    import threading

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        threading.Thread(target=watch, name="stdin", daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def adopt(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    if args.host is not None:
        from csd.commands import remote

        return remote.launch(args.host, args.name, args.cwd, args.claude_args, args.session_id)
    from csd.workers import check_session_id

    return _launch(args.name, args.cwd, args.claude_args, args.invocation, resume=check_session_id(args.session_id))


class Progress:
    """What launch is doing, on one status line of stderr, only when stderr is a terminal."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        if self.tty:
            sys.stderr.write(f"\r\x1b[2K{self.name}: {text} ({time.monotonic() - self.t0:.1f}s)")
            sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _launch(name: str, cwd: str, extra: list[str], invocation: list[str], resume: str | None = None,
            hosted: bool = False) -> int:
    """``csd launch`` (``resume`` None) and ``csd adopt``: start it (csd.lifecycle), print its shim.

    The first half (csd.startpane: checks, the claim, the files, the pane) runs before asyncio and the engine are
    imported, so the worker starts up while csd imports the rest (~40 ms of asyncio alone, bench/); until
    start_worker owns it, a failure here undoes it. SIGTERM meanwhile raises Terminated (proc.sigterm_raises),
    so that undoing runs; once the event loop runs, SIGTERM cancels it as it cancels every engine command.
    An interrupt either undoes the launch (exit 130 / 143, nothing left) or comes after its report (_start)."""
    from csd.proc import sigterm_raises
    from csd.startpane import prepare

    progress = Progress(name)
    try:
        with sigterm_raises():
            prepared = prepare(WorkersDir(), name, cwd, extra, invocation, resume)
            try:
                run_async(_start(prepared, name, cwd, extra, invocation, resume, progress, hosted))
            except BaseException:
                if not prepared.owned:
                    prepared.undo()
                raise
    finally:
        progress.done()
    return OK


async def _start(prepared: Prepared, name: str, cwd: str, extra: list[str], invocation: list[str], resume: str | None,
                 progress: Progress, hosted: bool = False) -> None:
    """Start the worker and report it. The report is the launch's point of no return: it is printed as soon as
    start_worker returns, with no await between (a cancellation lands only at an await), and an interrupt after it
    (a cancellation in the supervisor's exit, or a signal while the process ends) is held back, so that exit
    130 / 143 always means that nothing was left, and exit 0 that the worker runs and its shim was printed."""
    import asyncio
    import signal

    from csd.lifecycle import start_worker
    from csd.supervisor import Supervisor

    reported = False
    try:
        async with Supervisor(prepared.wdir, machine=False) as sup:  # the table's fold (states.py), not the machine
            launched = await start_worker(sup, name, cwd, extra, invocation, resume, progress, prepared)
            progress.done()
            _print_launched(launched, hosted)
            reported = True
            # pending until the process exits (os._exit: cli.entry), where they end with it; the one thread a
            # launch may run (_tie_to_stdin) blocks them too
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except asyncio.CancelledError:
        if not reported:
            raise


def _print_launched(launched: Launched, hosted: bool = False) -> None:
    """The shim on stdout (``hosted``: the JSON line of hosted_launch); what was made on stderr (a panel on a
    terminal: rich is only loaded for one)."""
    m = launched.meta
    body = (
        f"tmux:        {m.tmux_name}" + (f"  (socket {m.tmux_socket})" if m.tmux_socket else "") + "\n"
        f"session id:  {m.session_id}\n"
        f"cwd:         {m.cwd}\n"
        f"events file: {WorkersDir().events_path(m.session_id)}\n"
        f"shim:        {launched.shim}\n"
        f"pane:        {launched.how}\n"
        f"reproduce: {launched.reproduce}"
    )
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.panel import Panel

        Console(stderr=True, highlight=False, soft_wrap=True).print(Panel(body, title=f"worker {m.tmux_name} ready", expand=False), markup=False)
    else:
        err(body)
    if hosted:
        import json

        report = {"shim": str(launched.shim), "session_id": m.session_id, "cwd": m.cwd, "started_at": m.started_at}
        print(json.dumps(report), flush=True)
    else:
        print(launched.shim, flush=True)


def stop(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    return _stop(WorkersDir(), args.worker, args.own_dir)


async def _stop(wdir: WorkersDir, handle: str, own_dir: bool) -> int:
    from csd.errors import UnknownWorker
    from csd.lifecycle import stop_worker
    from csd.supervisor import Supervisor

    try:
        meta = wdir.resolve(handle)
    except UnknownWorker as exc:
        await _check_stopped(wdir, handle, exc, own_dir)
        err(f"csd: no worker {handle!r} in {wdir.path}: already stopped, nothing to do")
        return OK
    sid = wdir.current_session_id(meta)  # read before stop removes the events file
    async with Supervisor(wdir, machine=False) as sup:
        await stop_worker(sup, meta)
    print(f"Worker {meta.tmux_name} ({sid}) stopped. Shim removed.", flush=True)
    return OK


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
            f"or end it with: {tmux.kill_line(handle, socket)}"
        )
    if own_dir:
        raise CsdError(
            f"no worker {handle!r} in {wdir.path}, this shim's workers dir: nothing stopped, and there is no tmux "
            f"session {handle!r} on {server}; its files were removed by something other than stop (csd list --all)"
        )


def prune(args: argparse.Namespace) -> int:
    """Remove the files of every gone worker; never a live one, nor one whose launch may be under way or
    whose lock is held. One line per worker on stdout: what was (or, with --dry-run, would be) removed."""
    from csd.sending import WorkerLock

    wdir = WorkersDir()
    if not wdir.check():
        err(f"No workers dir at {wdir.path}: nothing to prune")
        return OK
    surveyed = survey(wdir, wdir.metas(err), count_lines=False)
    kept = {m.tmux_name for m, w, _ in surveyed if w.state != State.GONE or wdir.launch_under_way(m)}
    pruned = 0
    for m, w, sid in surveyed:
        if w.state != State.GONE or wdir.launch_under_way(m):
            continue
        # a live worker of the same name (a newer launch) owns bin/NAME: its shim stays
        files = [p for p in wdir.files_of(m) if not (p == wdir.shim_path(m.tmux_name) and m.tmux_name in kept)]
        if args.dry_run:
            print(f"would remove {m.tmux_name} ({sid}): {' '.join(str(p) for p in files)}")
            pruned += 1
            continue
        try:
            with WorkerLock(wdir, m, "csd prune"):
                for p in files:
                    if p != wdir.lock_path(m.session_id):
                        p.unlink(missing_ok=True)
                wdir.lock_path(m.session_id).unlink(missing_ok=True)
        except CsdError as exc:
            err(f"csd: skipping gone worker {m.tmux_name!r}: {exc}")
            continue
        print(f"removed {m.tmux_name} ({sid}): {' '.join(str(p) for p in files)}", flush=True)
        pruned += 1
    if wdir.remote_dir.is_dir():
        from csd.commands import remote

        pruned += remote.prune(wdir, args.dry_run)
    if not pruned:
        err(f"No gone workers in {wdir.path}: nothing to prune")
    return OK


def grant_consent(args: argparse.Namespace) -> int:
    from csd.clock import now_iso
    from csd.workers import consent_path

    path = consent_path()
    if path.is_file():
        err(f"Consent already granted ({path}).")
        return OK
    err(
        "csd launches Claude Code workers with --dangerously-skip-permissions: they run tools without asking.\n"
        "Type 'yes' to consent (recorded at " + str(path) + "): "
    )
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
    else:
        line = input()
    if line.strip().lower() != "yes":
        raise CsdError(f"consent not granted (got {line.strip()!r}, expected 'yes')")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"granted {now_iso()}\n")
    err(f"Consent recorded at {path}.")
    return OK
