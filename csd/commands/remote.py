"""The commands on workers of other hosts: ``launch/adopt --host``, every per-worker command forwarded to
a remote worker's host, the fan-out wait over local and remote workers, ``list``'s and ``prune``'s remote
rows, ``watch``'s remote rows, and ``csd stream`` (what a controller runs on a host over SSH).

csd/remote.py is the SSH side (hosts, connections, records, the stream's client); this module is what the
commands print and return."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csd.commands import read_prompt, report_ended
from csd.console import err
from csd.errors import OK, TURN_FAILED, CsdError, NotRunning, UsageError
from csd.remote import (
    TURN_ENDS, Host, HostStream, Record, by_host, check_version, get_host, host_for, remote_state, run, ssh_argv, worker_argv,
)
from csd.workers import WorkersDir, _atomic_write, _check_private_dir, check_name

if TYPE_CHECKING:
    import subprocess

    from csd.events import Event
    from csd.supervisor import Supervisor, Tracked


# ---------------------------------------------------------------- the records of remote workers (in the workers dir)


def read_record(wdir: WorkersDir, name: str) -> Record | None:
    try:
        with open(wdir.remote_path(name), encoding="utf-8") as f:
            return Record(**json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise CsdError(f"unreadable record of remote worker {name!r} at {wdir.remote_path(name)}: {exc}") from None


def records(wdir: WorkersDir) -> list[Record]:
    d = wdir.remote_dir
    try:
        names = sorted(fn[: -len(".json")] for fn in os.listdir(d) if fn.endswith(".json") and not fn.startswith("."))
    except FileNotFoundError:
        return []
    return [r for r in (read_record(wdir, n) for n in names) if r is not None]


def write_record(wdir: WorkersDir, rec: Record) -> None:
    d = wdir.ensure().remote_path(rec.name).parent
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    _check_private_dir(d)
    _atomic_write(wdir.remote_path(rec.name), json.dumps(rec.to_json(), indent=2) + "\n", 0o600)


def forget(wdir: WorkersDir, rec: Record) -> None:
    """Remove the record and the local shim of a remote worker (it was stopped)."""
    for p in (wdir.remote_path(rec.name), wdir.shim_path(rec.name)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def host_of(wdir: WorkersDir, handle: str) -> str | None:
    """The host of a remote worker known by this name, else None (one stat: the local path stays cheap)."""
    if "/" in handle or handle.startswith("."):
        return None
    rec = read_record(wdir, handle) if wdir.remote_path(handle).is_file() else None
    return rec.host if rec is not None else None


# ---------------------------------------------------------------- launch and per-worker commands


def launch(host_name: str, name: str, cwd: str, claude_args: list[str], resume: str | None = None) -> int:
    """``csd launch --host H NAME CWD`` (or ``adopt --host H NAME CWD SESSION_ID`` with ``resume``): the
    remote csd's launch or adopt, then a local record and shim."""
    host = get_host(host_name)
    check_name(name)
    wdir = WorkersDir()
    if wdir.check():
        _clear_the_name(wdir, name)
    check_version(host)
    argv = ["launch", name, cwd] if resume is None else ["adopt", name, cwd, resume]
    proc = run(host, [*argv, "--", *claude_args], f"{argv[0]}ing {name!r}")
    sys.stderr.buffer.write(proc.stderr)
    sys.stderr.flush()
    if proc.returncode != OK:
        return proc.returncode
    remote_shim = proc.stdout.decode("utf-8", "replace").strip()
    remote_wdir = str(Path(remote_shim).parent.parent)
    st = run(host, ["--workers-dir", remote_wdir, "--worker", name, "status", "--json"], f"reading {name!r}'s status")
    if st.returncode != OK:
        sys.stderr.buffer.write(st.stderr)
        raise CsdError(f"worker {name!r} launched on host {host.name!r} but its status could not be read; its remote shim: {remote_shim}")
    info = json.loads(st.stdout)
    rec = Record(name, host.name, info["first_session_id"], info["cwd"], remote_wdir, remote_shim, info.get("started_at") or "")
    write_record(wdir, rec)
    shim = wdir.write_shim(name, host=host.name)
    print(shim, flush=True)
    return OK


def _clear_the_name(wdir: WorkersDir, name: str) -> None:
    """Refuse a name a local worker or a live remote one has; forget the record of a gone remote one."""
    if any(m.tmux_name == name for m in wdir.metas()):
        raise CsdError(f"a local worker {name!r} exists (shim {wdir.shim_path(name)}); stop it or pick another name")
    old = read_record(wdir, name)
    if old is not None:
        state = remote_state(host_for(old), old)
        if state != "gone":
            raise CsdError(f"worker {name!r} already runs on host {old.host!r} ({state}); stop it first: {wdir.shim_path(name)} stop")
        err(f"csd: clearing the record of gone remote worker {name!r} on host {old.host!r}")
        forget(wdir, old)


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
        argv = ["send", "-"] if cmd == "send" else ["converse", *(["--with-turn"] if args.with_turn else []), "-", repr(args.timeout)]
        return _relay(run(host, worker_argv(rec, argv), doing, stdin=prompt, capture=False))
    if cmd == "handoff":
        return _handoff(wdir, host, rec, doing)
    if cmd == "wait-for-turn":
        return remote_wait(host, rec, args)
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
    liveness change of any of them: ``{"name", "state", "line", "done"}``, ``done`` being the line that
    ended its turn (or a ``gone`` stand-in) or null while it works. ``replay`` (NAME -> line) first looks
    in the log past that line for a turn end the controller missed while its connection was down. Ends
    when the controller closes the channel (stdin reaches EOF)."""
    from csd.supervisor import Supervisor

    async with Supervisor() as sup:
        trs = {}
        for n in names:
            tr = await sup.track(n)
            trs[tr.name] = tr
        replayed = _replayed(sup, trs, replay)

        def emit(tr: Tracked, _ev: object = None) -> None:
            if tr.name not in trs:
                return
            done = replayed.get(tr.name) or sup.turn_result(tr.name, settled)
            w = tr.worker
            since = w.state_event.ts if w.state_event is not None else None
            msg = {"name": tr.name, "state": str(tr.state), "line": tr.line_count, "done": done.raw if done else None,
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
    """``wait-for-turn --any/--all`` over local and remote workers: local ones through a Supervisor,
    each host's through one stream; prints ``NAME<TAB>event line`` as the local form does."""
    wdir = WorkersDir()
    remote: list[Record] = []
    local: list[str] = []
    for n in args.names:
        rec = read_record(wdir, n) if wdir.check() else None
        if rec is not None:
            remote.append(rec)
        else:
            local.append(wdir.resolve(n).tmux_name)  # every unknown name rejected before any wait
    groups = by_host(remote)
    hosts = {h: get_host(h) for h, _ in groups}
    return _fan_wait(wdir, args, local, groups, hosts)


async def _fan_wait(wdir: WorkersDir, args: argparse.Namespace, local: list[str],
                    groups: dict[tuple[str, str], list[Record]], hosts: dict[str, Host]) -> int:
    import asyncio

    from csd.events import failure_line
    from csd.supervisor import Supervisor

    async with Supervisor(wdir) as sup:
        streams = [HostStream(hosts[h], rwd, recs, args.settled, sup.changed) for (h, rwd), recs in groups.items()]
        for name in local:
            await sup.track(name)
        tasks = [asyncio.ensure_future(s.run()) for s in streams]
        try:
            async with asyncio.timeout(args.timeout):
                ended = await sup.wait_until(lambda: _ended(sup, streams, local, args))
        except TimeoutError:
            busy = [n for n in args.names if n in local and sup.turn_result(n, args.settled) is None]
            busy += [r.name for s in streams for r in s.recs if r.name not in s.done]
            raise CsdError(f"timed out after {args.timeout:g}s; still busy: {', '.join(busy) or 'none'}") from None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        def failure(name: str, ev: Event) -> str | None:
            if name in local:
                return sup.turn_failure(name, ev)
            return failure_line(name, ev) if ev.error is not None else None  # a remote turn: its stop_failure line

        return report_ended(ended, failure)


def _ended(sup: Supervisor, streams: list[HostStream], local: list[str],
           args: argparse.Namespace) -> list[tuple[str, Event]] | None:
    """The fan-out wait's answer once it has one (--any: the first turn end; --all: every one), else None."""
    from csd.events import parse_line

    for s in streams:
        if s.error is not None:
            raise s.error
    ended: list[tuple[str, Event]] = []
    for name in args.names:
        if name in local:
            ev = sup.turn_result(name, args.settled)
        else:
            raw = next((s.done[name] for s in streams if name in s.done), None)
            ev = parse_line(raw, 0) if raw is not None else None
        if ev is not None:
            ended.append((name, ev))
            if args.any:
                return ended
        elif args.all:
            return None
    return ended if args.all else None


async def remote_wait(host: Host, rec: Record, args: argparse.Namespace) -> int:
    """A remote worker's ``wait-for-turn`` through its host's stream, so a dropped connection is re-established
    and the log replayed (``--after-line N`` is such a replay from the start: the first turn end past line N)."""
    import asyncio

    from csd.events import failure_line, parse_line

    wake = asyncio.Event()
    stream = HostStream(host, rec.remote_workers_dir, [rec], args.settled, wake.set)
    if args.after_line is not None:
        stream.busy_line[rec.name] = args.after_line
    task = asyncio.ensure_future(stream.run())
    try:
        async with asyncio.timeout(args.timeout):
            while rec.name not in stream.done:
                if stream.error is not None:
                    raise stream.error
                await wake.wait()
                wake.clear()
    except TimeoutError:
        raise CsdError(f"timed out after {args.timeout:g}s waiting for {rec.name!r} on host {host.name!r} to end its turn") from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ev = parse_line(stream.done[rec.name], 0)
    if ev.name == "gone":
        raise NotRunning(f"worker {rec.name!r} on host {host.name!r} is gone: its process ended without session_end")
    sys.stdout.write(ev.raw + "\n")
    sys.stdout.flush()
    if ev.error is not None:
        err(f"csd: error: {failure_line(rec.name, ev)}")
        return TURN_FAILED
    return OK


# ---------------------------------------------------------------- csd watch's remote rows


def watch_streams(wdir: WorkersDir, pattern: str, changed: Callable[[], None]) -> list[HostStream]:
    """``csd watch``'s remote rows: one following stream per host (and remote workers dir)."""
    groups = by_host(r for r in records(wdir) if pattern in r.name)
    return [HostStream(get_host(h), rwd, recs, False, changed, follow=True) for (h, rwd), recs in groups.items()]


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
