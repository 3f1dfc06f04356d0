"""The command table: every csd command declared once (name, scope, arguments, one-line help, handler).

The argparse parser of a command, the ``csd help`` text and the shell completion scripts (csd/completion.py)
are generated from it, and csd/cli.py dispatches through it. A handler is named as ``"module:function"``
and imported only when its command runs, so a read-side command loads nothing of the engine
(tests/test_layering.py). A handler takes the parsed arguments (with ``worker``, ``own_dir`` and
``invocation`` added by cli) and returns an exit code, or a coroutine that cli runs to its exit code.

Scopes: ``top`` (``csd CMD``), ``per`` (``csd --worker NAME CMD``, or ``SHIM CMD``), and ``hidden``
(``csd stream``, ``csd hosted-launch``: what a controller runs on a remote host over SSH; in no help and no
completion).
"""

from __future__ import annotations

import argparse
import os
import sys

from csd import __version__, config
from csd.errors import EXIT_CODES, UsageError
from csd.events import EVENT_NAMES
from csd.states import STATES
from csd.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    from typing import Any, NoReturn

TOP, PER, HIDDEN = "top", "per", "hidden"
SHELLS = ("bash", "zsh", "fish")
MAX_TIMEOUT = 7 * 86400.0
#: where a command's help starts in ``csd help`` (a longer synopsis puts it on the next line)
HELP_COLUMN = 44
HELP_WIDTH = 64


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


# ---------------------------------------------------------------- the declarations


class Arg(Value):
    """One argument: ``add_argument``'s names and keywords, and ``word``, how the help's synopsis shows it
    (by default the metavar or the upper-cased name, in brackets when optional)."""

    _fields = ("names", "kwargs", "word")
    names: tuple[str, ...]
    kwargs: dict[str, Any]
    word: str | None

    def __init__(self, *names: str, word: str | None = None, **kwargs: Any) -> None:
        self._set(names=names, kwargs=kwargs, word=word)

    @property
    def is_option(self) -> bool:
        return self.names[0].startswith("-")

    def synopsis(self) -> str:
        if self.word is not None and not self.is_option:
            return self.word
        if self.is_option:
            if self.kwargs.get("action") == "store_true":
                return f"[{self.names[0]}]"
            return f"[{self.names[0]} {self.word or self.kwargs.get('metavar') or self.names[0].lstrip('-').upper()}]"
        choices = self.kwargs.get("choices")
        word = "|".join(choices) if choices else self.kwargs.get("metavar") or self.names[0].upper()
        nargs = self.kwargs.get("nargs")
        return {"?": f"[{word}]", "+": f"{word}...", "*": f"[{word}...]"}.get(nargs, word)


class OneOf(Value):
    """A required choice of flags (``--any|--all``)."""

    _fields = ("args",)
    args: tuple[Arg, ...]

    def __init__(self, *args: Arg) -> None:
        self._set(args=args)

    def synopsis(self) -> str:
        return "|".join(a.names[0] for a in self.args)


class Command(Value):
    """One command. ``passthrough``: everything after ``--`` goes, untouched, into ``claude_args``."""

    _fields = ("name", "scope", "help", "handler", "args", "passthrough", "usage")
    name: str
    scope: str
    help: str
    handler: str
    args: tuple[Arg | OneOf, ...]
    passthrough: bool
    usage: str | None

    def __init__(self, name: str, scope: str, help: str, handler: str, *args: Arg | OneOf, passthrough: bool = False,
                 usage: str | None = None) -> None:
        self._set(name=name, scope=scope, help=help, handler=handler, args=args, passthrough=passthrough, usage=usage)

    def synopsis(self) -> str:
        """The command as ``csd help`` shows it: its name and arguments."""
        return " ".join([self.usage or self.name, *(a.synopsis() for a in self.args)])

    def flat_args(self) -> list[Arg]:
        """Every argument, a OneOf's flags in its place."""
        return [flag for a in self.args for flag in (a.args if isinstance(a, OneOf) else (a,))]

    def parser(self) -> Parser:
        p = Parser(prog=f"csd {self.name}", description=self.help)
        for a in self.args:
            if isinstance(a, OneOf):
                group = p.add_mutually_exclusive_group(required=True)
                for flag in a.args:
                    group.add_argument(*flag.names, **flag.kwargs)
            else:
                p.add_argument(*a.names, **a.kwargs)
        return p

    def parse(self, rest: list[str]) -> argparse.Namespace:
        extra: list[str] = []
        if self.passthrough and "--" in rest:
            i = rest.index("--")
            rest, extra = rest[:i], rest[i + 1 :]
        args = self.parser().parse_args(rest)
        if self.passthrough:
            if args.claude_args:
                raise UsageError(f"unexpected argument {args.claude_args[0]!r}; claude's arguments go after '--': csd {self.name} NAME CWD [-- ARGS...]")
            args.claude_args = extra
        return args


def _launch_args(*between: Arg) -> tuple[Arg, ...]:
    """launch's and adopt's: [--host HOST] NAME CWD ... [-- claude-args...]."""
    return (Arg("--host", help="on this host of the hosts file (over SSH)"), Arg("name"), Arg("cwd"), *between,
            Arg("claude_args", nargs="*", word="[-- claude-args...]"))


_SETTLED = Arg("--settled", action="store_true", help="also wait out running background tasks")
_NOTIFY = ("run CMD (sh -c) when a worker starts needing attention or finishes a turn; it gets CSD_WORKER_NAME, "
           "CSD_WORKER_STATE, CSD_WORKER_REASON, CSD_WORKER_REPLY")
_SEND = ("submit a prompt (- reads stdin); refuses unless idle. The model gets the text as written (a leading ! too); "
         "CR/CRLF become LF, a tab 4 spaces, other control characters go, trailing blanks are trimmed. "
         "--shell runs it in bash mode (!) instead")

#: every command; the order is that of ``csd help``, the completion scripts and the "valid:" lists
TABLE = (
    Command("launch", TOP, "start a worker (on HOST of the hosts file: over SSH); prints its shim path",
            "csd.commands.manage:launch",
            *_launch_args(), passthrough=True),
    Command("adopt", TOP, "bring back a worker by session id (--resume) after a reboot",
            "csd.commands.manage:adopt",
            *_launch_args(Arg("session_id")), passthrough=True),
    Command("list", TOP, "STATUS TMUX SESSION_ID SHIM CWD HOST COST (gone ones with --all)",
            "csd.commands.read:list_workers",
            Arg("--all", action="store_true", help="include gone workers"),
            Arg("--json", action="store_true", help="one JSON object per line"),
            Arg("pattern", nargs="?", default="")),
    Command("watch", TOP, "live table of workers; Ctrl-C exits",
            "csd.commands.engine:watch",
            Arg("--notify", metavar="CMD", default=None, help=_NOTIFY), Arg("pattern", nargs="?", default="")),
    Command("wait-for-turn", TOP, "fan-out wait until any/all named workers end their turn (default timeout 60 s)",
            "csd.commands.engine:fan_wait",
            OneOf(Arg("--any", action="store_true"), Arg("--all", action="store_true")), _SETTLED,
            Arg("names", nargs="+", metavar="NAME [TIMEOUT]", word="NAME... [TIMEOUT]")),
    Command("prune", TOP, "remove the files of every gone worker (never a live or launching one); prints each",
            "csd.commands.manage:prune",
            Arg("--dry-run", action="store_true", help="only print what would be removed")),
    Command("grant-consent", TOP, "one-time consent to let csd run Claude Code workers (type 'yes')",
            "csd.commands.manage:grant_consent"),
    Command("demo", TOP, "run the whole loop with simulated workers (no claude, no network)",
            "csd.commands.engine:demo",
            Arg("--workers", type=count_arg, default=3, word="N"),
            Arg("--no-table", action="store_true", help="skip the live table")),
    Command("plugin-dir", TOP, "the plugin's directory: claude --plugin-dir \"$(csd plugin-dir)\"",
            "csd.commands.install:plugin_dir"),
    Command("skill", TOP, "print the controller skill (SKILL.md) the plugin carries",
            "csd.commands.install:skill"),
    Command("completion", TOP, "print a shell completion script: eval \"$(csd completion bash)\"",
            "csd.commands.install:completion",
            Arg("shell", choices=SHELLS)),
    Command("help", TOP, "show this help (--version: csd's version)",
            "csd.commands.install:help", usage="help | --help | --version"),
    Command("status", PER, "print the state, one of: " + " ".join(STATES),
            "csd.commands.read:status",
            Arg("--json", action="store_true")),
    Command("session-id", PER, "print the session id it has now (/clear changes it)",
            "csd.commands.read:session_id"),
    Command("events-file", PER, "print the events file path",
            "csd.commands.read:events_file"),
    Command("read-events", PER, "print event lines; T is one of: " + " ".join(EVENT_NAMES),
            "csd.commands.read:read_events",
            Arg("--last", type=count_arg, metavar="N"), Arg("--type", type=event_arg, metavar="T"),
            Arg("--follow", action="store_true")),
    Command("handoff", PER, "how a human takes over this worker (tmux attach)",
            "csd.commands.read:handoff"),
    Command("wait-for-turn", PER, "block until the worker's turn ends (default 60 s); prints the event",
            "csd.commands.wait:wait_for_turn",
            Arg("timeout", nargs="?", type=timeout_arg, default=60.0), Arg("--after-line", type=count_arg, metavar="N"),
            _SETTLED),
    Command("send", PER, _SEND,
            "csd.commands.send:send",
            Arg("--shell", action="store_true", help="run the text as a command in Claude Code's bash mode (!)"),
            Arg("prompt", word="PROMPT|-")),
    Command("converse", PER, "send, wait, print this turn's reply (default 120 s)",
            "csd.commands.send:converse",
            Arg("--with-turn", action="store_true"), Arg("prompt", word="PROMPT|-"),
            Arg("timeout", nargs="?", type=timeout_arg, default=120.0)),
    Command("read-turn", PER, "the last turn as markdown",
            "csd.commands.read:read_turn",
            Arg("--full", action="store_true")),
    Command("stop", PER, "end the worker: /exit, wait, kill if needed, remove meta, events and shim. Destructive and "
            "final: relaunch to continue.",
            "csd.commands.manage:stop"),
    Command("hosted-launch", HIDDEN, "launch, or adopt with --resume, for a controller's launch --host: undone if stdin "
            "closes before it reports; prints one JSON line",
            "csd.commands.manage:hosted_launch",
            Arg("--resume", default=None, metavar="SESSION_ID"), Arg("name"), Arg("cwd"),
            Arg("claude_args", nargs="*", word="[-- claude-args...]"), passthrough=True),
    Command("stream", HIDDEN, "one JSON line per state change of the named workers until stdin closes",
            "csd.commands.remote:stream",
            Arg("--settled", action="store_true"), Arg("--replay", action="append", default=[], metavar="NAME=LINE"),
            Arg("names", nargs="+", metavar="NAME")),
)


def commands(scope: str) -> dict[str, Command]:
    return {c.name: c for c in TABLE if c.scope == scope}


def find(name: str, worker: str | None, plain: bool) -> Command:
    """The command ``name`` run with (``worker``) or without --worker; the usage error that says what is
    valid when there is none. ``plain``: neither --worker nor --host (the hidden commands need that)."""
    top, per = commands(TOP), commands(PER)
    table = per if worker is not None else top
    if name in table:
        return table[name]
    hidden = commands(HIDDEN)
    if plain and name in hidden:
        return hidden[name]
    if worker is None and name in per:
        raise UsageError(f"'{name}' is a per-worker command: run csd --worker NAME {name} (or SHIM {name})")
    if worker is not None and name in top:
        raise UsageError(f"'{name}' is a top-level command and takes no --worker; run: csd {name} ...")
    raise UsageError(f"unknown command {name!r}; valid: {' '.join(table)}")


def parsers() -> tuple[dict[str, Parser], dict[str, Parser]]:
    """(top-level command parsers, per-worker command parsers): what completion offers."""
    return ({n: c.parser() for n, c in commands(TOP).items()}, {n: c.parser() for n, c in commands(PER).items()})


# ---------------------------------------------------------------- csd help

HELP = """\
csd {version} — drive Claude Code sessions as workers in tmux.

Top-level commands:
{top}
Remote hosts: [hosts.NAME] tables (ssh, ssh_args, csd, env) in CSD_HOSTS_FILE; a remote worker's shim
runs csd --workers-dir DIR --host NAME --worker W; every per-worker command works through it.

Per-worker commands (csd --worker NAME CMD, or SHIM CMD; NAME may be either session id, the first or
the current one; a shim runs csd --workers-dir DIR --tmux-socket SOCKET --worker NAME, so it works from
any environment, and a CSD_WORKERS_DIR or CSD_TMUX_SOCKET there that says otherwise is an error):
{per}
Exit codes:
{exits}

Environment:
{env}
"""


def _entry(c: Command) -> str:
    """A command's lines in ``csd help``: its synopsis, and its help from HELP_COLUMN."""
    import textwrap

    synopsis = ("  csd " if c.scope == TOP else "  ") + c.synopsis()
    lines = textwrap.wrap(c.help, HELP_WIDTH)
    head = synopsis.ljust(HELP_COLUMN) + lines.pop(0) if len(synopsis) < HELP_COLUMN else synopsis
    return "\n".join([head, *(" " * HELP_COLUMN + ln for ln in lines)]) + "\n"


def help_text() -> str:
    exits = "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES)
    env = "\n".join(f"  {v.name:<26} {v.help} (default: {v.default or 'unset'})" for v in config.VARS)
    top, per = ("".join(_entry(c) for c in commands(scope).values()) for scope in (TOP, PER))
    return HELP.format(version=__version__, top=top, per=per, exits=exits, env=env)
