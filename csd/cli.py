"""The csd command line: argument parsing, one function per command, and the exit-code table."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence

from csd import __version__, config
from csd.completion import SHELLS
from csd.console import err, warn_bad_line
from csd.errors import (
    FAILURE, HOST_CSD, HOST_UNREACHABLE, INTERRUPTED, NOT_RUNNING, OK, TURN_FAILED, USAGE, CsdError, NotRunning, UsageError,
)
from csd.events import EVENT_NAMES, Event
from csd.states import STATES, State, Worker
from csd.workers import Meta, WorkersDir, format_cost

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from csd.transcript import ApiState

class Terminated(CsdError):
    exit_code = 143


EXIT_CODES = (
    (OK, "ok"),
    (FAILURE, "failure, including a timeout"),
    (USAGE, "usage error (unknown command, option, event type, state or bad value)"),
    (NOT_RUNNING, "the worker is not running (terminated or gone) and the command needs a live one"),
    (TURN_FAILED, "the turn ended in an API error (stop_failure); the line on stderr names the error and what to do"),
    (HOST_UNREACHABLE, "a remote host cannot be reached over SSH (network, authentication refused, host key, connection lost)"),
    (HOST_CSD, "csd is missing on a remote host, or of an incompatible version"),
    (INTERRUPTED, "interrupted (Ctrl-C); 143 for SIGTERM. Either way locks are released and a half-made worker removed"),
)
MAX_TIMEOUT = 7 * 86400.0




# ---------------------------------------------------------------- parsing


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, listing what is valid) instead of exiting."""

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse's own asks shutil (which loads bz2 and lzma) for the width on every add_argument
        return self.formatter_class(prog=self.prog, width=_help_width())

    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments" in message or "the following arguments are required" in message:
            valid = sorted({o for a in self._actions for o in a.option_strings if o not in ("-h", "--help")})
            usage = self.format_usage().strip().replace("usage: ", "")
            message += f" (usage: {usage}" + (f"; options: {' '.join(valid)}" if valid else "") + ")"
        raise UsageError(f"{self.prog}: {message}")


def _help_width() -> int:
    """What argparse's HelpFormatter uses: $COLUMNS, else the terminal's width, else 80; less 2."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
        except (OSError, ValueError):
            columns = 80
    return columns - 2


def timeout_arg(text: str) -> float:
    value = config.parse_seconds(text)
    if value is None or not (0 < value <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: use seconds in ASCII digits, 0 < t <= {int(MAX_TIMEOUT)}, e.g. 60 or 2.5")
    return value


def count_arg(text: str) -> int:
    value = config.parse_count(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: use a whole number >= 0 in ASCII digits")
    return value


def event_arg(text: str) -> str:
    if text not in EVENT_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r} is not a known event type; valid events: {' '.join(EVENT_NAMES)}")
    return text


def _sub(name: str, help: str) -> Parser:
    return Parser(prog=f"csd {name}", description=help)


def stream_parser() -> Parser:
    """``csd stream``, not in help: what a controller runs on a remote host over SSH (csd.remote.HostStream)."""
    p = _sub("stream", "one JSON line per state change of the named workers until stdin closes")
    p.add_argument("--settled", action="store_true")
    p.add_argument("--replay", action="append", default=[], metavar="NAME=LINE")
    p.add_argument("names", nargs="+", metavar="NAME")
    return p


def build_parsers() -> tuple[dict[str, Parser], dict[str, Parser]]:
    """(top-level command parsers, per-worker command parsers)."""
    top: dict[str, Parser] = {}
    per: dict[str, Parser] = {}

    p = top["launch"] = _sub("launch", "start a worker: csd launch [--host HOST] NAME CWD [-- claude-args...]")
    p.add_argument("--host", help="run it on this host of the hosts file (over SSH)")
    p.add_argument("name")
    p.add_argument("cwd")
    p.add_argument("claude_args", nargs="*")
    p = top["adopt"] = _sub("adopt", "bring back a worker by session id: csd adopt [--host HOST] NAME CWD SESSION_ID [-- claude-args...]")
    p.add_argument("--host", help="on this host of the hosts file (over SSH)")
    p.add_argument("name")
    p.add_argument("cwd")
    p.add_argument("session_id")
    p.add_argument("claude_args", nargs="*")
    p = top["list"] = _sub("list", "list workers (TSV: STATUS TMUX SESSION_ID SHIM CWD HOST COST)")
    p.add_argument("--all", action="store_true", help="include gone workers")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("pattern", nargs="?", default="")
    p = top["watch"] = _sub("watch", "live table of workers (Ctrl-C exits)")
    p.add_argument("--notify", metavar="CMD", default=None,
                   help="run CMD (sh -c) when a worker starts needing attention or finishes a turn; it gets "
                        "CSD_WORKER_NAME, CSD_WORKER_STATE, CSD_WORKER_REASON, CSD_WORKER_REPLY")
    p.add_argument("pattern", nargs="?", default="")
    p = top["wait-for-turn"] = _sub("wait-for-turn", "wait until any/all named workers end their turn")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--any", action="store_true")
    g.add_argument("--all", action="store_true")
    p.add_argument("--settled", action="store_true", help="also wait out running background tasks")
    p.add_argument("names", nargs="+", metavar="NAME [TIMEOUT]")
    p = top["prune"] = _sub("prune", "remove the files of every gone worker (never a live or launching one)")
    p.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    top["grant-consent"] = _sub("grant-consent", "one-time consent to let csd run Claude Code workers")
    p = top["demo"] = _sub("demo", "run the whole loop with simulated workers (no claude, no network)")
    p.add_argument("--workers", type=count_arg, default=3)
    p.add_argument("--no-table", action="store_true", help="skip the live table")
    top["plugin-dir"] = _sub("plugin-dir", "print the directory of csd's Claude Code plugin (for claude --plugin-dir)")
    top["skill"] = _sub("skill", "print the controller skill (SKILL.md) the plugin carries")
    p = top["completion"] = _sub("completion", "print a shell completion script: " + " ".join(SHELLS))
    p.add_argument("shell", choices=SHELLS)
    top["help"] = _sub("help", "show help")

    p = per["status"] = _sub("status", "print the state: " + " ".join(STATES))
    p.add_argument("--json", action="store_true")
    per["session-id"] = _sub("session-id", "print the session id")
    per["events-file"] = _sub("events-file", "print the events file path")
    p = per["read-events"] = _sub("read-events", "print event lines")
    p.add_argument("--last", type=count_arg, metavar="N")
    p.add_argument("--type", type=event_arg, metavar="T")
    p.add_argument("--follow", action="store_true")
    per["handoff"] = _sub("handoff", "how a human takes over this worker")
    p = per["wait-for-turn"] = _sub("wait-for-turn", "wait until the worker's turn ends")
    p.add_argument("timeout", nargs="?", type=timeout_arg, default=60.0)
    p.add_argument("--after-line", type=count_arg, metavar="N")
    p.add_argument("--settled", action="store_true", help="also wait out running background tasks")
    p = per["send"] = _sub("send", "submit a prompt (- reads stdin)")
    p.add_argument("--shell", action="store_true", help="run the text as a command in Claude Code's bash mode (!)")
    p.add_argument("prompt")
    p = per["converse"] = _sub("converse", "send, wait, print this turn's reply")
    p.add_argument("--with-turn", action="store_true")
    p.add_argument("prompt")
    p.add_argument("timeout", nargs="?", type=timeout_arg, default=120.0)
    p = per["read-turn"] = _sub("read-turn", "the last turn as markdown")
    p.add_argument("--full", action="store_true")
    per["stop"] = _sub("stop", "end the worker and remove its files (destructive, final)")
    return top, per


HELP = """\
csd {version} — drive Claude Code sessions as workers in tmux.

Top-level commands:
  csd launch [--host HOST] NAME CWD [-- claude-args...]
                                            start a worker (on HOST of the hosts file: over SSH);
                                            prints its shim path
  csd adopt [--host HOST] NAME CWD SESSION_ID [-- args]
                                            bring back a worker (--resume) after a reboot
  csd list [--all] [--json] [PATTERN]       STATUS TMUX SESSION_ID SHIM CWD HOST COST (gone ones with --all)
  csd watch [--notify CMD] [PATTERN]        live table of workers; Ctrl-C exits
  csd wait-for-turn --any|--all [--settled] NAME... [TIMEOUT]
                                            fan-out wait (default timeout 60 s)
  csd prune [--dry-run]                     remove the files of every gone worker; prints each
  csd grant-consent                         one-time consent (type 'yes')
  csd demo                                  the whole loop with simulated workers
  csd plugin-dir                            the plugin's directory: claude --plugin-dir "$(csd plugin-dir)"
  csd skill                                 the controller skill (SKILL.md) the plugin carries
  csd completion bash|zsh|fish              shell completion: eval "$(csd completion bash)"
  csd help | --help | --version
Remote hosts: [hosts.NAME] tables (ssh, ssh_args, csd, env) in CSD_HOSTS_FILE; a remote worker's shim
runs csd --workers-dir DIR --host NAME --worker W; every per-worker command works through it.

Per-worker commands (csd --worker NAME CMD, or SHIM CMD; NAME may be either session id, the first or
the current one; a shim runs csd --workers-dir DIR --tmux-socket SOCKET --worker NAME, so it works from
any environment, and a CSD_WORKERS_DIR or CSD_TMUX_SOCKET there that says otherwise is an error):
  status [--json]                           one of: {states}
  send [--shell] PROMPT|-                   submit a prompt (- reads stdin); refuses unless idle. The model
                                            gets the text as written (a leading ! too); CR/CRLF become LF,
                                            a tab 4 spaces, other control characters go, trailing blanks are
                                            trimmed. --shell runs it in bash mode (!) instead
  wait-for-turn [TIMEOUT] [--after-line N] [--settled]
                                            block until the turn ends (default 60 s); prints the event
  converse [--with-turn] PROMPT|- [TIMEOUT] send, wait, print this turn's reply (default 120 s)
  read-events [--last N] [--type T] [--follow]
                                            event lines; T is one of: {events}
  read-turn [--full]                        the last turn as markdown
  handoff                                   how a human takes over (tmux attach)
  session-id | events-file                  print them (the session id it has now: /clear changes it)
  stop                                      /exit, wait, kill if needed, remove meta, events and
                                            shim. Destructive and final: relaunch to continue.

Exit codes:
{exits}

Environment:
{env}
"""


def help_text() -> str:
    exits = "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES)
    env = "\n".join(f"  {v.name:<26} {v.help} (default: {v.default or 'unset'})" for v in config.VARS)
    return HELP.format(version=__version__, states=" ".join(STATES), events=" ".join(EVENT_NAMES), exits=exits, env=env)


# ---------------------------------------------------------------- commands: read side


def _survey(wdir: WorkersDir, metas: list[Meta], count_lines: bool) -> list[tuple[Meta, Worker, str]]:
    """Each worker's state and current session id, with one tmux call per tmux server (not per worker)."""
    from csd import tmux
    from csd.states import fold

    panes_by_socket: dict[str, dict[str, tmux.Pane]] = {}
    out = []
    for m in metas:
        sock = m.tmux_socket if m.tmux_socket is not None else config.tmux_socket()
        if sock not in panes_by_socket:
            panes_by_socket[sock] = tmux.list_panes_sync(sock)
        pane = panes_by_socket[sock].get(m.tmux_name)
        try:
            tail = wdir.read_tail(m.session_id, warn_bad_line(wdir.events_path(m.session_id)), count_lines=count_lines)
        except CsdError as exc:  # one planted file must not hide every other worker
            err(f"csd: warning: skipping worker {m.tmux_name!r}: {exc}")
            continue
        worker = fold(tail.events, alive=tmux.worker_alive(pane, m.pid, m.proc_start))
        out.append((m, worker, tail.session_id or m.session_id))
    return out


def cmd_list(args: argparse.Namespace) -> int:
    from csd.workers import interrupted_launch

    wdir = WorkersDir()
    rows: list[dict[str, Any]] = []
    if wdir.check():
        metas = [m for m in wdir.metas(err) if args.pattern in m.tmux_name]
        surveyed = [r for r in _survey(wdir, metas, args.json) if args.all or r[1].state != State.GONE]
        for m, _, _ in surveyed:
            dead = interrupted_launch(wdir, m)
            if dead is not None:
                err(
                    f"csd: note: {m.tmux_name!r} is what an interrupted launch left (its launcher, pid {dead.pid}, died; "
                    f"it has no shim); launching {m.tmux_name!r} again clears it, or remove it: csd --worker {m.tmux_name} stop"
                )
        rows = [{**_status_json(wdir, m, w, sid), "host": None} for m, w, sid in surveyed]
        if wdir.remote_dir.is_dir():
            from csd import remote

            rows += [r for r in remote.list_rows(wdir, args.pattern) if args.all or r["state"] != State.GONE]
    if not rows:
        err("No workers found" + (f" matching {args.pattern!r}" if args.pattern else "") + ("" if args.all else " (gone ones are shown with --all)"))
        return OK
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print("STATUS\tTMUX\tSESSION_ID\tSHIM\tCWD\tHOST\tCOST")
        for r in rows:
            fields = (r["state"], r["name"], r["session_id"], r["shim"], r["cwd"], r["host"] or "-",
                      format_cost(r.get("cost_usd")))
            print("\t".join(tsv_field(str(f)) for f in fields))
    return OK


def cmd_prune(args: argparse.Namespace) -> int:
    """Remove the files of every gone worker; never a live one, nor one whose launch may be under way or
    whose lock is held. One line per worker on stdout: what was (or, with --dry-run, would be) removed."""
    from csd.supervisor import WorkerLock

    wdir = WorkersDir()
    if not wdir.check():
        err(f"No workers dir at {wdir.path}: nothing to prune")
        return OK
    surveyed = _survey(wdir, wdir.metas(err), count_lines=False)
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
        from csd import remote

        pruned += remote.prune(wdir, args.dry_run)
    if not pruned:
        err(f"No gone workers in {wdir.path}: nothing to prune")
    return OK


_TSV_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def tsv_field(text: str) -> str:
    """One TSV field that cannot make another field or row: backslash, tab, newline and CR escaped as
    \\\\ \\t \\n \\r, other control characters as \\xHH (a directory name may hold any of them)."""
    return "".join(_TSV_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in text)


def _status_json(wdir: WorkersDir, m: Meta, w: Worker, session_id: str) -> dict[str, object]:
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


def _resolve(handle: str) -> tuple[WorkersDir, Meta]:
    wdir = WorkersDir()
    if not wdir.check():
        raise CsdError(f"unknown worker {handle!r}: workers dir {wdir.path} does not exist; start one with: csd launch NAME DIR")
    return wdir, wdir.resolve(handle, err)


def cmd_status(handle: str, args: argparse.Namespace) -> int:
    from csd import tmux
    from csd.states import fold

    wdir, m = _resolve(handle)
    pane = tmux.list_panes_sync(m.tmux_socket).get(m.tmux_name)
    # line numbers (a count of every line) only where they are printed
    tail = wdir.read_tail(m.session_id, warn_bad_line(wdir.events_path(m.session_id)), count_lines=args.json)
    worker = fold(tail.events, alive=tmux.worker_alive(pane, m.pid, m.proc_start))
    if worker.state in (State.LAUNCHING, State.WORKING):
        from csd.workers import events_unwritable

        why = events_unwritable(wdir)
        if why is not None:
            err(f"csd: warning: this state may be stale: {why}")
    if args.json:
        print(json.dumps(_status_json(wdir, m, worker, tail.session_id or m.session_id)))
    else:
        print(worker.state)
    return OK


def cmd_read_events(handle: str, args: argparse.Namespace) -> int:
    from csd.workers import iter_events, last_events

    wdir, m = _resolve(handle)
    path = wdir.events_path(m.session_id)
    if args.follow:
        from csd.commands import follow_events

        return run_async(follow_events(wdir, m, args.last, args.type, lambda e: print(e.raw, flush=True)))
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


def cmd_handoff(handle: str, args: argparse.Namespace) -> int:
    from csd import tmux

    wdir, m = _resolve(handle)
    attach = shlex.join(tmux.argv(["attach", "-t", tmux.session_target(m.tmux_name)], m.tmux_socket))
    print(attach)
    err(
        f"To take over worker {m.tmux_name!r}: run the line above in a terminal. Detach with Ctrl-B d to hand it back.\n"
        f"While handed off, do not run '{wdir.shim_path(m.tmux_name)} stop' (it ends the session for good); "
        "after detaching, check its state with 'status' before sending."
    )
    return OK


def cmd_read_turn(handle: str, args: argparse.Namespace) -> int:
    from csd.reply import last_turn_markdown

    wdir, m = _resolve(handle)
    sys.stdout.write(last_turn_markdown(wdir, m, full=args.full))
    return OK


def cmd_grant_consent(args: argparse.Namespace) -> int:
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


# ---------------------------------------------------------------- commands: the engine


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run one command's coroutine. Ctrl-C and SIGTERM cancel it, so its clean-up (``finally``) runs:
    locks are released and a half-made worker is removed before csd exits 130 / 143."""
    import asyncio
    import signal

    terminated: list[int] = []

    async def guarded() -> int:
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

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        if terminated:
            raise Terminated("terminated (SIGTERM); cleaned up") from None
        raise


def read_prompt(arg: str) -> str:
    if arg != "-":
        return arg
    if sys.stdin.isatty():
        err("csd: reading the prompt from the terminal; end it with Ctrl-D")
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the prompt on stdin is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); send UTF-8 text") from None


def cmd_engine(handle: str | None, cmd: str, args: argparse.Namespace) -> int:
    from csd import commands

    return run_async(commands.run_command(handle, cmd, args, read_prompt))


def cmd_top_engine(cmd: str, args: argparse.Namespace) -> int:
    from csd import commands

    return run_async(commands.run_command(None, cmd, args, read_prompt))


def cmd_plugin_dir(args: argparse.Namespace) -> int:
    from csd.bundled import plugin_dir

    print(plugin_dir())
    return OK


def cmd_skill(args: argparse.Namespace) -> int:
    from csd.bundled import skill_text

    sys.stdout.write(skill_text())
    return OK


def cmd_completion(args: argparse.Namespace) -> int:
    from csd.completion import script

    sys.stdout.write(script(args.shell))
    return OK


#: top-level commands that only print something the package carries
INSTALL_SIDE: dict[str, Callable[[argparse.Namespace], int]] = {
    "plugin-dir": cmd_plugin_dir,
    "skill": cmd_skill,
    "completion": cmd_completion,
}
READ_SIDE: dict[str, Callable[[str, argparse.Namespace], int]] = {
    "status": cmd_status,
    "read-events": cmd_read_events,
    "handoff": cmd_handoff,
    "read-turn": cmd_read_turn,
}


def dispatch(argv: Sequence[str]) -> int:
    argv = list(argv)
    worker: str | None = None
    host: str | None = None
    own_dir = False  # the workers dir was named on the command line (a shim always names its own)
    # global options come before the command
    while argv and argv[0].startswith("-") and argv[0] != "-":
        opt = argv.pop(0)
        if opt in ("-h", "--help"):
            print(help_text(), end="")
            return OK
        if opt == "--version":
            print(f"csd {__version__}")
            return OK
        key, eq, inline = opt.partition("=")
        if key == "--worker":
            if eq:
                worker = inline
            elif argv:
                worker = argv.pop(0)
            else:
                raise UsageError("--worker needs a worker name or session id")
            if not worker:
                raise UsageError("--worker needs a worker name or session id, got ''")
            continue
        if key == "--host":
            host = inline if eq else (argv.pop(0) if argv else "")
            if not host:
                raise UsageError("--host needs a host name from the hosts file")
            continue
        if key in config.PINNING_OPTIONS:
            if not eq and not argv:
                raise UsageError(f"{key} needs a value")
            value = inline if eq else argv.pop(0)
            if key == "--workers-dir" and not value:
                raise UsageError("--workers-dir needs a directory, got ''")
            config.pin(key, value)
            own_dir = own_dir or key == "--workers-dir"
            continue
        raise UsageError(
            f"unknown option {opt!r}; valid before the command: --worker NAME, --host HOST, --workers-dir DIR, --tmux-socket SOCKET, --help, --version"
        )
    top, per = build_parsers()
    if not argv:
        if worker:
            raise UsageError(f"missing command for worker {worker!r}; valid: {' '.join(per)}")
        print(help_text(), end="")
        return USAGE
    cmd, rest = argv[0], argv[1:]
    if cmd == "stream" and worker is None and host is None:
        from csd import remote

        args = stream_parser().parse_args(rest)
        replay = {}
        for item in args.replay:
            name, _, line = item.rpartition("=")
            try:
                replay[name] = count_arg(line)
            except argparse.ArgumentTypeError as exc:
                raise UsageError(f"csd stream: --replay {item!r}: {exc}; use NAME=LINE") from None
        return run_async(remote.serve_stream(args.names, args.settled, replay))
    table = per if worker is not None else top
    if cmd not in table:
        if worker is None and cmd in per:
            raise UsageError(f"'{cmd}' is a per-worker command: run csd --worker NAME {cmd} (or SHIM {cmd})")
        if worker is not None and cmd in top:
            raise UsageError(f"'{cmd}' is a top-level command and takes no --worker; run: csd {cmd} ...")
        raise UsageError(f"unknown command {cmd!r}; valid: {' '.join(table)}")
    parser = table[cmd]
    if rest and rest[0] in ("-h", "--help"):
        parser.print_help(sys.stdout)
        return OK
    # launch/adopt: everything after '--' goes to claude untouched
    extra: list[str] = []
    if cmd in ("launch", "adopt") and "--" in rest:
        i = rest.index("--")
        rest, extra = rest[:i], rest[i + 1 :]
    args = parser.parse_args(rest)
    args.own_dir = own_dir
    if cmd in ("launch", "adopt"):
        if args.claude_args:
            raise UsageError(f"unexpected argument {args.claude_args[0]!r}; claude's arguments go after '--': csd {cmd} NAME CWD [-- ARGS...]")
        args.claude_args = extra
        args.invocation = ["csd", *argv]
    if worker is None and host is not None:
        raise UsageError(f"--host goes with --worker NAME (a remote worker's shim), or after launch: csd launch --host {host} NAME CWD")
    if worker is not None:
        if host is None and WorkersDir().remote_path(worker).is_file():
            from csd import remote

            host = remote.host_of(WorkersDir(), worker)
        if host is not None:
            from csd import remote

            return remote.worker_command(host, worker, cmd, args, rest, read_prompt)
        if cmd in READ_SIDE:
            return READ_SIDE[cmd](worker, args)
        if cmd in ("session-id", "events-file"):
            wdir, m = _resolve(worker)
            print(wdir.current_session_id(m) if cmd == "session-id" else wdir.events_path(m.session_id))
            return OK
        return cmd_engine(worker, cmd, args)
    if cmd == "help":
        print(help_text(), end="")
        return OK
    if cmd == "list":
        return cmd_list(args)
    if cmd in INSTALL_SIDE:
        return INSTALL_SIDE[cmd](args)
    if cmd == "grant-consent":
        return cmd_grant_consent(args)
    if cmd == "prune":
        return cmd_prune(args)
    if cmd in ("launch", "adopt") and args.host is not None:
        from csd import remote

        return remote.launch(args.host, args.name, args.cwd, args.claude_args, getattr(args, "session_id", None))
    if cmd == "wait-for-turn":
        names, timeout = list(args.names), 60.0
        if len(names) > 1:
            try:
                timeout = timeout_arg(names[-1])
                names.pop()
            except argparse.ArgumentTypeError as exc:
                # 'nan', '-1', 'inf', '5_0': meant as a timeout, unless a worker has that name
                if _numberish(names[-1]) and not _is_worker(names[-1]):
                    raise UsageError(f"csd wait-for-turn: {exc}") from None
        args.names, args.timeout = names, timeout
        wdir = WorkersDir()
        if any(wdir.remote_path(n).is_file() for n in names if "/" not in n):
            from csd import remote

            return run_async(remote.fan_wait(args))
    return cmd_top_engine(cmd, args)


def _numberish(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_worker(name: str) -> bool:
    wdir = WorkersDir()
    return wdir.check() and any(m.tmux_name == name for m in wdir.metas())


def main(argv: Sequence[str] | None = None) -> int:
    """Run csd; returns the exit code (the console script exits with it)."""
    try:
        try:
            code = dispatch(sys.argv[1:] if argv is None else argv)
        except BaseExceptionGroup as group:
            raise _first_leaf(group) from group
    except KeyboardInterrupt:
        err("csd: interrupted")
        code = INTERRUPTED
    except CsdError as exc:
        err(f"csd: error: {exc}")
        code = exc.exit_code
    except BrokenPipeError:
        code = FAILURE
    except OSError as exc:
        # what the host refused (no space, no descriptors, no inotify, a file that is not one): one line
        err(f"csd: error: {os_error_line(exc)}")
        code = FAILURE
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return code


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: what failed, on which file, and what to do where there is something to do."""
    import errno

    what = exc.strerror or str(exc)
    where = f"{exc.filename}: " if exc.filename else ""
    hint = {
        errno.EMFILE: "; too many open files for this process: raise the limit (ulimit -n) or track fewer workers at once",
        errno.ENFILE: "; the system is out of open files",
        errno.ENOSPC: "; the file system is full (or out of inotify watches): free some space",
        errno.EROFS: "; the file system is read-only",
        errno.EACCES: "; check the permissions of the workers dir and its parent (CSD_WORKERS_DIR)",
    }.get(exc.errno or 0, "")
    return f"{where}{what}{hint}"


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group: a csd error or an interrupt first, else the first one."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    for kind in (KeyboardInterrupt, CsdError):
        for e in leaves:
            if isinstance(e, kind):
                return e
    return leaves[0] if leaves else group


def entry() -> None:
    """The console script: exit at once once the answer is out. Tearing the interpreter down (modules,
    garbage) costs 10-20 ms after the answer is printed, which a waiting controller would pay on every
    wake-up (bench/). Everything csd opened is closed by then; the streams are flushed here.

    csd speaks no TLS, but asyncio imports ssl when it can, and mapping OpenSSL costs every waiting process
    ~4.5 MB of its RSS (bench/: a blocked wait-for-turn); None in sys.modules makes that import fail the
    way asyncio expects (it then has no ssl support). Only in csd's own process, only if nothing loaded it."""
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
