"""Every environment variable csd reads, with its default, in one place."""

from __future__ import annotations

import os
import re

from csd.value import Value

DEFAULT_WORKERS_DIR = "/tmp/claude-workers"


class Var(Value):
    _fields = ("name", "default", "help")
    name: str
    default: str
    help: str

    def __init__(self, name: str, default: str, help: str) -> None:
        self._set(name=name, default=default, help=help)


VARS: tuple[Var, ...] = (
    Var("CSD_WORKERS_DIR", DEFAULT_WORKERS_DIR, "where metas, events files and bin/ shims live"),
    Var("CSD_CLAUDE_BIN", "claude", "the worker program (csd-simworker for a simulated worker)"),
    Var("CSD_TMUX_SOCKET", "", "dedicated tmux server: a name means -L NAME, a path means -S PATH"),
    Var("CSD_LAUNCH_TIMEOUT", "30", "seconds launch/adopt wait for session_start"),
    Var("CSD_SUBMIT_TIMEOUT", "10", "seconds send waits for user_prompt_submit before failing"),
    Var("CSD_SUBMIT_RETRY_INTERVAL", "2", "seconds between Enter re-presses while send waits"),
    Var("CSD_EXACT_PROMPT_LIMIT", "100000", "longest prompt (characters) send types exactly; a longer one goes as one "
        "paste, which Claude Code wraps in <pasted_content> (exact typing costs ~0.1-0.15 ms per character)"),
    Var("CSD_STOP_TIMEOUT", "10", "seconds stop waits for session_end before killing the session"),
    Var("CSD_TMUX_TIMEOUT", "10", "seconds any one tmux command may take before csd says the server is not answering"),
    Var("CSD_CONVERSE_DIAG_FILE", "", "converse writes a diagnostic here when it times out or gets no reply text"),
    Var("CSD_WATCH_BACKEND", "", "inotify or poll (default: inotify where available)"),
    Var("CSD_HOSTS_FILE", "~/.config/csd/hosts.toml", "the hosts file naming remote hosts (csd launch --host NAME)"),
    Var("CSD_SSH_CONTROL_DIR", "/tmp/csd-ssh-UID", "private (0700) dir of the per-host SSH control sockets"),
    Var("CSD_SSH_PERSIST", "600", "seconds an idle per-host SSH connection stays open"),
    Var("CSD_BG_REPORT_TIMEOUT", "600", "seconds an idle worker's background tasks may run before it needs attention"),
    Var("HOME", "~", "consent file ~/.claude/.claude-session-driver-consent"),
)
_BY_NAME = {v.name: v for v in VARS}


def get(name: str) -> str:
    """The variable's value, or its default when unset or empty."""
    return os.environ.get(name) or _BY_NAME[name].default


def tmux_socket() -> str:
    """The tmux socket in use: a name as given, a path made absolute (a shim must work from any cwd)."""
    value = get("CSD_TMUX_SOCKET")
    return os.path.abspath(value) if "/" in value else value


def claude_dir() -> str:
    """Claude Code's config dir, where its transcripts are: ``$CLAUDE_CONFIG_DIR``, else ``~/.claude``
    (an empty value counts as unset, as Claude Code has it)."""
    return os.environ.get("CLAUDE_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".claude")


#: The global options that pin a variable for one csd run (a shim passes both), and the variable each pins.
PINNING_OPTIONS = {"--workers-dir": "CSD_WORKERS_DIR", "--tmux-socket": "CSD_TMUX_SOCKET"}


def _same(a: str, b: str) -> bool:
    if "/" in a or "/" in b:
        return os.path.abspath(a) == os.path.abspath(b) or os.path.realpath(a) == os.path.realpath(b)
    return a == b


def pin(option: str, value: str) -> None:
    """Use ``value`` for the option's variable for the rest of this run. A value the caller set that says
    otherwise is an error naming both: a shim must never quietly act on another workers dir or server."""
    name = PINNING_OPTIONS[option]
    caller = os.environ.get(name, "")
    if caller and not _same(caller, value):
        from csd.errors import UsageError

        shown = repr(value) if value else "'' (the default tmux server)"
        raise UsageError(
            f"{option} {shown} contradicts {name}={caller!r} in the environment; "
            f"unset {name} (a shim knows its own worker's) or run the shim of the worker you mean"
        )
    os.environ[name] = value


#: What csd takes for a number of seconds or a count: plain ASCII digits. Python's float() and int()
#: also take "5_0", "٥", "inf", "nan" and "1e3", none of which a user means as a timeout.
_SECONDS_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_COUNT_RE = re.compile(r"[0-9]+", re.ASCII)


def parse_seconds(text: str) -> float | None:
    """``text`` as a number of seconds (ASCII digits, an optional fraction), else None."""
    return float(text) if _SECONDS_RE.fullmatch(text.strip()) else None


def parse_count(text: str) -> int | None:
    """``text`` as a whole number >= 0 (ASCII digits), else None."""
    return int(text) if _COUNT_RE.fullmatch(text.strip()) else None


def count(name: str) -> int:
    """A whole number >= 0 from the environment; a bad value is a usage error naming the variable."""
    raw = get(name)
    value = parse_count(raw)
    if value is None:
        from csd.errors import UsageError

        raise UsageError(f"{name}={raw!r} is not a whole number; use e.g. {_BY_NAME[name].default}")
    return value


def seconds(name: str) -> float:
    """A positive duration from the environment; a bad value is a usage error naming the variable."""
    raw = get(name)
    value = parse_seconds(raw)
    if value is None or not (0 < value <= 86400 * 7):
        from csd.errors import UsageError

        raise UsageError(f"{name}={raw!r} is not a duration; use seconds > 0, e.g. {_BY_NAME[name].default}")
    return value
