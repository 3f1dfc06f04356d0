"""The commands on workers of other hosts: ``launch/adopt --host``, every per-worker command forwarded to
a remote worker's host, the fan-out wait over local and remote workers, ``list``'s and ``prune``'s remote
rows, ``watch``'s remote rows, and ``csd stream`` (what a controller runs on a host over SSH).

csd/remote.py is the SSH side (hosts, connections, records, the stream's client); this module is what the
commands print and return."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from csd.commands import read_prompt, report_ended
from csd.console import err
from csd.errors import OK, CsdError, NotRunning, UsageError
from csd import remoteworkers
from csd.remote import TURN_ENDS, Host, HostStream, Record, by_host, get_host, run, ssh_argv, worker_argv
from csd.remoteworkers import RemoteFailed, forget, read_record, records
from csd.workers import WorkersDir

if TYPE_CHECKING:
    import subprocess

    from csd.events import Event
    from csd.supervisor import Supervisor, Tracked


# ---------------------------------------------------------------- launch and per-worker commands


def launch(host_name: str, name: str, cwd: str, claude_args: list[str], resume: str | None = None) -> int:
    """``csd launch --host H NAME CWD`` (or ``adopt --host H NAME CWD SESSION_ID`` with ``resume``): what the
    remote launch said on stderr, as it is, and the local shim on stdout."""
    def made() -> None:  # the point of no return: signals wait for the exit (os._exit: cli.entry), where they end
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    try:
        _, said = remoteworkers.launch(WorkersDir(), host_name, name, cwd, claude_args, resume, made)
    except RemoteFailed as exc:  # the remote csd's own words and exit code, as they are
        sys.stderr.buffer.write(exc.stderr)
        sys.stderr.flush()
        return exc.exit_code
    sys.stderr.buffer.write(said)
    sys.stderr.flush()
    print(WorkersDir().shim_path(name), flush=True)
    return OK


def worker_command(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    """A per-worker command on a remote worker, through its host's connection: the same command, its
    stdout and exit code as they are; a prompt goes on stdin."""
    wdir = WorkersDir()
    handle, cmd = args.worker, args.command
    rec = read_record(wdir, handle)
    if rec is None or rec.host != args.host:
        raise CsdError(
            f"unknown remote worker {handle!r} on host {args.host!r} in {wdir.path} (no record at {wdir.remote_path(handle)}); "
            "csd list shows the workers this controller knows"
        )
    host = get_host(args.host)
    doing = f"running {cmd!r} for {handle!r}"
    if cmd in ("send", "converse"):
        prompt = read_prompt(args.prompt).encode("utf-8")
        argv = ["send", *(["--shell"] if args.shell else []), "-"] if cmd == "send" else ["converse", *(["--with-turn"] if args.with_turn else []), "-", repr(args.timeout)]
        return _relay(run(host, worker_argv(rec, argv), doing, stdin=prompt, capture=False))
    if cmd == "handoff":
        return _handoff(wdir, host, rec, doing)
    if cmd == "wait-for-turn":
        return remote_wait(rec, args)
    code = _relay(run(host, worker_argv(rec, [cmd, *args.rest]), doing, capture=False))
    if cmd == "stop" and code == OK:
        forget(wdir, rec)
    return code


def _handoff(wdir: WorkersDir, host: Host, rec: Record, doing: str) -> int:
    proc = run(host, worker_argv(rec, ["handoff"]), doing)
    if proc.returncode != OK:
        return _relay(proc)
    attach = proc.stdout.decode("utf-8", "replace").strip()
    print(shlex.join([*ssh_argv(host, tty=True, multiplex=False), attach]))
    err(
        f"To take over worker {rec.name!r} on host {host.name!r}: run the line above in a terminal. Detach with Ctrl-B d "
        f"to hand it back. While handed off, do not run '{wdir.shim_path(rec.name)} stop'; after detaching, check its "
        "state with 'status' before sending."
    )
    return OK


def _relay(proc: subprocess.CompletedProcess[bytes]) -> int:
    if proc.stdout:
        sys.stdout.buffer.write(proc.stdout)
        sys.stdout.flush()
    sys.stderr.buffer.write(proc.stderr)
    sys.stderr.flush()
    return proc.returncode


# ---------------------------------------------------------------- list and prune


def list_rows(wdir: WorkersDir, pattern: str) -> list[dict[str, Any]]:
    """``list --json`` rows of the remote workers this controller knows, one ``csd list`` per host (all
    hosts at once). An unreachable host's workers are ``unreachable``, with the reason; a worker its
    host no longer knows is ``gone``."""
    from concurrent.futures import ThreadPoolExecutor

    groups = by_host(r for r in records(wdir) if pattern in r.name)

    def survey(key: tuple[str, str]) -> list[dict[str, Any]]:
        host_name, rwd = key
        try:
            found = _remote_rows(get_host(host_name), rwd)
        except CsdError as exc:
            return [_row(wdir, r, "unreachable", error=str(exc)) for r in groups[key]]
        out = []
        for r in groups[key]:
            row = found.get((r.name, r.session_id))
            here = {"shim": str(wdir.shim_path(r.name)), "remote_shim": r.remote_shim, "host": r.host}
            out.append(_row(wdir, r, "gone") if row is None else {**row, **here})
        return out

    with ThreadPoolExecutor(max_workers=min(16, len(groups) or 1)) as pool:
        return [row for rows in pool.map(survey, list(groups)) for row in rows]


def _remote_rows(host: Host, rwd: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The host's ``csd list --all --json`` rows by (name, first session id)."""
    proc = run(host, ["--workers-dir", rwd, "list", "--all", "--json"], "listing its workers")
    if proc.returncode != OK:
        raise CsdError(proc.stderr.decode("utf-8", "replace").strip() or f"csd list exited {proc.returncode}")
    found = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        row = json.loads(line)
        found[(row["name"], row["first_session_id"])] = row
    return found


def prune(wdir: WorkersDir, dry_run: bool) -> int:
    """``csd prune`` for remote workers: the record and local shim of each one its host reports gone (never
    of a reachable host's live worker, nor of an unreachable host's: unreachable is not gone). The worker's
    files on its host are that host's to prune (``csd prune`` there)."""
    pruned = 0
    for row in list_rows(wdir, ""):
        if row["state"] != "gone":
            continue
        rec = read_record(wdir, row["name"])
        if rec is None:
            continue
        files = [p for p in (wdir.remote_path(rec.name), wdir.shim_path(rec.name)) if p.exists()]
        if not dry_run:
            forget(wdir, rec)
        verb = "would remove" if dry_run else "removed"
        print(f"{verb} {rec.name} ({rec.session_id}) on host {rec.host}: {' '.join(str(p) for p in files)}", flush=True)
        pruned += 1
    return pruned


def _row(wdir: WorkersDir, r: Record, state: str, error: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": r.name, "session_id": r.session_id, "first_session_id": r.session_id, "state": state, "cwd": r.cwd,
        "shim": str(wdir.shim_path(r.name)), "remote_shim": r.remote_shim, "started_at": r.started_at, "host": r.host,
    }
    if error is not None:
        row["error"] = error
    return row


# ---------------------------------------------------------------- csd stream (the host's side)


def stream(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """``csd stream [--settled] [--replay NAME=LINE]... NAME...``."""
    from csd.commands.table import count_arg

    replay = {}
    for item in args.replay:
        name, _, line = item.rpartition("=")
        try:
            replay[name] = count_arg(line)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"csd stream: --replay {item!r}: {exc}; use NAME=LINE") from None
    return serve_stream(args.names, args.settled, replay)


async def serve_stream(names: list[str], settled: bool, replay: dict[str, int]) -> int:
    """``csd stream`` (run by a controller over SSH): one JSON line per worker now, then one per event or
    liveness change of any of them: ``{"name", "state", "line", "done", "failure", ...}``, ``done`` being the
    line that ended its turn (or a ``gone`` stand-in) or null while it works, ``failure`` that turn's one-line
    failure or null (read here, where the transcript is: a release without StopFailure says it there only).
    ``replay`` (NAME -> line) first looks in the log past that line for a turn end the controller missed while
    its connection was down. Ends when the controller closes the channel (stdin reaches EOF)."""
    from csd.supervisor import Supervisor

    async with Supervisor(machine=False) as sup:  # it only reads states
        trs = {}
        for n in names:
            tr = await sup.track(n)
            trs[tr.name] = tr
        replayed = _replayed(sup, trs, replay)
        failures: dict[tuple[str, str], str | None] = {}  # (name, the line that ended its turn): read once

        def failure(name: str, done: Event) -> str | None:
            if (name, done.raw) not in failures:
                failures[name, done.raw] = None if done.name == "gone" else sup.turn_failure(name, done)
            return failures[name, done.raw]

        def emit(tr: Tracked, _ev: object = None) -> None:
            if tr.name not in trs:
                return
            done = replayed.get(tr.name) or sup.turn_result(tr.name, settled)
            w = tr.worker
            since = w.state_event.ts if w.state_event is not None else None
            msg = {"name": tr.name, "state": str(tr.state), "line": tr.line_count, "done": done.raw if done else None,
                   "failure": failure(tr.name, done) if done else None,
                   # what the live table shows (csd watch on the controller)
                   "last": w.last_event.summary() if w.last_event else "", "turns": w.turns, "bg": w.bg_running,
                   "since": since, "cwd": tr.meta.cwd}
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

        for tr in trs.values():
            emit(tr)
        sup.add_listener(emit)
        await _stdin_closed()
    return OK


def _replayed(sup: Supervisor, trs: dict[str, Tracked], replay: dict[str, int]) -> dict[str, Event]:
    """For each NAME=LINE of ``replay``: the first turn end in the worker's log past that line, if any."""
    from csd.workers import iter_events

    replayed: dict[str, Event] = {}
    for n, after in replay.items():
        tr = trs.get(sup.resolve(n).tmux_name)
        if tr is None:
            continue
        for ev in iter_events(sup.wdir.events_path(tr.meta.session_id)):
            if ev.line_no > after and ev.name in TURN_ENDS:
                replayed[tr.name] = ev
                break
    return replayed


async def _stdin_closed() -> None:
    """Until stdin reaches EOF or closes (the controller closed the SSH channel)."""
    import asyncio

    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    class StdinWatch(asyncio.Protocol):
        def eof_received(self) -> bool:
            if not closed.done():
                closed.set_result(None)
            return False

        def connection_lost(self, exc: Exception | None) -> None:
            if not closed.done():
                closed.set_result(None)

    transport, _ = await loop.connect_read_pipe(StdinWatch, sys.stdin.buffer)
    try:
        await closed
    finally:
        transport.close()


# ---------------------------------------------------------------- waits over SSH


def fan_wait(args: argparse.Namespace) -> Coroutine[Any, Any, int]:
    """``wait-for-turn --any/--all`` over local and remote workers (remoteworkers.TurnWait: local ones through a
    Supervisor, each host's through one stream); prints ``NAME<TAB>event line`` as the local form does."""
    return _fan_wait(WorkersDir(), args)


async def _fan_wait(wdir: WorkersDir, args: argparse.Namespace) -> int:
    import asyncio

    from csd.supervisor import Supervisor

    async with Supervisor(wdir, machine=False) as sup:  # a waiter only reads states
        wait = remoteworkers.TurnWait(sup, args.names, args.settled)  # every unknown name rejected before any wait
        try:
            async with asyncio.timeout(args.timeout):
                ended = await wait.run(any_=args.any)
        except TimeoutError:
            raise CsdError(f"timed out after {args.timeout:g}s; still busy: {', '.join(wait.busy()) or 'none'}") from None
        return report_ended(ended, wait.failure)


async def remote_wait(rec: Record, args: argparse.Namespace) -> int:
    """A remote worker's ``wait-for-turn`` through its host's stream, so a dropped connection is re-established
    and the log replayed (``--after-line N`` is such a replay from the start: the first turn end past line N)."""
    import asyncio

    from csd.supervisor import Supervisor

    async with Supervisor(WorkersDir(), machine=False) as sup:
        wait = remoteworkers.TurnWait(sup, [rec.name], args.settled, after=None if args.after_line is None else {rec.name: args.after_line})
        try:
            async with asyncio.timeout(args.timeout):
                ((_, ev),) = await wait.run(any_=True)
        except TimeoutError:
            raise CsdError(f"timed out after {args.timeout:g}s waiting for {rec.name!r} on host {rec.host!r} to end its turn") from None
        if ev.name == "gone":
            raise NotRunning(f"worker {rec.name!r} on host {rec.host!r} is gone: its process ended without session_end")
        return report_ended([(rec.name, ev)], wait.failure, named=False)


# ---------------------------------------------------------------- csd watch's remote rows


async def follow_remote(wdir: WorkersDir, pattern: str, changed: Callable[[], None], streams: list[HostStream]) -> None:
    """``csd watch``'s remote workers, as their records come and go (inotify on the records' dir, which watch makes
    when there is none yet: waiting for it means watching the workers dir, whose cost files come and go a hundred
    times a second at 200 busy workers; it is waited for only when it cannot be made or was removed): ``streams``
    holds following streams, one per host (and remote workers dir) for the workers known at the start and one
    more for each batch launched there while watch runs; a stream whose workers were all stopped ends. Ends when
    cancelled."""
    import asyncio

    from csd.watch import DirWatcher, wait_dir

    running: dict[HostStream, asyncio.Task[None]] = {}

    def sync() -> None:
        known = {r.name: r for r in records(wdir) if pattern in r.name}
        for stream in [s for s in running if not any(r.name in known for r in s.recs)]:
            running.pop(stream).cancel()
            streams.remove(stream)
        followed = {r.name for s in running for r in s.recs}
        for (host, rwd), recs in by_host(r for r in known.values() if r.name not in followed).items():
            stream = HostStream(get_host(host), rwd, recs, False, changed, follow=True)
            streams.append(stream)
            running[stream] = asyncio.ensure_future(stream.run())
        changed()

    try:
        while True:  # the records' dir removed (with the workers dir, say) is waited for again
            await wait_dir(wdir.remote_dir, None)
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # gone between the look and the watch
                async with DirWatcher(wdir.remote_dir) as watcher:
                    records_changed = watcher.changes(suffixes=(".json",))
                    sync()
                    async for _ in records_changed:
                        sync()
            sync()
    finally:
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


def watch_rows(streams: list[HostStream], clock: Callable[[], float], row: Callable[..., Any]) -> list[Any]:
    """The live table's rows of remote workers (``NAME@HOST``), from their streams' latest messages, each made
    by ``row`` (csd.render.WorkerRow: given, not imported, as render imports this module)."""
    from csd.clock import epoch

    rows = []
    for s in streams:
        for r in s.recs:
            msg = s.latest.get(r.name)
            if s.error is not None or msg is None:
                state = "unreachable" if s.error is not None else "launching"
                rows.append(row(f"{r.name}@{r.host}", state, 0.0, str(s.error or ""), 0, 0, r.cwd))
                continue
            since = epoch(msg["since"]) if msg.get("since") else None
            seconds = max(0.0, clock() - since) if since is not None else 0.0
            rows.append(row(f"{r.name}@{r.host}", msg["state"], seconds, msg.get("last", ""), msg.get("turns", 0),
                                  msg.get("bg", 0), msg.get("cwd", r.cwd)))
    return rows
