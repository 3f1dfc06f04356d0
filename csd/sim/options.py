"""What the simulated worker is told: its command line (``parse_args``, ``HELP``), the environment variables that
tune it (``Tuning``) and the Claude Code release whose behaviour it imitates. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# The Claude Code release whose behaviour (FACTS.md) this program imitates; it is what `--version` and the
# transcript's `version` field report, so version-sniffing controllers see a plausible value.
SIM_CLAUDE_VERSION = "2.1.330"
DEFAULT_MODEL = "claude-opus-5-5"
ROOT_REFUSAL = "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"

ENV_IDLE = "CSD_SIM_IDLE_SECONDS"
ENV_TRUST = "CSD_SIM_TRUST_DIALOG"
ENV_DELAY = "CSD_SIM_STARTUP_DELAY"
ENV_EXIT_AT_START = "CSD_SIM_EXIT_AT_START"
ENV_EXIT_AFTER_START = "CSD_SIM_EXIT_AFTER_START"
ENV_CLEAR_REDRAW = "CSD_SIM_CLEAR_REDRAW"
ENV_NOT_READY = "CSD_SIM_NOT_READY_SECONDS"
ENV_TURN = "CSD_SIM_TURN_SECONDS"
ENV_AGENT = "CSD_SIM_AGENT_SECONDS"
ENV_LAG = "CSD_SIM_TRANSCRIPT_LAG_SECONDS"
ENV_RETRY = "CSD_SIM_RETRY_SECONDS"
ENV_RELEASE = "CSD_SIM_RELEASE"

# Releases whose hook payloads and transcript lines changed (FACTS "Older Claude Code releases"; StopFailure
# from Claude Code's own changelog). CSD_SIM_RELEASE below one of them speaks the older release's way.
LAST_MESSAGE_SINCE = (2, 1, 47)  # Stop's last_assistant_message
STOP_FAILURE_SINCE = (2, 1, 78)  # StopFailure; before it a failed turn fires Stop
PROMPT_ID_SINCE = (2, 1, 196)  # prompt_id in hook payloads, promptId on transcript lines
# api-request transcript lines (one per request): 2.1.330 writes them, 2.1.112 does not (both observed); the
# first release that does is not known, so the simulator writes them only after 2.1.112
API_REQUEST_AFTER = (2, 1, 112)
# cost.total_cost_usd in the statusLine payload: 2.1.330 and 2.1.112 send it (both observed); the first release
# that does is not known here, so the simulator leaves it out before 2.0.0, as a stand-in for a release without it
STATUSLINE_COST_SINCE = (2, 0, 0)

# Defaults of the timings above, close to the real 2.1.330 against a local mock API (FACTS §4 "Timings").
DEFAULT_STARTUP_DELAY_S = 0.4  # + interpreter start: SessionStart (or the trust dialog) ~0.5 s after spawn
DEFAULT_TURN_S = 0.1  # "model" time per response: a plain turn's UserPromptSubmit -> Stop is ~0.1-0.2 s
DEFAULT_AGENT_S = 1.0  # how long a TOOL:Agent sub-agent works, unless its prompt says SLEEP:<s>
DEFAULT_TRANSCRIPT_LAG_S = 0.05  # the turn's last lines reach the transcript this long after the Stop hooks
DEFAULT_RETRY_S = 0.5  # between the attempts of a retried API call (2.1.330's first backoff is ~0.5 s)

# Boolean flags of the real CLI: they never take a value, so a word after them is the positional prompt.
_BOOL_FLAGS = frozenset({
    "--dangerously-skip-permissions", "--allow-dangerously-skip-permissions", "--verbose", "--ide",
    "--chrome", "--no-chrome", "--bare", "--brief", "-c", "--continue", "--fork-session",
    "--strict-mcp-config", "--include-partial-messages", "--replay-user-messages",
    "--no-session-persistence", "--safe-mode", "--restricted", "--disable-slash-commands",
    "--exclude-dynamic-system-prompt-sections", "--forward-subagent-text", "--include-hook-events",
    "--desktop", "--bg", "--background", "--tmux", "-p", "--print",
})


HELP = f"""\
Usage: csd-simworker [options] [prompt]

A simulated Claude Code worker for csd (no model, no network, no tokens). It takes the same options as
`claude` (unknown ones are accepted and ignored), runs the configured hooks with Claude Code's payloads,
and writes a transcript in Claude Code's format. Run it in a terminal, e.g. inside tmux.

Options:
  --session-id <uuid>               use this session id (error if its transcript exists)
  -r, --resume <uuid>               continue that session's transcript
  -c, --continue                    continue the most recent session of this directory
  --settings <file-or-json>         settings to load (hooks, skipDangerousModePermissionPrompt); repeatable
  --plugin-dir <dir>                load <dir>/hooks/hooks.json; repeatable
  --dangerously-skip-permissions    bypass mode (refused as root unless IS_SANDBOX=1)
  --model <model>                   model name reported in SessionStart
  --permission-mode <mode>          permission_mode reported in payloads
  -v, --version                     print the version
  -h, --help                        print this help

Directives in a prompt (anywhere, combined, applied in order):
  REPLY:<text>            reply with <text> (rest of line); default reply is "ECHO: <prompt>"
  TOOL:Bash:<cmd>         run <cmd> with sh -c as a Bash tool call; reply "DONE: <stdout[:200]>"
  TOOL:Agent:<json>       a background Agent, like the real one ({{"description", "prompt", "subagent_type"}};
                          run_in_background is ignored, as 2.1.330 does): PreToolUse, SubagentStart,
                          PostToolUse {{isAsync, status: "async_launched", agentId, outputFile, ...}},
                          PostToolBatch, Stop with background_tasks running; after the sub-agent's time
                          (SLEEP:<s> in its prompt, else {ENV_AGENT}): SubagentStop, a synthetic
                          <task-notification> UserPromptSubmit and a second Stop
  TOOL:<Name>:<json>      a tool call with that input; result "ok"
  SLEEP:<seconds>         the turn takes that long (Esc interrupts)
  BG:<seconds>            a background Agent working <seconds>; BG:0 finishes at once: SubagentStop, then
                          Stop with background_tasks [], then the <task-notification> turn and its Stop
  CRASH                   kill -9 itself mid-turn          HANG   the turn never ends
  FAIL:<error>            the turn's API calls fail, as 2.1.330 does: a synthetic assistant line
                          (isApiErrorMessage) and StopFailure instead of Stop; <error> is StopFailure's
                          error (rate_limit, server_error, authentication_failed, unknown, ...)
  RETRY:<n>               the turn's next API call fails n times and is retried: n api-request transcript
                          lines here, {ENV_RETRY} apart (Claude Code writes one per attempt), then the
                          call's last attempt answers (or fails, with FAIL). RETRY:2 FAIL:server_error is
                          what CLAUDE_CODE_MAX_RETRIES=2 and a 500 on every attempt give; RETRY:2 HANG
                          shows a call retrying (2 attempts) that never ends
  SWALLOW-ENTER           the first Enter on this text is ignored

Slash commands: /exit (/quit), /clear, /compact [instructions]; any other /word (not a path such as /tmp/x)
is refused with "Unknown command: /word", no hook fired.

The input line behaves like 2.1.330's: a paste over 800 characters or with more than min(rows - 10, 2) line
breaks becomes "[Pasted text #N]" and is submitted wrapped in <pasted_content id=...>; a CR in a paste is a line
break, a tab four spaces; "!" first in an empty line switches to bash mode (the command runs, then the model
answers its output: Stop without UserPromptSubmit); a backslash + Enter inserts a line break; Esc Esc clears the line;
C-a, C-e, Left, Right, Delete, Backspace and C-u edit it; trailing whitespace is trimmed on submit.

Environment:
  {ENV_IDLE}=<s>            idle_prompt Notification this long after a turn ends (default 60)
  {ENV_TRUST}=1              always show the workspace-trust dialog first
  {ENV_TRUST}=auto           show it unless ~/.claude.json trusts the cwd or a parent, like the real
                                      CLI (unset or 0: never); "Yes" records projects[cwd].hasTrustDialogAccepted
  {ENV_DELAY}=<s>           delay start-up, before any dialog and SessionStart (default {DEFAULT_STARTUP_DELAY_S:g})
  {ENV_EXIT_AT_START}=<code>        print a line and exit with <code> before SessionStart
  {ENV_EXIT_AFTER_START}=<code>     print a line and exit with <code> right after SessionStart (as `claude -p`
                                      does once its one prompt is answered)
  {ENV_CLEAR_REDRAW}=1             redraw by clearing the whole screen first (a TUI may; tmux then scrolls the
                                      old frame, a stale dialog included, into the pane's history)
  {ENV_NOT_READY}=<s>       Enter is swallowed this long after SessionStart (default 0.3)
  {ENV_TURN}=<s>            model time per response (default {DEFAULT_TURN_S:g}; 0 for fast tests)
  {ENV_AGENT}=<s>           how long a TOOL:Agent sub-agent works (default {DEFAULT_AGENT_S:g})
  {ENV_LAG}=<s>  the turn's last transcript lines land this long after the Stop hooks
                                      (default {DEFAULT_TRANSCRIPT_LAG_S:g})
  {ENV_RETRY}=<s>           time between the attempts of a RETRY:<n> call (default {DEFAULT_RETRY_S:g})
  {ENV_RELEASE}=<x.y.z>           speak that Claude Code release's payloads (default {SIM_CLAUDE_VERSION}):
                                      before {'.'.join(map(str, PROMPT_ID_SINCE))} no prompt_id in hook payloads and no promptId in
                                      the transcript; before {'.'.join(map(str, STOP_FAILURE_SINCE))} a failed turn fires Stop (the
                                      transcript's synthetic line is all that tells); before {'.'.join(map(str, LAST_MESSAGE_SINCE))} no
                                      last_assistant_message in Stop; 2.1.112 and older write no
                                      api-request lines; before 2.0.0 the statusLine gets no cost (a
                                      stand-in). The version is what --version and the transcript report
  CLAUDE_CODE_TMPDIR=<dir>            agents' output files go to <dir>/claude-<uid>/... (default /tmp)
"""


class SimUsageError(Exception):
    """A command line the simulated worker refuses, like the real CLI would."""


@dataclass
class Options:
    """What the simulated worker understood of its command line."""

    session_id: str | None = None
    resume: str | None = None
    continue_last: bool = False
    settings: list[str] = field(default_factory=list)
    plugin_dirs: list[str] = field(default_factory=list)
    skip_permissions: bool = False
    model: str | None = None
    permission_mode: str | None = None
    prompt: str | None = None
    print_mode: bool = False
    show_version: bool = False
    show_help: bool = False


# The options the simulated worker acts on, by the Options field they set.
_VALUE_OPTIONS = {"--session-id": "session_id", "-r": "resume", "--resume": "resume", "--model": "model",
                  "--permission-mode": "permission_mode"}
_LIST_OPTIONS = {"--settings": "settings", "--plugin-dir": "plugin_dirs"}
_FLAG_OPTIONS = {"--dangerously-skip-permissions": "skip_permissions", "-c": "continue_last",
                 "--continue": "continue_last", "-p": "print_mode", "--print": "print_mode",
                 "-v": "show_version", "--version": "show_version", "-h": "show_help", "--help": "show_help"}


def parse_args(argv: list[str]) -> Options:
    """Parse claude's command line permissively: unknown options and their words are ignored."""
    opts = Options()
    i = 0
    rest_positional = False
    while i < len(argv):
        arg = argv[i]
        if rest_positional or not arg.startswith("-") or arg == "-":
            if opts.prompt is None:
                opts.prompt = arg
        elif arg == "--":
            rest_positional = True
        else:
            i = _parse_option(opts, argv, i)
        i += 1
    return opts


def _has_value(argv: list[str], i: int) -> bool:
    """True when the word after argv[i] is there and is not an option."""
    return i + 1 < len(argv) and not argv[i + 1].startswith("-")


def _parse_option(opts: Options, argv: list[str], i: int) -> int:
    """Apply the option at argv[i] (``--name value`` or ``--name=value``); the index of the last word it took."""
    name, eq, inline_val = argv[i].partition("=")
    inline = inline_val if eq else None
    if name in _FLAG_OPTIONS:
        setattr(opts, _FLAG_OPTIONS[name], True)
        return i
    if name in _VALUE_OPTIONS or name in _LIST_OPTIONS:
        if name in ("-r", "--resume") and inline is None and not _has_value(argv, i):
            raise SimUsageError("--resume needs a session id here (the session picker is not simulated)")
        if inline is None:
            if not _has_value(argv, i):
                raise SimUsageError(f"option '{name}' needs a value")
            i += 1
        value = argv[i] if inline is None else inline
        if name in _LIST_OPTIONS:
            getattr(opts, _LIST_OPTIONS[name]).append(value)
        else:
            setattr(opts, _VALUE_OPTIONS[name], value)
        return i
    if name not in _BOOL_FLAGS and inline is None:
        # Unknown or variadic option (e.g. --disallowed-tools A B): like commander, it takes the words up to
        # the next option.
        while _has_value(argv, i):
            i += 1
    return i


def parse_release(text: str) -> tuple[int, ...] | None:
    """``2.1.40`` -> (2, 1, 40); None when it is not a version."""
    m = re.fullmatch(r"\s*v?(\d+)\.(\d+)\.(\d+)\s*", text)
    return tuple(int(g) for g in m.groups()) if m else None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, ""))
    except ValueError:
        return default


@dataclass(frozen=True)
class Tuning:
    """The simulated worker's timings and release, from its ``CSD_SIM_*`` environment variables (see ``HELP``)."""

    idle_s: float
    not_ready_s: float
    startup_delay: float
    turn_s: float
    agent_s: float
    lag_s: float
    retry_s: float
    version: str
    release: tuple[int, ...]
    trust_mode: str  # never | always | auto
    clear_redraw: bool
    exit_after_start: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tuning:
        version = env.get(ENV_RELEASE, "").strip() or SIM_CLAUDE_VERSION
        trust = env.get(ENV_TRUST, "").strip().lower()
        return cls(
            idle_s=_env_float(env, ENV_IDLE, 60.0),
            not_ready_s=_env_float(env, ENV_NOT_READY, 0.3),  # the real TUI took every Enter from +0.3 s (FACTS §4)
            startup_delay=_env_float(env, ENV_DELAY, DEFAULT_STARTUP_DELAY_S),
            turn_s=max(_env_float(env, ENV_TURN, DEFAULT_TURN_S), 0.0),
            agent_s=max(_env_float(env, ENV_AGENT, DEFAULT_AGENT_S), 0.0),
            lag_s=max(_env_float(env, ENV_LAG, DEFAULT_TRANSCRIPT_LAG_S), 0.0),
            retry_s=max(_env_float(env, ENV_RETRY, DEFAULT_RETRY_S), 0.0),
            version=version,
            release=parse_release(version) or parse_release(SIM_CLAUDE_VERSION) or (),
            trust_mode="auto" if trust == "auto" else ("never" if trust in ("", "0", "no", "false") else "always"),
            clear_redraw=env.get(ENV_CLEAR_REDRAW, "") not in ("", "0"),
            exit_after_start=env.get(ENV_EXIT_AFTER_START, ""),
        )

    @property
    def has_prompt_id(self) -> bool:
        return self.release >= PROMPT_ID_SINCE

    @property
    def has_stop_failure(self) -> bool:
        return self.release >= STOP_FAILURE_SINCE

    @property
    def has_last_message(self) -> bool:
        return self.release >= LAST_MESSAGE_SINCE

    @property
    def has_api_requests(self) -> bool:
        return self.release > API_REQUEST_AFTER

    @property
    def has_statusline_cost(self) -> bool:
        return self.release >= STATUSLINE_COST_SINCE
