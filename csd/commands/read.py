"""The read-side commands: status, list, read-events, read-turn, handoff, session-id, events-file.

Each reads the workers dir's files and asks tmux once; none loads the engine (asyncio, the Supervisor,
transitions): tests/test_layering.py checks what they import, bench/ what they cost."""

from __future__ import annotations

import json
import sys

from csd import config
from csd.commands import resolve
from csd.console import err, warn_bad_line
from csd.errors import OK, CsdError
from csd.states import State, Worker
from csd.workers import Meta, WorkersDir, format_cost

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Coroutine, Iterable
    from typing import Any

    from csd import tmux
    from csd.events import Event
    from csd.transcript import ApiState


def fold_worker(wdir: WorkersDir, m: Meta, panes: dict[str, tmux.Pane], count_lines: bool) -> tuple[Worker, str]:
    """The worker's state (its events folded, its pane among ``panes``) and the session id it has now."""
    from csd import tmux
    from csd.states import fold

    tail = wdir.read_tail(m.session_id, warn_bad_line(wdir.events_path(m.session_id)), count_lines=count_lines)
    pane = tmux.worker_pane(panes, m.tmux_name, m.pane)
    worker = fold(tail.events, alive=tmux.worker_alive(pane, m.pid, m.proc_start))
    return worker, tail.session_id or m.session_id


def survey(wdir: WorkersDir, metas: list[Meta], count_lines: bool) -> list[tuple[Meta, Worker, str]]:
    """Each worker's state and current session id, with one tmux call per tmux server (not per worker)."""
    from csd import tmux

    panes_by_socket: dict[str, dict[str, tmux.Pane]] = {}
    out = []
    for m in metas:
        sock = m.tmux_socket if m.tmux_socket is not None else config.tmux_socket()
        if sock not in panes_by_socket:
            panes_by_socket[sock] = tmux.list_panes_sync(sock)
        try:
            worker, sid = fold_worker(wdir, m, panes_by_socket[sock], count_lines)
        except CsdError as exc:  # one planted file must not hide every other worker
            err(f"csd: warning: skipping worker {m.tmux_name!r}: {exc}")
            continue
        out.append((m, worker, sid))
    return out


def status(args: argparse.Namespace) -> int:
    from csd import tmux

    wdir, m = resolve(args.worker)
    # line numbers (a count of every line) only where they are printed
    worker, sid = fold_worker(wdir, m, tmux.list_panes_sync(m.tmux_socket), args.json)
    if worker.state in (State.LAUNCHING, State.WORKING):
        from csd.workers import events_unwritable

        why = events_unwritable(wdir)
        if why is not None:
            err(f"csd: warning: this state may be stale: {why}")
    if args.json:
        print(json.dumps(status_json(wdir, m, worker, sid)))
    else:
        print(worker.state)
    return OK


def session_id(args: argparse.Namespace) -> int:
    wdir, m = resolve(args.worker)
    print(wdir.current_session_id(m))
    return OK


def events_file(args: argparse.Namespace) -> int:
    wdir, m = resolve(args.worker)
    print(wdir.events_path(m.session_id))
    return OK


def list_workers(args: argparse.Namespace) -> int:
    wdir = WorkersDir()
    rows = _rows(wdir, args) if wdir.check() else []
    if not rows:
        err("No workers found" + (f" matching {args.pattern!r}" if args.pattern else "") + ("" if args.all else " (gone ones are shown with --all)"))
        return OK
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return OK
    print("STATUS\tTMUX\tSESSION_ID\tSHIM\tCWD\tHOST\tCOST")
    for r in rows:
        fields = (r["state"], r["name"], r["session_id"], r["shim"], r["cwd"], r["host"] or "-", format_cost(r.get("cost_usd")))
        print("\t".join(tsv_field(str(f)) for f in fields))
    return OK


def _rows(wdir: WorkersDir, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``list``'s rows: the local workers (with a note on what an interrupted launch left), then the remote ones."""
    from csd.workers import interrupted_launch

    metas = [m for m in wdir.metas(err) if args.pattern in m.tmux_name]
    surveyed = [r for r in survey(wdir, metas, args.json) if args.all or r[1].state != State.GONE]
    for m, _, _ in surveyed:
        dead = interrupted_launch(wdir, m)
        if dead is not None:
            err(
                f"csd: note: {m.tmux_name!r} is what an interrupted launch left (its launcher, pid {dead.pid}, died; "
                f"it has no shim); launching {m.tmux_name!r} again clears it, or remove it: csd --worker {m.tmux_name} stop"
            )
    rows = [{**status_json(wdir, m, w, sid), "host": None} for m, w, sid in surveyed]
    if wdir.remote_dir.is_dir():
        from csd.commands import remote

        rows += [r for r in remote.list_rows(wdir, args.pattern) if args.all or r["state"] != State.GONE]
    return rows


_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def tsv_field(text: str) -> str:
    """One TSV field that cannot make another field or row: backslash, tab, newline and CR escaped as
    \\\\ \\t \\n \\r, other control characters as \\xHH (a directory name may hold any of them)."""
    return "".join(_TSV_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text)


def status_json(wdir: WorkersDir, m: Meta, w: Worker, session_id: str) -> dict[str, object]:
    last = w.last_event
    outcome, error, api = turn_outcome(m, w, session_id)
    cost = wdir.read_cost(m.session_id)
    retrying = w.state == State.WORKING and api is not None and api.retrying
    attempts = api.attempts if api is not None and api.attempts else None
    return {
        "name": m.tmux_name,
        "session_id": session_id,  # the id it has now (it changes on /clear)
        "first_session_id": m.session_id,  # the id it was launched or adopted with; names its files
        "state": w.state,
        "bg_running": w.bg_running,
        "settled": w.settled,
        "turns": w.turns,
        "turn_outcome": outcome,
        "turn_error": error,
        "retrying": retrying,
        # 0 after a failed call: a release that writes no api-request lines (2.1.112 has none), so unknown
        "attempts": attempts,
        "attention": worker_attention(wdir, m, w, outcome, error, retrying, attempts),
        "cost_usd": cost.cost_usd,  # summed over the worker's sessions (/clear starts one); null: unknown
        "tokens": cost.tokens,
        "last_event": last.name if last else None,
        "last_event_ts": last.ts if last else None,
        "last_event_line": last.line_no if last else None,
        "last_event_summary": last.summary() if last else None,
        "cwd": m.cwd,
        "shim": str(wdir.shim_path(m.tmux_name)),
        "events_file": str(wdir.events_path(m.session_id)),
        "started_at": m.started_at,
    }


def worker_attention(wdir: WorkersDir, m: Meta, w: Worker, outcome: str | None, error: str | None,
                     retrying: bool, attempts: int | None) -> str | None:
    """``attention`` for status/list --json (csd/attention.py has the rule)."""
    import time

    from csd.attention import Facts, attention
    from csd.clock import epoch

    ev = w.state_event
    since = epoch(m.started_at) if w.state == State.LAUNCHING or ev is None else epoch(ev.ts)
    facts = Facts(str(w.state), time.time() - since if since is not None else 0.0, outcome, error, retrying, attempts,
                  w.bg_running, wdir.shim_path(m.tmux_name).exists())
    return attention(facts, config.seconds("CSD_LAUNCH_TIMEOUT"), config.seconds("CSD_BG_REPORT_TIMEOUT"))


def turn_outcome(m: Meta, w: Worker, session_id: str) -> tuple[str | None, str | None, ApiState | None]:
    """(turn_outcome, turn_error, the transcript's ApiState or None) for status/list --json.

    The hooks decide, except where only the transcript knows: while the worker is working (is the API
    call being retried, how many attempts), after a stop_failure (how many attempts the call made), and
    after a ``stop`` that may end a failed turn of a release without StopFailure (no
    ``last_assistant_message``, or one reading like an API error): then a final synthetic API error line
    makes the outcome ``api_error``. The transcript is read backwards from its end, so this stays cheap;
    nothing else reads it.
    """
    end = w.turn_end
    outcome, error = w.outcome, end.error if end is not None else None
    hidden = w.state == State.IDLE and end is not None and end.may_hide_api_error
    if not (w.state == State.WORKING or outcome == "api_error" or hidden):
        return outcome, error, None
    from csd.transcriptfile import read_api_state, session_transcript  # only here: most status --json calls need no transcript

    api = read_api_state(w.transcript_path or session_transcript(m.cwd, session_id))
    if hidden and api.error is not None:
        outcome, error = "api_error", api.error
    return outcome, error, api


def read_events(args: argparse.Namespace) -> int | Coroutine[Any, Any, int]:
    from csd.workers import iter_events, last_events

    wdir, m = resolve(args.worker)
    path = wdir.events_path(m.session_id)
    if args.follow:
        from csd.commands.engine import follow_events

        return follow_events(wdir, m, args.last, args.type, lambda e: print(e.raw, flush=True))

    def keep(e: Event) -> bool:
        return args.type is None or e.name == args.type

    if args.last is not None:
        # from the end: a long log costs what the last N events take, not its size
        events: Iterable[Event] = last_events(path, args.last, keep, warn_bad_line(path))
    else:
        events = (e for e in iter_events(path, warn_bad_line(path)) if keep(e))
    out = sys.stdout
    for e in events:
        out.write(e.raw + "\n")
    return OK


def handoff(args: argparse.Namespace) -> int:
    from csd import tmux

    wdir, m = resolve(args.worker)
    attach = tmux.attach_line(m.tmux_name, m.tmux_socket)
    print(attach)
    err(
        f"To take over worker {m.tmux_name!r}: run the line above in a terminal. Detach with Ctrl-B d to hand it back.\n"
        f"While handed off, do not run '{wdir.shim_path(m.tmux_name)} stop' (it ends the session for good); "
        "after detaching, check its state with 'status' before sending."
    )
    return OK


def read_turn(args: argparse.Namespace) -> int:
    from csd.reply import last_turn_markdown

    wdir, m = resolve(args.worker)
    sys.stdout.write(last_turn_markdown(wdir, m, full=args.full))
    return OK
