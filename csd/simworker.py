"""A simulated Claude Code worker: a terminal program that, seen from csd, behaves like the Claude Code TUI without spending tokens.

It imitates Claude Code 2.1.330 as observed in tmux (shared/claude-code/FACTS.md, tests/e2e/FINDINGS.md):

* the command line (``--session-id``, ``--resume``, ``--continue``, ``--settings``, ``--plugin-dir``,
  ``--dangerously-skip-permissions`` refused as root without ``IS_SANDBOX=1``; unknown options ignored);
* the start-up (about 0.5 s to SessionStart by default), the workspace-trust dialog (forced, or decided by
  ``~/.claude.json`` like the real one, which records the acceptance there) and the bypass-permissions dialog;
* hooks with Claude Code's payloads: SessionStart (``resume`` carries ``context_tokens`` & co. and no
  ``model``; ``clear`` has no ``model``), UserPromptSubmit (at submit time, even while busy), PreToolUse,
  SubagentStart, PostToolUse, PostToolBatch, Stop (``last_assistant_message``, ``background_tasks``),
  SubagentStop, Notification (idle_prompt), PreCompact, PostCompact and SessionEnd;
* background agents (``TOOL:Agent:<json>``, ``BG:<s>``): Stop with the agent running, then SubagentStop, a
  synthetic ``<task-notification>`` turn and a second Stop; ``BG:0`` gives the quick order (SubagentStop
  before the first Stop, which then lists no background task);
* the transcript, in Claude Code's format and timing: the user prompt and tool_use lines are on disk before
  their hooks, but the last tool result, the final assistant text and ``stop_hook_summary`` land about 50 ms
  after the Stop hooks returned;
* cost: ``usage`` on assistant lines (priced like the mock model), the settings' ``statusLine`` command run when
  2.1.330 runs it (start-up, ~0.3 s after Stop/StopFailure, after ``/clear`` and ``/compact``) with its
  per-session ``cost.total_cost_usd``, and ``cost-state`` lines at a session's end (``/clear``, ``/exit``, a kill);
* the screen: header, ``❯`` + NBSP input line, ``esc to interrupt`` in the footer while busy, queued prompts,
  and the exact dialog texts.

Prompts are scripted with directives and timings tuned with environment variables (both listed in ``HELP``,
which `--help` prints). Standard library only (plus csd.transcript, which is too).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import re
import signal
import sys
import termios
import textwrap
import time
import tty
import uuid
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from csd.siminput import SLASH_COMMANDS, InputBox, Key, KeyParser, _SLASH_WORD  # noqa: F401 (Key: re-exported)
from csd.transcript import encode_cwd  # pure and standard-library only, like this program

# The Claude Code release whose behaviour (FACTS.md) this program imitates; it is what `--version` and the
# transcript's `version` field report, so version-sniffing controllers see a plausible value.
SIM_CLAUDE_VERSION = "2.1.330"
DEFAULT_MODEL = "claude-opus-5-5"
HOOK_TIMEOUT_S = 60.0
BASH_TIMEOUT_S = 120.0  # the real Bash tool's default timeout is 2 minutes
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
STATUS_LINE_DELAY_S = 0.3  # 2.1.330 runs the statusLine command ~0.3 s after a turn's Stop/StopFailure
# The mock model's prices as Claude Code computes them (FACTS "Cost": 2962 input + 12 output tokens = $0.012088)
PRICE_INPUT_USD, PRICE_OUTPUT_USD = 4e-6, 2e-5
COMPACT_COST_USD = 0.05  # what a /compact adds to the session's cost (0.0126 -> 0.064144 observed)

# Defaults of the timings above, close to the real 2.1.330 against a local mock API (FACTS §4 "Timings").
DEFAULT_STARTUP_DELAY_S = 0.4  # + interpreter start: SessionStart (or the trust dialog) ~0.5 s after spawn
DEFAULT_TURN_S = 0.1  # "model" time per response: a plain turn's UserPromptSubmit -> Stop is ~0.1-0.2 s
DEFAULT_AGENT_S = 1.0  # how long a TOOL:Agent sub-agent works, unless its prompt says SLEEP:<s>
DEFAULT_TRANSCRIPT_LAG_S = 0.05  # the turn's last lines reach the transcript this long after the Stop hooks
DEFAULT_RETRY_S = 0.5  # between the attempts of a retried API call (2.1.330's first backoff is ~0.5 s)

HOOK_EVENTS = (
    "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolBatch", "Notification",
    "Stop", "StopFailure", "SubagentStart", "SubagentStop", "PreCompact", "PostCompact", "SessionEnd",
)

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


class UsageError(Exception):
    """A command line the simulated worker refuses, like the real CLI would."""


# --------------------------------------------------------------------------------------------------
# Pure helpers


def now_iso() -> str:
    """UTC time in the transcript's format, e.g. 2026-11-23T19:48:40.434Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_project_dir(cwd: str) -> str:
    """Claude Code's project directory name for ``cwd`` (the one rule, in csd.transcript)."""
    return encode_cwd(cwd)


def claude_config_dir(env: Mapping[str, str]) -> Path:
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"])
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".claude"


def transcript_path_for(env: Mapping[str, str], cwd: str, session_id: str) -> Path:
    return claude_config_dir(env) / "projects" / encode_project_dir(cwd) / f"{session_id}.jsonl"


def global_config_path(env: Mapping[str, str]) -> Path:
    """Claude Code's global config file: $CLAUDE_CONFIG_DIR/.claude.json, else $HOME/.claude.json."""
    base = env.get("CLAUDE_CONFIG_DIR") or env.get("HOME") or os.path.expanduser("~")
    return Path(base) / ".claude.json"


def workspace_trusted(env: Mapping[str, str], cwd: str) -> bool:
    """True when ~/.claude.json has projects[cwd or a parent].hasTrustDialogAccepted, as the real CLI checks."""
    try:
        config = json.loads(global_config_path(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    projects = config.get("projects") if isinstance(config, dict) else None
    if not isinstance(projects, dict):
        return False
    here = Path(cwd)
    for folder in (here, *here.parents):
        entry = projects.get(str(folder))
        if isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True:
            return True
    return False


# What the real CLI puts in a project entry it creates when the trust dialog is accepted.
_PROJECT_DEFAULTS: dict[str, Any] = {
    "allowedTools": [], "mcpContextUris": [], "mcpServers": {}, "enabledMcpjsonServers": [],
    "disabledMcpjsonServers": [], "hasClaudeMdExternalIncludesApproved": False,
    "hasClaudeMdExternalIncludesWarningShown": False,
}


def record_trust(env: Mapping[str, str], cwd: str) -> bool:
    """Set projects[cwd].hasTrustDialogAccepted in ~/.claude.json: merged, written atomically (temp + rename).

    A file that is there but not a JSON object is left alone (False): never clobber the user's config.
    """
    path = global_config_path(env)
    config: Any = {}
    mode = 0o600
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        text = None
    except OSError:
        return False
    if text is not None and text.strip():
        try:
            config = json.loads(text)
        except ValueError:
            return False
    if not isinstance(config, dict):
        return False
    projects = config.setdefault("projects", {})
    if not isinstance(projects, dict):
        return False
    entry = projects.setdefault(cwd, {})
    if not isinstance(entry, dict):
        entry = projects[cwd] = {}
    for key, value in _PROJECT_DEFAULTS.items():
        entry.setdefault(key, value)
    entry["hasTrustDialogAccepted"] = True
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
    return True


def task_output_path(env: Mapping[str, str], cwd: str, session_id: str, agent_id: str) -> Path:
    """Where Claude Code puts a background agent's output file (a link to the sub-agent's transcript)."""
    base = env.get("CLAUDE_CODE_TMPDIR") or "/tmp"
    return (Path(base) / f"claude-{os.getuid()}" / encode_project_dir(cwd) / session_id / "tasks"
            / f"{agent_id}.output")


def model_display_name(model: str) -> str:
    """claude-opus-5-5 -> Opus 5.5 (the header's style); other names as they are."""
    m = re.fullmatch(r"claude-([a-z]+)-(\d+)(?:-(\d{1,2}))?(?:-\d{8})?", model)
    if m is None:
        return model
    return m.group(1).capitalize() + " " + m.group(2) + (f".{m.group(3)}" if m.group(3) else "")


def parse_release(text: str) -> tuple[int, ...] | None:
    """``2.1.40`` -> (2, 1, 40); None when it is not a version."""
    m = re.fullmatch(r"\s*v?(\d+)\.(\d+)\.(\d+)\s*", text)
    return tuple(int(g) for g in m.groups()) if m else None


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


@dataclass(frozen=True)
class Directive:
    """One steering instruction found in a prompt."""

    kind: str  # reply | tool | sleep | bg | crash | hang | fail | retry
    arg: str = ""
    name: str = ""
    seconds: float = 0.0


# REPLY and TOOL take the rest of the line, so a directive-looking word inside them is not a directive.
_DIRECTIVE_RE = re.compile(
    r"(?<![\w-])(?:"
    r"REPLY:(?P<reply>[^\n]*)"
    r"|TOOL:(?P<tool_name>[A-Za-z_][\w.-]*):(?P<tool_arg>[^\n]*)"
    r"|SLEEP:(?P<sleep>\d+(?:\.\d+)?)"
    r"|BG:(?P<bg>\d+(?:\.\d+)?)"
    r"|(?P<crash>CRASH)(?![\w-])"
    r"|(?P<hang>HANG)(?![\w-])"
    r"|FAIL:(?P<fail>[a-z_]+)"
    r"|RETRY:(?P<retry>\d+)"
    r")"
)


def parse_directives(prompt: str) -> list[Directive]:
    """The directives of a prompt, in the order they appear."""
    found: list[Directive] = []
    for m in _DIRECTIVE_RE.finditer(prompt):
        if m.group("reply") is not None:
            found.append(Directive("reply", arg=m.group("reply").strip()))
        elif m.group("tool_name") is not None:
            found.append(Directive("tool", name=m.group("tool_name"), arg=m.group("tool_arg").strip()))
        elif m.group("sleep") is not None:
            found.append(Directive("sleep", seconds=float(m.group("sleep"))))
        elif m.group("bg") is not None:
            found.append(Directive("bg", seconds=float(m.group("bg"))))
        elif m.group("crash") is not None:
            found.append(Directive("crash"))
        elif m.group("hang") is not None:
            found.append(Directive("hang"))
        elif m.group("fail") is not None:
            found.append(Directive("fail", arg=m.group("fail")))
        elif m.group("retry") is not None:
            found.append(Directive("retry", seconds=float(m.group("retry"))))
    return found


#: StopFailure's ``error`` -> the synthetic assistant text Claude Code 2.1.330 shows (FACTS §7).
API_ERROR_TEXT = {
    "rate_limit": "API Error: Request rejected (429) · rate_limit_error (simulated)",
    "server_error": "API Error: 500 api_error (simulated) · This is a server-side issue, usually temporary",
    "authentication_failed": "Please run /login · API Error: 401 authentication_error (simulated)",
    "unknown": "API Error: 400 invalid_request_error (simulated)",
}


# --------------------------------------------------------------------------------------------------
# Command line and settings


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


def parse_args(argv: list[str]) -> Options:
    """Parse claude's command line permissively: unknown options and their words are ignored."""
    opts = Options()
    i = 0
    rest_positional = False

    def value(name: str, inline: str | None) -> str:
        nonlocal i
        if inline is not None:
            return inline
        if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
            raise UsageError(f"option '{name}' needs a value")
        i += 1
        return argv[i]

    while i < len(argv):
        arg = argv[i]
        if rest_positional or not arg.startswith("-") or arg == "-":
            if opts.prompt is None:
                opts.prompt = arg
        elif arg == "--":
            rest_positional = True
        else:
            name, eq, inline_val = arg.partition("=")
            inline = inline_val if eq else None
            if name == "--session-id":
                opts.session_id = value(name, inline)
            elif name in ("-r", "--resume"):
                if inline is None and (i + 1 >= len(argv) or argv[i + 1].startswith("-")):
                    raise UsageError("--resume needs a session id here (the session picker is not simulated)")
                opts.resume = value(name, inline)
            elif name == "--settings":
                opts.settings.append(value(name, inline))
            elif name == "--plugin-dir":
                opts.plugin_dirs.append(value(name, inline))
            elif name == "--model":
                opts.model = value(name, inline)
            elif name == "--permission-mode":
                opts.permission_mode = value(name, inline)
            elif name == "--dangerously-skip-permissions":
                opts.skip_permissions = True
            elif name in ("-c", "--continue"):
                opts.continue_last = True
            elif name in ("-p", "--print"):
                opts.print_mode = True
            elif name in ("-v", "--version"):
                opts.show_version = True
            elif name in ("-h", "--help"):
                opts.show_help = True
            elif name not in _BOOL_FLAGS and inline is None:
                # Unknown or variadic option (e.g. --disallowed-tools A B): like commander, it takes the
                # words up to the next option.
                while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                    i += 1
        i += 1
    return opts


@dataclass(frozen=True)
class HookCommand:
    """One configured hook command and where it came from."""

    command: str
    timeout: float
    plugin_root: str | None  # set for plugin hooks: ${CLAUDE_PLUGIN_ROOT} and the env var


@dataclass(frozen=True)
class HookGroup:
    """A matcher and its hook commands, as in Claude Code's `hooks` settings."""

    matcher: str | None
    commands: tuple[HookCommand, ...]


HookTable = dict[str, list[HookGroup]]


def hooks_from_config(config: Any, plugin_root: str | None = None) -> HookTable:
    """The hook groups of a settings or hooks.json object; malformed entries are skipped."""
    table: HookTable = {}
    hooks = config.get("hooks") if isinstance(config, dict) else None
    if not isinstance(hooks, dict):
        return table
    for event, groups in hooks.items():
        if event not in HOOK_EVENTS or not isinstance(groups, list):
            continue
        for group in groups:
            if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
                continue
            commands = []
            for h in group["hooks"]:
                if isinstance(h, dict) and h.get("type", "command") == "command" and isinstance(h.get("command"), str):
                    timeout = h.get("timeout")
                    commands.append(HookCommand(
                        h["command"],
                        float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else HOOK_TIMEOUT_S,
                        plugin_root,
                    ))
            matcher = group.get("matcher")
            table.setdefault(event, []).append(HookGroup(matcher if isinstance(matcher, str) else None, tuple(commands)))
    return table


def merge_hooks(tables: Iterable[HookTable]) -> HookTable:
    merged: HookTable = {}
    for t in tables:
        for event, groups in t.items():
            merged.setdefault(event, []).extend(groups)
    return merged


def matcher_matches(matcher: str | None, value: str | None) -> bool:
    if matcher in (None, "", "*") or value is None:
        return True
    try:
        return re.fullmatch(matcher, value) is not None
    except re.error:
        return matcher == value


def select_hooks(table: HookTable, event: str, match_value: str | None) -> list[HookCommand]:
    """The commands to run for an event, in configuration order, exact duplicates run once."""
    chosen: list[HookCommand] = []
    seen: set[tuple[str, str | None]] = set()
    for group in table.get(event, []):
        if not matcher_matches(group.matcher, match_value):
            continue
        for cmd in group.commands:
            key = (cmd.command, cmd.plugin_root)
            if key not in seen:
                seen.add(key)
                chosen.append(cmd)
    return chosen


def load_settings_arg(arg: str) -> dict[str, Any]:
    """A --settings value: inline JSON, or the path of a JSON file."""
    text = arg if arg.lstrip().startswith("{") else Path(arg).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("settings must be a JSON object")
    return data


# --------------------------------------------------------------------------------------------------
# Transcript


def _short_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class Transcript:
    """Appends Claude Code-shaped lines to <config>/projects/<enc cwd>/<session>.jsonl, one write per line."""

    def __init__(self, path: Path, session_id: str, cwd: str, permission_mode: str, model: str,
                 version: str = SIM_CLAUDE_VERSION, prompt_ids: bool = True, api_requests: bool = True) -> None:
        self.path = path
        self.session_id = session_id
        self.cwd = cwd
        self.permission_mode = permission_mode
        self.model = model
        self.version = version
        self.prompt_ids = prompt_ids  # releases before ~2.1.196 write no promptId
        self.api_requests = api_requests  # 2.1.112 and older write no api-request lines
        self.request_id: str | None = None  # the api-request line the next response answers
        self.parent_uuid: str | None = None
        self.message_count = 0
        self._fd: int | None = None
        self._held: list[dict[str, Any]] | None = None

    def load_existing(self) -> list[dict[str, Any]]:
        """Read a transcript being resumed: continue its uuid chain; return its conversation lines."""
        lines: list[dict[str, Any]] = []
        try:
            raw = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return lines
        for text in raw:
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("uuid"):
                self.parent_uuid = obj["uuid"]
                self.message_count += 1
                lines.append(obj)
        return lines

    def close(self) -> None:
        try:
            self.release()
        except OSError:
            pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def hold(self) -> None:
        """From now on keep lines in memory (in order, uuid chain already set) until release()."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Write the held lines; later lines go straight to disk again."""
        held, self._held = self._held, None
        for obj in held or ():
            self.write(obj)

    def write(self, obj: dict[str, Any]) -> None:
        if self._held is not None:
            self._held.append(obj)
            return
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if fresh:
                self._write_raw({"type": "permission-mode", "permissionMode": self.permission_mode,
                                 "sessionId": self.session_id})
        self._write_raw(obj)

    def _write_raw(self, obj: dict[str, Any]) -> None:
        assert self._fd is not None
        data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        # One O_APPEND write per line, completed before the caller fires the next hook.
        while data:
            n = os.write(self._fd, data)
            data = data[n:]

    def conversation(self, body: dict[str, Any], *, chained: bool = True) -> str:
        """Write a conversation line (uuid, parentUuid chain, common fields); return its uuid."""
        line_uuid = str(uuid.uuid4())
        obj: dict[str, Any] = {"parentUuid": self.parent_uuid if chained else None, "isSidechain": False}
        obj.update(body)
        if not self.prompt_ids:
            obj.pop("promptId", None)
        obj.update({
            "uuid": line_uuid, "timestamp": now_iso(), "userType": "external", "entrypoint": "cli",
            "cwd": self.cwd, "sessionId": self.session_id, "version": self.version, "gitBranch": "HEAD",
        })
        self.write(obj)
        self.parent_uuid = line_uuid
        self.message_count += 1
        return line_uuid

    def user_prompt(self, text: str, prompt_id: str, *, synthetic: bool = False) -> str:
        body: dict[str, Any] = {
            "promptId": prompt_id, "type": "user", "message": {"role": "user", "content": text},
            "permissionMode": self.permission_mode,
        }
        if synthetic:
            body.update({"origin": {"kind": "task-notification", "producer": "session-task"},
                         "promptSource": "system", "turnOrigin": "task_notification"})
        else:
            body.update({"origin": {"kind": "human"}, "promptSource": "typed", "turnOrigin": "human"})
        return self.conversation(body)

    def api_request(self) -> None:
        """The line Claude Code writes for each request it sends (each attempt of a retried call too)."""
        if not self.api_requests:
            return
        self.request_id = str(uuid.uuid4())
        self.write({"type": "api-request", "sessionId": self.session_id, "id": self.request_id,
                    "timestamp": now_iso(), "version": self.version, "querySource": "repl_main_thread"})

    def assistant(self, message_id: str, request_id: str, block: dict[str, Any], index: int,
                  stop_reason: str, usage: dict[str, int] | None = None) -> str:
        body: dict[str, Any] = {
            "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": self.model,
                "content": [block], "stop_reason": stop_reason, "stop_sequence": None,
                "usage": usage or {"input_tokens": 0, "output_tokens": 0},
            },
            "apiBlockIndex": index, "requestId": request_id, "type": "assistant",
        }
        if self.request_id is not None:
            body["requestRef"] = self.request_id
        return self.conversation(body)

    def tool_result(self, prompt_id: str, tool_use_id: str, content: Any, is_error: bool,
                    tool_use_result: Any, source_uuid: str) -> str:
        return self.conversation({
            "promptId": prompt_id, "type": "user",
            "message": {"role": "user", "content": [
                {"tool_use_id": tool_use_id, "type": "tool_result", "content": content, "is_error": is_error}]},
            "toolUseResult": tool_use_result, "sourceToolAssistantUUID": source_uuid,
        })

    def system(self, subtype: str, **fields: Any) -> str:
        return self.conversation({"type": "system", "subtype": subtype, **fields})

    def cost_state(self, cost_usd: float, tokens: dict[str, int]) -> None:
        """The line 2.1.330 writes when a session ends (/clear, /exit, a kill): the session's total so far."""
        if not self.path.exists():
            return  # nothing was written in this session
        self.write({"type": "cost-state", "sessionId": self.session_id, "totalCostUSD": round(cost_usd, 6),
                    "modelUsage": {self.model: {"inputTokens": tokens["input"], "outputTokens": tokens["output"],
                                                "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
                                                "costUSD": round(cost_usd, 6)}},
                    "hasUnknownModelCost": False})

    def last_cost(self) -> float:
        """The total of the newest cost-state line (a resumed session's cost continues from it)."""
        cost = 0.0
        try:
            raw = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return cost
        for text in raw:
            if '"cost-state"' in text:
                try:
                    cost = float(json.loads(text).get("totalCostUSD") or 0.0)
                except (ValueError, TypeError, AttributeError):
                    pass
        return cost


# --------------------------------------------------------------------------------------------------
# Terminal and screen


class Terminal:
    """The controlling terminal: raw mode, bracketed paste, whole-screen redraws; never raises on a dead tty."""

    def __init__(self, fd_in: int = 0, fd_out: int = 1, clear_redraw: bool = False) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.clear_redraw = clear_redraw
        self._saved: list[Any] | None = None
        self._rows_drawn = 0

    def enter(self) -> None:
        try:
            self._saved = termios.tcgetattr(self.fd_in)
            tty.setraw(self.fd_in, termios.TCSANOW)
        except termios.error:
            self._saved = None
        self.write("\x1b[?2004h")

    def restore(self) -> None:
        # Leave the cursor under the last drawn row so what follows (a shell prompt) does not overwrite it.
        self.write(f"\x1b[?2004l\x1b[{self._rows_drawn + 1};1H\x1b[?25h")
        if self._saved is not None:
            try:
                termios.tcsetattr(self.fd_in, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass
            self._saved = None

    def size(self) -> tuple[int, int]:
        try:
            s = os.get_terminal_size(self.fd_out)
            return max(s.columns, 20), max(s.lines, 8)
        except OSError:
            return 80, 24

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        try:
            while data:
                n = os.write(self.fd_out, data)
                data = data[n:]
        except OSError:
            pass  # the pane is gone (kill-session); the SIGHUP handler ends the program

    def draw(self, rows: list[str], cursor: tuple[int, int] | None) -> None:
        out = ["\x1b[?25l" + ("\x1b[H\x1b[2J" if self.clear_redraw else "")]
        for r, row in enumerate(rows):
            out.append(f"\x1b[{r + 1};1H{row}\x1b[K")
        out.append(f"\x1b[{len(rows) + 1};1H\x1b[J")
        self._rows_drawn = len(rows)
        if cursor is not None:
            out.append(f"\x1b[{cursor[0] + 1};{cursor[1] + 1}H\x1b[?25h")
        self.write("".join(out))


def _wrap_rows(text: str, width: int, first: str, cont: str, max_rows: int | None = None) -> list[str]:
    """Hard-wrap text to width with a prefix on the first row and an indent on the others."""
    rows: list[str] = []
    avail = max(width - len(first), 8)
    for line in text.split("\n"):
        if not line:
            rows.append("")
            continue
        while line:
            rows.append(line[:avail])
            line = line[avail:]
    if not rows:
        rows = [""]
    if max_rows is not None and len(rows) > max_rows:
        hidden = len(rows) - (max_rows - 1)
        rows = rows[:max_rows - 1] + [f"… +{hidden} lines"]
    return [(first if i == 0 else cont) + r for i, r in enumerate(rows)]


TRUST_DIALOG = (
    "Accessing workspace:",
    "",
    "{cwd}",
    "",
    "Quick safety check: Is this a project you created or one you trust? (Like your own code, a well-known "
    "open source project, or work from your team). If not, take a moment to review what's in this folder first.",
    "",
    "Claude Code'll be able to read, edit, and execute files here.",
    "",
    "Security guide",
)
TRUST_CHOICES = ("No, exit", "Yes, I trust this folder")
BYPASS_DIALOG = (
    "WARNING: Claude Code running in Bypass Permissions mode",
    "",
    "In Bypass Permissions mode, Claude Code will not ask for your approval before running potentially "
    "dangerous commands.",
    "This mode should only be used in a sandboxed container/VM that has restricted internet access and can "
    "easily be restored if damaged.",
    "",
    "By proceeding, you accept all responsibility for actions taken while running in Bypass Permissions mode.",
    "",
    "https://code.claude.com/docs/en/security",
)
BYPASS_CHOICES = ("No, exit", "Yes, I accept")
DIALOG_DEAF_S = 0.3  # the real dialogs drop keys for a moment after they are drawn (FACTS §3)


@dataclass
class Dialog:
    """A start-up dialog whose default choice, 0, exits."""

    lines: tuple[str, ...]
    choices: tuple[str, ...]
    indent: str
    shown_at: float
    answer: asyncio.Future[bool]
    selected: int = 0

    def rows(self, width: int) -> list[str]:
        rows = ["─" * width]
        for line in self.lines:
            rows += textwrap.wrap(line, max(width - len(self.indent) - 1, 20),
                                  initial_indent=self.indent, subsequent_indent=self.indent) or [""]
        rows.append("")
        for i, choice in enumerate(self.choices):
            rows.append(f"{self.indent}{'❯' if i == self.selected else ' '} {choice}")
        rows += ["", f"{self.indent}Enter to confirm · Esc to cancel"]
        return rows


# --------------------------------------------------------------------------------------------------
# The worker


@dataclass
class Item:
    """Something the worker does in its turn order: a prompt, a task notification, /compact or /clear."""

    kind: str  # prompt | synthetic | compact | clear | shell
    text: str
    prompt_id: str
    ups_task: asyncio.Task[None] | None = None
    user_line_written: bool = False
    bg: BgTask | None = None
    stopped: bool = False  # its Stop hooks have run: Esc no longer interrupts it


# The tool result the real Agent tool returns when it launches a background agent (2.1.330, verbatim).
AGENT_LAUNCHED_TEXT = (
    "Async agent launched successfully. (This tool result is internal metadata — never quote or paste any part "
    "of it, including the agentId below, into a user-facing reply.)\n"
    "agentId: {agent_id} (internal ID - do not mention to user. Use SendMessage with to: '{agent_id}', "
    "summary: '<5-10 word recap>' to continue this agent.)\n"
    "The agent is working in the background. You will be notified automatically when it completes. You know "
    "nothing about its results until that notification arrives — do not report, assume, or predict them; "
    "continue other work or respond to the user in the meantime.\n"
    "Do not duplicate this agent's work — avoid working with the same files or topics it is using.\n"
    "output_file: {output_file}\n"
    "Do NOT Read or tail this file via the shell tool — it is the full subagent JSONL transcript and reading it "
    "will overflow your context. If the user asks for progress, say the agent is still running; you'll get a "
    "completion notification."
)
TASK_NOTIFICATION_NOTE = (
    "A task-notification fires each time this agent stops with no live background children of its own. The user "
    "can send it another message and resume it, so the same task-id may notify more than once."
)


@dataclass
class BgTask:
    """A background Agent, launched by TOOL:Agent:<json> or BG:<seconds>."""

    agent_id: str
    tool_use_id: str
    prompt_id: str
    description: str
    prompt: str
    seconds: float
    transcript_path: str  # <session>/subagents/agent-<id>.jsonl
    output_file: str  # <tmp>/claude-<uid>/<enc cwd>/<session>/tasks/<id>.output, a link to transcript_path
    result: str
    agent_type: str = "general-purpose"
    status: str = "running"

    def as_payload(self) -> dict[str, str]:
        return {"id": self.agent_id, "type": "subagent", "status": self.status,
                "description": self.description, "agent_type": self.agent_type}


@dataclass
class HookJob:
    """One event's hooks; abandoned when the turn that fired it is interrupted before they start."""

    event: str
    payload: bytes
    commands: list[HookCommand]
    started: bool = False
    abandoned: bool = False


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, ""))
    except ValueError:
        return default


class SimWorker:
    """The running simulated TUI: input, screen, turns, hooks and transcript of one process."""

    def __init__(self, opts: Options, env: Mapping[str, str], hooks: HookTable, session_id: str,
                 source: str, skip_bypass_dialog: bool, status_line: str | None = None) -> None:
        self.opts = opts
        self.status_line = status_line  # the statusLine command of the settings, if any
        self.env = dict(env)
        self.hooks = hooks
        self.cwd = os.getcwd()
        self.pid = os.getpid()
        self.model = opts.model or DEFAULT_MODEL
        if opts.skip_permissions:
            self.permission_mode = "bypassPermissions"
        else:
            self.permission_mode = opts.permission_mode or "default"
        self.source = source
        self.skip_bypass_dialog = skip_bypass_dialog
        self.idle_s = _env_float(env, ENV_IDLE, 60.0)
        self.not_ready_s = _env_float(env, ENV_NOT_READY, 0.3)  # the real TUI took every Enter from +0.3 s (FACTS §4)
        self.startup_delay = _env_float(env, ENV_DELAY, DEFAULT_STARTUP_DELAY_S)
        self.turn_s = max(_env_float(env, ENV_TURN, DEFAULT_TURN_S), 0.0)
        self.agent_s = max(_env_float(env, ENV_AGENT, DEFAULT_AGENT_S), 0.0)
        self.lag_s = max(_env_float(env, ENV_LAG, DEFAULT_TRANSCRIPT_LAG_S), 0.0)
        self.retry_s = max(_env_float(env, ENV_RETRY, DEFAULT_RETRY_S), 0.0)
        self.version = env.get(ENV_RELEASE, "").strip() or SIM_CLAUDE_VERSION
        release = parse_release(self.version) or parse_release(SIM_CLAUDE_VERSION) or ()
        self.has_prompt_id = release >= PROMPT_ID_SINCE
        self.has_stop_failure = release >= STOP_FAILURE_SINCE
        self.has_last_message = release >= LAST_MESSAGE_SINCE
        self.has_api_requests = release > API_REQUEST_AFTER
        self.has_statusline_cost = release >= STATUSLINE_COST_SINCE
        trust = env.get(ENV_TRUST, "").strip().lower()
        self.trust_mode = "auto" if trust == "auto" else ("never" if trust in ("", "0", "no", "false") else "always")

        self.session_id = session_id
        self.transcript = self._new_transcript(session_id)
        self.prompt_id: str | None = None  # the latest one handed out, as Claude Code reports it
        # The session's cost and tokens (per session: /clear starts at 0, --resume continues the transcript's)
        self.session_cost = self.transcript.last_cost() if source == "resume" else 0.0
        self.session_tokens = {"input": 0, "output": 0}

        self.term = Terminal(clear_redraw=env.get(ENV_CLEAR_REDRAW, "") not in ("", "0"))
        self.parser = KeyParser()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.mode = "starting"  # starting | dialog | main | exiting
        self.dialog: Dialog | None = None
        self.box = InputBox()
        self.notice = ""
        self.history: list[str] = []
        self.queue: deque[Item] = deque()
        self.current: Item | None = None
        self.turn_task: asyncio.Task[None] | None = None
        self.runner_task: asyncio.Task[None] | None = None
        self.turn_started = 0.0
        self.ready_at = float("inf")
        self.swallowed_text: str | None = None
        self.ctrl_c_at: float | None = None
        self.esc_at: float | None = None
        self.bg_running: dict[str, BgTask] = {}
        self.session_started = False
        self.exiting = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.tool_pids: set[int] = set()
        self.hook_lock = asyncio.Lock()
        self.error: BaseException | None = None
        self._reader_on = False
        self._esc_handle: asyncio.TimerHandle | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Future[int] | None = None

    # ---- lifecycle

    def _new_transcript(self, session_id: str) -> Transcript:
        return Transcript(transcript_path_for(self.env, self.cwd, session_id), session_id, self.cwd,
                          self.permission_mode, self.model, self.version, self.has_prompt_id,
                          self.has_api_requests)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exit = loop.create_future()
        for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 0)):
            loop.add_signal_handler(sig, self.begin_shutdown, "other", code)
        loop.add_signal_handler(signal.SIGWINCH, self.redraw)
        self.term.enter()
        try:
            self.spawn(self.startup())
            return await self._exit
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        loop = self._loop
        if loop is not None:
            if self._reader_on:
                loop.remove_reader(self.term.fd_in)
                self._reader_on = False
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGWINCH):
                loop.remove_signal_handler(sig)
        for h in (self._esc_handle, self._idle_handle):
            if h is not None:
                h.cancel()
        self.kill_tools()
        for t in list(self.tasks):
            t.cancel()
        self.transcript.close()
        self.term.restore()

    def finish(self, code: int) -> None:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    def begin_shutdown(self, reason: str, code: int) -> None:
        """Exit like Claude Code: SessionEnd (once a session has started), then leave with code."""
        if self.exiting:
            return
        self.exiting = True
        self.mode = "exiting"
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        if self.turn_task is not None:
            self.turn_task.cancel()
        if self.runner_task is not None:
            self.runner_task.cancel()
        self.kill_tools()
        self.spawn(self._shutdown(reason, code))

    async def _shutdown(self, reason: str, code: int) -> None:
        try:
            if self.session_started:
                await self.fire("SessionEnd", {**self.common(), "hook_event_name": "SessionEnd",
                                               "reason": reason}, reason)
                # 2.1.330 writes two cost-state lines at /exit, one when it is killed
                for _ in range(2 if reason == "prompt_input_exit" else 1):
                    self.transcript.cost_state(self.session_cost, self.session_tokens)
        finally:
            self.finish(code)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # Tracked so they are not garbage-collected mid-flight and are cancelled on exit.
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug in the simulator: end the program visibly rather than hang a controller's wait.
            self.error = exc
            self.finish(70)

    def kill_tools(self) -> None:
        for pid in list(self.tool_pids):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    async def startup(self) -> None:
        if self.startup_delay > 0:
            await asyncio.sleep(self.startup_delay)
        if self.trust_mode == "always" or (self.trust_mode == "auto" and not workspace_trusted(self.env, self.cwd)):
            if not await self.ask(TRUST_DIALOG, TRUST_CHOICES, " "):
                self.finish(1)
                return
            # Like the real CLI, which remembers the answer for this directory (always: also when forced).
            record_trust(self.env, self.cwd)
        if self.opts.skip_permissions and not self.skip_bypass_dialog:
            if not await self.ask(BYPASS_DIALOG, BYPASS_CHOICES, "  "):
                self.finish(1)
                return
        self.mode = "main"
        self.dialog = None
        self.ensure_reader()
        self.redraw()
        # Set before firing so a signal during the SessionStart hooks still produces SessionEnd.
        self.session_started = True
        # The not-ready window counts from the moment SessionStart fires, not from when its hooks end: the
        # real TUI's readiness does not depend on how slow the hooks are.
        self.ready_at = time.monotonic() + self.not_ready_s
        await self.fire_session_start(self.source)
        self.schedule_status_line(0.0)
        exit_after = self.env.get(ENV_EXIT_AFTER_START, "")
        if exit_after:
            self.add_history("", f"csd-simworker: exiting after start with status {exit_after} ({ENV_EXIT_AFTER_START})")
            self.begin_shutdown("other", int(exit_after) if exit_after.lstrip("-").isdigit() else 1)
            return
        if self.opts.prompt:
            self.submit(self.opts.prompt)
            self.redraw()

    async def ask(self, lines: tuple[str, ...], choices: tuple[str, ...], indent: str) -> bool:
        assert self._loop is not None
        shown = tuple(line.format(cwd=self.cwd) for line in lines)
        self.dialog = Dialog(shown, choices, indent, time.monotonic(), self._loop.create_future())
        self.mode = "dialog"
        self.ensure_reader()
        self.redraw()
        return await self.dialog.answer

    # ---- input

    def ensure_reader(self) -> None:
        if not self._reader_on and self._loop is not None:
            self._loop.add_reader(self.term.fd_in, self.on_readable)
            self._reader_on = True

    def on_readable(self) -> None:
        assert self._loop is not None
        try:
            data = os.read(self.term.fd_in, 65536)
        except OSError:
            data = b""
        if not data:
            # The pty is gone (tmux kill-session); SIGHUP usually says so first.
            self._loop.remove_reader(self.term.fd_in)
            self._reader_on = False
            self.begin_shutdown("other", 129)
            return
        if self._esc_handle is not None:
            self._esc_handle.cancel()
            self._esc_handle = None
        for key in self.parser.feed(self.decoder.decode(data)):
            self.on_key(key)
        if self.parser.pending_escape:
            self._esc_handle = self._loop.call_later(0.03, self.on_escape_timeout)
        self.redraw()

    def on_escape_timeout(self) -> None:
        self._esc_handle = None
        for key in self.parser.flush_escape():
            self.on_key(key)
        self.redraw()

    def on_key(self, key: Key) -> None:
        if self.mode == "dialog" and self.dialog is not None:
            self.on_dialog_key(self.dialog, key)
        elif self.mode == "main":
            self.on_main_key(key)

    def on_dialog_key(self, dialog: Dialog, key: Key) -> None:
        if time.monotonic() - dialog.shown_at < DIALOG_DEAF_S or dialog.answer.done():
            return
        if key.kind == "up":
            dialog.selected = max(0, dialog.selected - 1)
        elif key.kind == "down":
            dialog.selected = min(len(dialog.choices) - 1, dialog.selected + 1)
        elif key.kind == "enter":
            dialog.answer.set_result(dialog.selected == len(dialog.choices) - 1)
        elif key.kind in ("esc", "ctrl_c"):
            dialog.answer.set_result(False)

    def on_main_key(self, key: Key) -> None:
        if key.kind != "ctrl_c":
            self.ctrl_c_at = None
        if key.kind != "esc":
            self.esc_at = None
        self.notice = ""
        box = self.box
        if key.kind in ("text", "paste"):
            box.insert(key.text, pasted=key.kind == "paste", rows=self.term.size()[1])
        elif key.kind == "newline":
            box.insert("\n")
        elif key.kind == "backspace":
            box.backspace()
        elif key.kind == "delete":
            box.delete()
        elif key.kind in ("left", "right", "ctrl_a", "ctrl_e"):
            box.move(key.kind)
        elif key.kind == "ctrl_u":
            box.kill_line_before()
        elif key.kind == "enter":
            self.on_enter()
        elif key.kind == "esc":
            if self.turn_running():
                self.interrupt()
            elif box.text and self.esc_at is not None and time.monotonic() - self.esc_at < 1.0:
                box.clear()  # like the real TUI, a double Esc clears the input box (bash mode stays)
                self.esc_at = None
            elif box.text:
                self.esc_at = time.monotonic()
                self.notice = "esc again to clear"
        elif key.kind == "ctrl_c":
            if self.turn_running():
                self.interrupt()
            elif self.ctrl_c_at is not None and time.monotonic() - self.ctrl_c_at < 2.0 and not box.text:
                self.begin_shutdown("prompt_input_exit", 0)
            else:
                # like the real TUI: clears a non-empty line and arms the exit all the same
                box.clear()
                self.ctrl_c_at = time.monotonic()
                self.notice = "Press Ctrl-C again to exit"

    def on_enter(self) -> None:
        if time.monotonic() < self.ready_at:
            return  # not ready yet: like the real TUI the Enter is lost and the text stays
        if self.box.enter_is_newline():
            return
        text = self.box.submitted()
        if not text.strip():
            return
        if "SWALLOW-ENTER" in text and self.swallowed_text != text:
            self.swallowed_text = text
            return
        self.swallowed_text = None
        shell = self.box.mode == "shell"
        self.box.clear()
        self.box.mode = "prompt"
        if shell:
            self.submit_shell(text)
        else:
            self.submit(text)

    def submit_shell(self, command: str) -> None:
        """Bash mode, as 2.1.330: the command runs, its input and output become user lines, and the model answers
        them in a turn that fires Stop but no UserPromptSubmit."""
        self.cancel_idle()
        prompt_id = str(uuid.uuid4())
        self.prompt_id = prompt_id
        self.queue.append(Item("shell", command, prompt_id))
        self.kick()

    def submit(self, text: str) -> None:
        self.cancel_idle()
        command = text.split(None, 1)
        word = command[0] if command else ""
        prompt_id = str(uuid.uuid4())
        self.prompt_id = prompt_id
        if word in ("/exit", "/quit"):
            self.begin_shutdown("prompt_input_exit", 0)
            return
        if word in ("/clear", "/compact"):
            args = command[1] if len(command) > 1 else ""
            self.queue.append(Item(word[1:], args, prompt_id))
            self.kick()
            return
        if _SLASH_WORD.fullmatch(word) and word not in SLASH_COMMANDS:
            # Observed: no hook fires, nothing reaches the transcript; a path such as /tmp/x is a prompt
            self.add_history("● ", f"Unknown command: {word}")
            if len(command) > 1:
                self.add_history("● ", f"Args from unknown skill: {command[1]}")
            return
        item = Item("prompt", text, prompt_id)
        if self.current is None and not self.queue:
            # Starts at once: its user line is on disk before UserPromptSubmit fires.
            self.transcript.user_prompt(text, prompt_id)
            item.user_line_written = True
        # UserPromptSubmit fires at submit time even while busy; the turn itself waits its turn.
        item.ups_task = self.spawn(self.fire("UserPromptSubmit", {
            **self.common(prompt_id), "permission_mode": self.permission_mode,
            "hook_event_name": "UserPromptSubmit", "prompt": text}))
        self.queue.append(item)
        self.kick()

    def interrupt(self) -> None:
        item = self.current
        if item is None or not self.turn_running() or item.kind not in ("prompt", "synthetic") or item.stopped:
            return
        assert self.turn_task is not None
        self.turn_task.cancel()
        self.kill_tools()
        if item.kind == "prompt":
            self.box.set(item.text + ("\n" + self.box.text if self.box.text else ""))

    def turn_running(self) -> bool:
        return self.turn_task is not None and not self.turn_task.done()

    # ---- turns

    def kick(self) -> None:
        if self.exiting:
            return
        if self.runner_task is None or self.runner_task.done():
            self.runner_task = self.spawn(self.run_queue())

    async def run_queue(self) -> None:
        while self.queue and not self.exiting:
            item = self.queue.popleft()
            self.current = item
            self.turn_started = time.monotonic()
            self.turn_task = asyncio.ensure_future(self.run_item(item))
            self.redraw()
            try:
                # asyncio.wait does not raise when the turn is interrupted (cancelled) by Esc.
                await asyncio.wait({self.turn_task})
            except asyncio.CancelledError:
                self.turn_task.cancel()
                raise
            finally:
                self.current = None
            task = self.turn_task
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
            if task.cancelled():
                self.history += ["  ⎿  Interrupted · What should Claude do instead?", ""]
            self.redraw()
            # Observed with 2.1.330: no idle_prompt Notification follows /clear (it does follow /compact).
            if not self.queue and not self.exiting and item.kind != "clear":
                self.arm_idle()

    async def run_item(self, item: Item) -> None:
        if item.kind == "compact":
            await self.do_compact(item)
        elif item.kind == "clear":
            await self.do_clear(item)
        elif item.kind == "shell":
            await self.do_shell(item)
        else:
            await self.do_turn(item)

    async def do_shell(self, item: Item) -> None:
        """A bash-mode command (2.1.330): ``<bash-input>`` and ``<bash-stdout>…<bash-stderr>`` user lines, then the
        model answers them; Stop fires, UserPromptSubmit does not."""
        self.add_history("! ", item.text)
        self.transcript.conversation({"promptId": item.prompt_id, "type": "user",
                                      "message": {"role": "user", "content": f"<bash-input>{item.text}</bash-input>"}})
        stdout, stderr, _, _ = await self.run_bash(item.text)
        output = f"<bash-stdout>{stdout}</bash-stdout><bash-stderr>{stderr}</bash-stderr>"
        self.add_history("  ⎿  ", stdout or stderr or "(No content)", max_rows=4)
        self.transcript.conversation({"promptId": item.prompt_id, "type": "user",
                                      "message": {"role": "user", "content": output}})
        await self.think()
        final = f"ECHO: {output}"
        self.transcript.assistant(_short_id("msg_sim"), _short_id("req_sim"), {"type": "text", "text": final}, 0,
                                  "end_turn", self.usage(final))
        self.add_history("● ", final)
        await self.fire("Stop", {
            **self.common(item.prompt_id), "permission_mode": self.permission_mode,
            "effort": {"level": "medium"}, "hook_event_name": "Stop", "stop_hook_active": False,
            "last_assistant_message": final, "background_tasks": self.running_tasks(), "session_crons": []})
        item.stopped = True
        self.schedule_status_line()

    async def think(self) -> None:
        """One API request and the model's time for its response (the real CLI waits for the API here)."""
        self.transcript.api_request()
        if self.turn_s > 0:
            await asyncio.sleep(self.turn_s)

    async def failed_attempts(self, count: int) -> None:
        """RETRY:<n>: n requests of the next API call that fail (an api-request line each, no response),
        each followed by the retry's wait; the call's last attempt is the next think()."""
        self.transcript.release()  # a request is being made: earlier lines are on disk by now
        for _ in range(count):
            self.transcript.api_request()
            await asyncio.sleep(self.retry_s)

    async def do_turn(self, item: Item) -> None:
        try:
            await self._do_turn(item)
        finally:
            # Whatever happened (Esc, exit), held transcript lines are not lost.
            self.transcript.release()

    async def _do_turn(self, item: Item) -> None:
        synthetic = item.kind == "synthetic"
        self.add_history("❯ ", item.text if not synthetic else item.text.split("\n")[0] + " …")
        if synthetic:
            self.prompt_id = item.prompt_id
            self.transcript.write({"type": "queue-operation", "operation": "dequeue", "timestamp": now_iso(),
                                   "sessionId": self.session_id})
            self.transcript.user_prompt(item.text, item.prompt_id, synthetic=True)
            await self.fire("UserPromptSubmit", {
                **self.common(item.prompt_id), "permission_mode": self.permission_mode,
                "hook_event_name": "UserPromptSubmit", "prompt": item.text})
        else:
            if not item.user_line_written:
                self.transcript.user_prompt(item.text, item.prompt_id)
                item.user_line_written = True
            if item.ups_task is not None:
                await asyncio.wait({item.ups_task})  # never cancels the hook itself

        final: str | None = None
        failed: str | None = None
        if synthetic and item.bg is not None:
            final = f'ECHO: task-notification: Agent "{item.bg.description}" finished'
        for d in ([] if synthetic else parse_directives(item.text)):
            if d.kind == "reply":
                final = d.arg
            elif d.kind == "sleep":
                self.transcript.release()  # a new response is being awaited: earlier lines are on disk by now
                await asyncio.sleep(d.seconds)
            elif d.kind == "hang":
                self.transcript.release()
                await asyncio.Event().wait()
            elif d.kind == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            elif d.kind == "tool" and d.name == "Agent":
                final = "DONE: " + (await self.agent_tool_call(item, d.arg))[:200]
            elif d.kind == "tool":
                final = "DONE: " + (await self.tool_call(item, d.name, d.arg))[:200]
            elif d.kind == "bg":
                final = "DONE: " + (await self.launch_bg(item, d.seconds))[:200]
            elif d.kind == "fail":
                failed = d.arg
                break
            elif d.kind == "retry":
                await self.failed_attempts(int(d.seconds))
        if failed is not None:
            await self.fail_turn(item, failed)
            return
        if final is None:
            final = f"ECHO: {item.text}"

        await self.think()
        # Observed with 2.1.330: the Stop hooks run before the turn's last tool result, its final text and
        # stop_hook_summary reach the transcript (30-70 ms later); a reader woken by Stop may not see them yet.
        self.transcript.hold()
        self.transcript.assistant(_short_id("msg_sim"), _short_id("req_sim"), {"type": "text", "text": final},
                                  0, "end_turn", self.usage(final))
        self.add_history("● ", final)
        stop_started = time.monotonic()
        await self.fire("Stop", {
            **self.common(item.prompt_id), "permission_mode": self.permission_mode,
            "effort": {"level": "medium"}, "hook_event_name": "Stop", "stop_hook_active": False,
            "last_assistant_message": final, "background_tasks": self.running_tasks(), "session_crons": []})
        item.stopped = True
        self.schedule_status_line()
        stop_ms = int((time.monotonic() - stop_started) * 1000)
        self.redraw()
        if self.lag_s > 0:
            await asyncio.sleep(self.lag_s)
        stop_commands = select_hooks(self.hooks, "Stop", None)
        self.transcript.system(
            "stop_hook_summary", hookCount=len(stop_commands),
            hookInfos=[{"command": c.command, "durationMs": stop_ms} for c in stop_commands],
            hookErrors=[], preventedContinuation=False, stopReason="", hasOutput=False, level="suggestion")
        extra: dict[str, Any] = {}
        if self.bg_running:
            extra["pendingBackgroundAgentCount"] = len(self.bg_running)
        duration = time.monotonic() - self.turn_started
        self.transcript.system("turn_duration", durationMs=int(duration * 1000),
                               messageCount=self.transcript.message_count, **extra, isMeta=False)
        self.transcript.release()
        self.history += [f"✻ Worked for {int(duration)}s", ""]

    async def fail_turn(self, item: Item, error: str) -> None:
        """End the turn as 2.1.330 does when its API calls fail: the synthetic assistant line, then
        StopFailure (never Stop)."""
        await self.think()
        text = API_ERROR_TEXT.get(error, f"API Error: {error} (simulated)")
        self.transcript.conversation({
            "message": {
                "id": _short_id("msg_sim"), "type": "message", "role": "assistant", "model": "<synthetic>",
                "content": [{"type": "text", "text": text}], "stop_reason": "stop_sequence", "stop_sequence": "",
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
            "type": "assistant", "isApiErrorMessage": True, "error": error,
        })
        self.add_history("● ", text)
        if self.has_stop_failure:
            await self.fire("StopFailure", {
                **self.common(item.prompt_id), "effort": {"level": "medium"}, "hook_event_name": "StopFailure",
                "error": error, "last_assistant_message": text})
        else:
            # before StopFailure (2.1.78) a failed turn fired Stop; its message was the error text
            await self.fire("Stop", {
                **self.common(item.prompt_id), "permission_mode": self.permission_mode,
                "hook_event_name": "Stop", "stop_hook_active": False, "last_assistant_message": text})
        item.stopped = True
        self.schedule_status_line()
        self.redraw()

    async def tool_call(self, item: Item, name: str, arg: str) -> str:
        """One scripted tool call: assistant lines, PreToolUse, the tool, result line, PostToolUse, PostToolBatch."""
        if name == "Bash":
            tool_input: Any = {"command": arg, "description": "simulated tool call"}
        else:
            try:
                tool_input = json.loads(arg) if arg else {}
            except ValueError:
                tool_input = {"input": arg}
        tool_use_id = _short_id("toolu_sim")
        use_uuid = await self.assistant_tool_use(name, tool_input, tool_use_id)
        tool_fields = {**self.common(item.prompt_id), "permission_mode": self.permission_mode,
                       "effort": {"level": "medium"}}
        await self.fire("PreToolUse", {**tool_fields, "hook_event_name": "PreToolUse", "tool_name": name,
                                       "tool_input": tool_input, "tool_use_id": tool_use_id}, name)
        started = time.monotonic()
        if name == "Bash":
            stdout, stderr, interrupted, code = await self.run_bash(arg)
            response: Any = {"stdout": stdout, "stderr": stderr, "interrupted": interrupted,
                             "isImage": False, "noOutputExpected": False}
            content: Any = "\n".join(s for s in (stdout, stderr) if s)
            is_error = code != 0
            output = stdout
            self.add_history("● ", f"Bash({arg})", gap=False)
            self.add_history("  ⎿  ", content or "(No content)", max_rows=4)
        else:
            response = content = output = "ok"
            is_error = False
            self.add_history("● ", f"{name}({arg[:60]})", gap=False)
            self.add_history("  ⎿  ", "ok")
        duration_ms = int((time.monotonic() - started) * 1000)
        self.transcript.tool_result(item.prompt_id, tool_use_id, content, is_error, response, use_uuid)
        await self.fire("PostToolUse", {**tool_fields, "hook_event_name": "PostToolUse", "tool_name": name,
                                        "tool_input": tool_input, "tool_response": response,
                                        "tool_use_id": tool_use_id, "duration_ms": duration_ms}, name)
        await self.fire_post_tool_batch(tool_fields, [{"tool_name": name, "tool_input": tool_input,
                                                       "tool_use_id": tool_use_id, "tool_response": content}])
        return output

    async def fire_post_tool_batch(self, tool_fields: dict[str, Any], calls: list[dict[str, Any]]) -> None:
        """PostToolBatch: after the PostToolUse hooks of one assistant message's tool calls (2.1.330)."""
        await self.fire("PostToolBatch", {**tool_fields, "hook_event_name": "PostToolBatch", "tool_calls": calls})

    async def assistant_tool_use(self, name: str, tool_input: Any, tool_use_id: str) -> str:
        """The two assistant lines of a tool-calling response (text block, tool_use block).

        They are on disk before PreToolUse fires; the tool result that follows is held (written with the next
        response's lines, or after the Stop hooks), as the real CLI's transcript lags behind its hooks.
        """
        self.transcript.release()
        await self.think()
        msg_id, req_id = _short_id("msg_sim"), _short_id("req_sim")
        usage = self.usage(f"Calling {name}. {json.dumps(tool_input)}")  # one response: its usage on both lines
        self.transcript.assistant(msg_id, req_id, {"type": "text", "text": f"Calling {name}."}, 0, "tool_use", usage)
        self.add_history("● ", f"Calling {name}.")
        use_uuid = self.transcript.assistant(msg_id, req_id, {"type": "tool_use", "id": tool_use_id, "name": name,
                                                              "input": tool_input}, 1, "tool_use", usage)
        self.transcript.hold()
        return use_uuid

    async def run_bash(self, command: str) -> tuple[str, str, bool, int]:
        env = {**self.env, "CLAUDECODE": "1"}
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, cwd=self.cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self.tool_pids.add(proc.pid)
        interrupted = False
        try:
            try:
                out, err = await asyncio.wait_for(proc.communicate(), BASH_TIMEOUT_S)
            except asyncio.TimeoutError:
                interrupted = True
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = await proc.communicate()
        except asyncio.CancelledError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            raise
        finally:
            self.tool_pids.discard(proc.pid)
        # The real Bash tool reports output without its trailing newline.
        return (out.decode("utf-8", "replace").rstrip("\n"), err.decode("utf-8", "replace").rstrip("\n"),
                interrupted, proc.returncode if proc.returncode is not None else -1)

    async def agent_tool_call(self, item: Item, arg: str) -> str:
        """TOOL:Agent:<json>: the real Agent tool, which 2.1.330 always runs in the background."""
        try:
            raw = json.loads(arg) if arg else {}
        except ValueError:
            raw = {"prompt": arg}
        if not isinstance(raw, dict):
            raw = {"prompt": str(raw)}
        prompt = str(raw.get("prompt", ""))
        m = re.search(r"(?<![\w-])SLEEP:(\d+(?:\.\d+)?)", prompt)
        seconds = float(m.group(1)) if m else self.agent_s
        return await self.launch_agent(item, raw, seconds, f"ECHO: {prompt}")

    async def launch_bg(self, item: Item, seconds: float) -> str:
        """BG:<seconds>: a background Agent working that long (0: done before the turn's Stop)."""
        tool_input = {"description": f"simulated background agent ({seconds:g}s)",
                      "prompt": f"Work in the background for {seconds:g}s.", "subagent_type": "general-purpose"}
        return await self.launch_agent(item, tool_input, seconds, f"Background work finished after {seconds:g}s.")

    async def launch_agent(self, item: Item, tool_input: dict[str, Any], seconds: float, result: str) -> str:
        """An Agent tool call that runs in the background, in the order 2.1.330 fires its hooks."""
        agent_id = "a" + uuid.uuid4().hex[:16]
        description = str(tool_input.get("description") or "agent")
        agent_type = str(tool_input.get("subagent_type") or "general-purpose")
        # The hooks get the input without run_in_background (PostToolBatch and the transcript keep it).
        hook_input = {k: v for k, v in tool_input.items() if k != "run_in_background"}
        tool_use_id = _short_id("toolu_sim")
        use_uuid = await self.assistant_tool_use("Agent", tool_input, tool_use_id)
        tool_fields = {**self.common(item.prompt_id), "permission_mode": self.permission_mode,
                       "effort": {"level": "medium"}}
        await self.fire("PreToolUse", {**tool_fields, "hook_event_name": "PreToolUse", "tool_name": "Agent",
                                       "tool_input": hook_input, "tool_use_id": tool_use_id}, "Agent")
        started = time.monotonic()
        task = BgTask(agent_id, tool_use_id, item.prompt_id, description, str(tool_input.get("prompt", "")),
                      seconds, str(self.subagent_path(agent_id)),
                      str(task_output_path(self.env, self.cwd, self.session_id, agent_id)), result, agent_type)
        self.bg_running[agent_id] = task
        self.start_subagent_transcript(task)
        await self.fire("SubagentStart", {**self.common(item.prompt_id), "agent_id": agent_id,
                                          "agent_type": agent_type, "hook_event_name": "SubagentStart"}, agent_type)
        response = {"isAsync": True, "status": "async_launched", "agentId": agent_id, "description": description,
                    "resolvedModel": self.model, "prompt": task.prompt, "outputFile": task.output_file,
                    "canReadOutputFile": True, "canContinueAgent": True}
        text = AGENT_LAUNCHED_TEXT.format(agent_id=agent_id, output_file=task.output_file)
        content = [{"type": "text", "text": text}]
        self.transcript.tool_result(item.prompt_id, tool_use_id, content, False, response, use_uuid)
        self.add_history("● ", f"Agent({description})", gap=False)
        self.add_history("  ⎿  ", "Backgrounded agent (↓ to manage · ctrl+o to expand)")
        await self.fire("PostToolUse", {**tool_fields, "hook_event_name": "PostToolUse", "tool_name": "Agent",
                                        "tool_input": hook_input, "tool_response": response,
                                        "tool_use_id": tool_use_id,
                                        "duration_ms": int((time.monotonic() - started) * 1000)}, "Agent")
        await self.fire_post_tool_batch(tool_fields, [{"tool_name": "Agent", "tool_input": tool_input,
                                                       "tool_use_id": tool_use_id, "tool_response": content}])
        if seconds <= 0:
            # A sub-agent that answers at once: its SubagentStop comes before this turn's Stop, which then lists
            # no background task, and its <task-notification> turn follows that Stop.
            await self.finish_bg(task)
        else:
            self.spawn(self.finish_bg(task))
        return text

    def subagent_path(self, agent_id: str) -> Path:
        return self.transcript.path.parent / self.session_id / "subagents" / f"agent-{agent_id}.jsonl"

    def running_tasks(self) -> list[dict[str, str]]:
        return [t.as_payload() for t in self.bg_running.values()]

    async def finish_bg(self, task: BgTask) -> None:
        started = time.monotonic()
        if task.seconds > 0:
            await asyncio.sleep(task.seconds)
        if self.exiting:
            return
        self.finish_subagent_transcript(task)
        # Observed: the finishing agent is still listed as running in its own SubagentStop.
        await self.fire("SubagentStop", {
            **self.common(task.prompt_id), "permission_mode": self.permission_mode, "agent_id": task.agent_id,
            "agent_type": task.agent_type, "effort": {"level": "medium"}, "hook_event_name": "SubagentStop",
            "stop_hook_active": False, "agent_transcript_path": task.transcript_path,
            "last_assistant_message": task.result, "background_tasks": self.running_tasks(), "session_crons": []},
            task.agent_type)
        task.status = "completed"
        self.bg_running.pop(task.agent_id, None)
        duration_ms = int((time.monotonic() - started) * 1000)
        notification = (
            "<task-notification>\n"
            f"<task-id>{task.agent_id}</task-id>\n"
            f"<tool-use-id>{task.tool_use_id}</tool-use-id>\n"
            f"<output-file>{task.output_file}</output-file>\n"
            "<status>completed</status>\n"
            f'<summary>Agent "{task.description}" finished</summary>\n'
            f"<note>{TASK_NOTIFICATION_NOTE}</note>\n"
            f"<result>{task.result}</result>\n"
            f"<usage><subagent_tokens>2132</subagent_tokens><tool_uses>0</tool_uses>"
            f"<duration_ms>{duration_ms}</duration_ms></usage>\n"
            "</task-notification>")
        self.transcript.write({"type": "queue-operation", "operation": "enqueue", "timestamp": now_iso(),
                               "sessionId": self.session_id, "content": notification})
        self.cancel_idle()
        self.add_history("● ", f'Agent "{task.description}" finished · {int(task.seconds)}s')
        self.queue.append(Item("synthetic", notification, str(uuid.uuid4()), bg=task))
        self.kick()
        self.redraw()

    def _subagent_line(self, task: BgTask, parent: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return {"parentUuid": parent, "isSidechain": True, "agentId": task.agent_id, **body,
                "uuid": str(uuid.uuid4()), "timestamp": now_iso(), "userType": "external", "entrypoint": "cli",
                "cwd": self.cwd, "sessionId": self.session_id, "version": SIM_CLAUDE_VERSION}

    def start_subagent_transcript(self, task: BgTask) -> None:
        """The sub-agent's transcript (its prompt), its meta file, and the output file linking to it."""
        path = Path(task.transcript_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            line = self._subagent_line(task, None, {"type": "user",
                                                    "message": {"role": "user", "content": task.prompt}})
            path.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
            path.with_name(path.stem + ".meta.json").write_text(
                json.dumps({"agentType": task.agent_type, "description": task.description}), encoding="utf-8")
        except OSError:
            return
        output = Path(task.output_file)
        base = Path(self.env.get("CLAUDE_CODE_TMPDIR") or "/tmp")
        try:
            base.mkdir(parents=True, exist_ok=True)
            folder = base
            for part in output.parent.relative_to(base).parts:  # claude-<uid>/... private, like the real CLI's
                folder = folder / part
                folder.mkdir(mode=0o700, exist_ok=True)
            output.symlink_to(path)
        except (OSError, ValueError):
            pass

    def finish_subagent_transcript(self, task: BgTask) -> None:
        path = Path(task.transcript_path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            parent = json.loads(lines[-1]).get("uuid") if lines else None
            line = self._subagent_line(task, parent, {"type": "assistant", "message": {
                "id": _short_id("msg_sim"), "type": "message", "role": "assistant", "model": self.model,
                "content": [{"type": "text", "text": task.result}], "stop_reason": "end_turn",
                "stop_sequence": None}})
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        except (OSError, ValueError, AttributeError):
            pass

    async def do_compact(self, item: Item) -> None:
        self.add_history("❯ ", "/compact" + (f" {item.text}" if item.text else ""))
        await self.fire("PreCompact", {**self.common(item.prompt_id), "hook_event_name": "PreCompact",
                                       "trigger": "manual", "custom_instructions": item.text or None}, "manual")
        agent_id = "a" + uuid.uuid4().hex[:16]
        summary = "<summary>\nSummary of the conversation so far (simulated compaction).\n</summary>"
        await self.fire("SubagentStop", {
            **self.common(item.prompt_id), "permission_mode": self.permission_mode, "agent_id": agent_id,
            "agent_type": "", "effort": {"level": "medium"}, "hook_event_name": "SubagentStop",
            "stop_hook_active": False, "agent_transcript_path": str(self.subagent_path(agent_id)),
            "last_assistant_message": summary, "background_tasks": self.running_tasks(), "session_crons": []}, "")
        previous = self.transcript.parent_uuid
        self.transcript.conversation({"type": "system", "subtype": "compact_boundary",
                                      "content": "Conversation compacted", "level": "info",
                                      "logicalParentUuid": previous,
                                      "compactMetadata": {"trigger": "manual"}}, chained=False)
        self.transcript.conversation({
            "promptId": item.prompt_id, "type": "user", "isCompactSummary": True,
            "message": {"role": "user", "content": "This session is being continued from a previous conversation "
                        "that ran out of context. The summary below covers the earlier portion of the "
                        f"conversation.\n{summary}"}})
        self.transcript.conversation({
            "promptId": item.prompt_id, "type": "user",
            "message": {"role": "user", "content": "<command-name>/compact</command-name>\n"
                        "            <command-message>compact</command-message>\n"
                        f"            <command-args>{item.text}</command-args>"}})
        await self.fire_session_start("compact", item.prompt_id)
        await self.fire("PostCompact", {**self.common(item.prompt_id), "hook_event_name": "PostCompact",
                                        "trigger": "manual", "compact_summary": summary}, "manual")
        self.history = ["✻ Conversation compacted (ctrl+o for history)", ""]
        self.session_cost += COMPACT_COST_USD  # /compact keeps the session and adds the compaction's cost
        self.schedule_status_line(0.0)

    async def do_clear(self, item: Item) -> None:
        await self.fire("SessionEnd", {**self.common(item.prompt_id), "hook_event_name": "SessionEnd",
                                       "reason": "clear"}, "clear")
        self.transcript.cost_state(self.session_cost, self.session_tokens)  # closes the old session's transcript
        self.transcript.close()
        self.session_id = str(uuid.uuid4())
        self.transcript = self._new_transcript(self.session_id)
        self.session_cost, self.session_tokens = 0.0, {"input": 0, "output": 0}
        self.history = []
        # Observed with 2.1.330: the new session's SessionStart has neither prompt_id nor model.
        self.prompt_id = None
        await self.fire("SessionStart", {**self.common(), "hook_event_name": "SessionStart", "source": "clear"},
                        "clear")
        self.schedule_status_line(0.0)

    # ---- cost and the status line

    def usage(self, text: str) -> dict[str, int]:
        """Plausible usage of one response (the context grows with the conversation); its cost, priced like
        the mock model, is added to the session's total."""
        usage = {"input_tokens": 2900 + 40 * self.transcript.message_count, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "output_tokens": max(len(text) // 4, 1)}
        self.session_tokens["input"] += usage["input_tokens"]
        self.session_tokens["output"] += usage["output_tokens"]
        self.session_cost += usage["input_tokens"] * PRICE_INPUT_USD + usage["output_tokens"] * PRICE_OUTPUT_USD
        return usage

    def status_line_payload(self) -> dict[str, Any]:
        """What 2.1.330 gives the statusLine command (samples/statusline-input.json, its main fields)."""
        payload: dict[str, Any] = {"session_id": self.session_id, "transcript_path": str(self.transcript.path),
                                   "cwd": self.cwd}
        if self.prompt_id and self.has_prompt_id:
            payload["prompt_id"] = self.prompt_id
        payload.update({
            "effort": {"level": "medium"}, "model": {"id": self.model, "display_name": model_display_name(self.model)},
            "workspace": {"current_dir": self.cwd, "project_dir": self.cwd, "added_dirs": []},
            "version": self.version, "output_style": {"name": "default"},
        })
        if self.has_statusline_cost:
            payload["cost"] = {"total_cost_usd": round(self.session_cost, 6), "total_duration_ms": 0,
                               "total_api_duration_ms": 0, "total_lines_added": 0, "total_lines_removed": 0}
        payload.update({
            "context_window": {"total_input_tokens": self.session_tokens["input"],
                               "total_output_tokens": self.session_tokens["output"], "context_window_size": 1000000},
            "exceeds_200k_tokens": False,
        })
        return payload

    def schedule_status_line(self, delay: float = STATUS_LINE_DELAY_S) -> None:
        """Run the statusLine command (if the settings have one) after ``delay``, with the payload of then."""
        if self.status_line and not self.exiting:
            self.spawn(self._status_line(delay))

    async def _status_line(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if self.status_line and not self.exiting:
            payload = json.dumps(self.status_line_payload(), ensure_ascii=False).encode("utf-8")
            await self._run_command(self.status_line, {**self.env, "CLAUDECODE": "1"}, payload, 5.0)

    async def fire_session_start(self, source: str, prompt_id: str | None = None) -> None:
        payload: dict[str, Any] = {**self.common(prompt_id), "hook_event_name": "SessionStart", "source": source}
        if source == "resume":
            # Observed with 2.1.330: a resumed session reports its context and cache state instead of the model.
            payload.update(self.resume_fields())
        else:
            payload["model"] = self.model
        await self.fire("SessionStart", payload, source)

    def resume_fields(self) -> dict[str, Any]:
        """Plausible values for SessionStart(resume), derived from the resumed transcript."""
        chars = 0
        last_response: float | None = None
        try:
            raw = self.transcript.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            raw = []
        for text in raw:
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if isinstance(obj.get("message"), dict):
                chars += len(json.dumps(obj["message"].get("content"), ensure_ascii=False))
            if obj.get("type") == "assistant" and isinstance(obj.get("timestamp"), str):
                try:
                    last_response = datetime.fromisoformat(obj["timestamp"].replace("Z", "+00:00")).timestamp()
                except ValueError:
                    pass
        if last_response is None:
            try:
                last_response = self.transcript.path.stat().st_mtime
            except OSError:
                last_response = time.time()
        since = max(int(time.time() - last_response), 0)
        tokens = 3600 + chars // 4  # the system prompt and tools, plus the conversation
        return {"seconds_since_last_response": since, "context_tokens": tokens,
                "prompt_cache_likely_expired": since >= 300,
                "estimated_cache_write_usd": round(tokens * 5e-6, 4)}

    # ---- idle notification

    def arm_idle(self) -> None:
        self.cancel_idle()
        if self._loop is not None and self.idle_s > 0:
            self._idle_handle = self._loop.call_later(self.idle_s, self.on_idle)

    def cancel_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def on_idle(self) -> None:
        self._idle_handle = None
        if self.exiting or self.current is not None or self.queue:
            return
        self.spawn(self.fire("Notification", {**self.common(), "hook_event_name": "Notification",
                                              "message": "Claude is waiting for your input",
                                              "notification_type": "idle_prompt"}, "idle_prompt"))

    # ---- hooks

    def common(self, prompt_id: str | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"session_id": self.session_id, "transcript_path": str(self.transcript.path),
                                  "cwd": self.cwd}
        pid = prompt_id or self.prompt_id
        if pid and self.has_prompt_id:
            fields["prompt_id"] = pid
        return fields

    async def fire(self, event: str, payload: dict[str, Any], match_value: str | None = None) -> None:
        """Run every hook of an event concurrently and wait for all; events never overlap."""
        commands = select_hooks(self.hooks, event, match_value)
        if not self.has_last_message:
            payload.pop("last_assistant_message", None)  # arrived in 2.1.47
        job = HookJob(event, json.dumps(payload, ensure_ascii=False).encode("utf-8"), commands)
        task = self.spawn(self._run_job(job))
        try:
            # Shielded: a hook that has started is not killed by an interrupt, like the real CLI.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not job.started:
                job.abandoned = True
            raise

    async def _run_job(self, job: HookJob) -> None:
        async with self.hook_lock:
            if job.abandoned:
                return
            job.started = True
            if job.commands:
                await asyncio.gather(*(self._run_hook(c, job.payload, job.event) for c in job.commands))

    async def _run_hook(self, hook: HookCommand, payload: bytes, event: str = "") -> None:
        env = {**self.env, "CLAUDE_PROJECT_DIR": self.cwd, "CLAUDE_CODE_SESSION_ID": self.session_id,
               "CLAUDE_PID": str(self.pid), "CLAUDECODE": "1"}
        command = hook.command
        if hook.plugin_root is not None:
            env["CLAUDE_PLUGIN_ROOT"] = hook.plugin_root
            command = command.replace("${CLAUDE_PLUGIN_ROOT}", hook.plugin_root)
        await self._run_command(command, env, payload, hook.timeout, event)

    async def _run_command(self, command: str, env: dict[str, str], payload: bytes, timeout: float,
                           event: str | None = None) -> None:
        """Run a hook (of ``event``) or the statusLine command (``event`` None: its failure is not shown)
        with ``payload`` on stdin; kill it after ``timeout``."""
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh", "-c", command, cwd=self.cwd, env=env, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError:
            return

        async def feed_and_wait() -> None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(payload)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass  # a hook that does not read its stdin is fine
            finally:
                proc.stdin.close()
            assert proc.stderr is not None
            err = await proc.stderr.read()
            await proc.wait()
            if proc.returncode not in (0, 2) and event is not None:
                # like Claude Code 2.1.330: a failed hook (exit 1) is shown under the prompt, with the first
                # line of its stderr, and the turn goes on (tests/e2e/test_full_disk_real.py)
                line = (err.decode(errors="replace").splitlines() or [""])[0]
                self.history += [f"  ⎿  {event} hook failed", f"     {line}"]
                self.redraw()

        try:
            await asyncio.wait_for(feed_and_wait(), timeout)
        except asyncio.TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            await proc.wait()

    # ---- screen

    def add_history(self, prefix: str, text: str, max_rows: int = 12, gap: bool = True) -> None:
        width, _ = self.term.size()
        self.history += _wrap_rows(text[:4000], width, prefix, " " * len(prefix), max_rows) + ([""] if gap else [])
        del self.history[:-500]
        self.redraw()

    def header(self) -> list[str]:
        return ["", f" ▐▛███▜▌   Claude Code v{self.version} (simulated)",
                f"▝▜█████▛▘  {model_display_name(self.model)} · API Usage Billing", f"  ▘▘ ▝▝    {self.cwd}", ""]

    def busy(self) -> bool:
        return self.current is not None and not self.current.stopped

    def redraw(self) -> None:
        width, height = self.term.size()
        if self.mode == "dialog" and self.dialog is not None:
            self.term.draw([r[:width] for r in self.dialog.rows(width)][:height], None)
            return
        if self.mode != "main":
            return
        bottom: list[str] = []
        queued = False
        for item in self.queue:
            if item.kind in ("prompt", "compact", "clear"):
                queued = True
                shown = item.text if item.kind == "prompt" else f"/{item.kind} {item.text}".rstrip()
                bottom += _wrap_rows(shown, width, "❯ ", "  ", 2) + ["  ⎿  Queued · ctrl+x ctrl+s to send now", ""]
        busy = self.busy()
        if busy:
            bottom += ["✻ Working…", ""]
        elif self.bg_running:
            n = len(self.bg_running)
            bottom += [f"✻ Waiting for {n} background agent{'s' if n != 1 else ''} to finish", ""]
        rule = "─" * width
        # The real input line is ❯ + a no-break space (U+00A0); an empty box with queued prompts shows a hint.
        shown_box = self.box.text if self.box.text or not queued else "Press up to edit queued messages"
        shell = self.box.mode == "shell"
        box_rows = _wrap_rows(shown_box, width, "!\u00a0" if shell else "❯\u00a0", "  ", 8)
        bottom += [rule, *box_rows, rule]
        if shell:
            footer = "  ! for shell mode"
        elif self.permission_mode == "bypassPermissions":
            footer = "  ⏵⏵ bypass permissions on (shift+tab to cycle)"
        else:
            footer = "  ? for shortcuts"
        if busy:
            footer += " · esc to interrupt"
        if self.bg_running:
            footer += " · /tasks to see subagents"
        bottom.append(footer)
        if self.notice:
            bottom.append(f"  {self.notice}")
        room = max(height - len(bottom), 0)
        top = (self.header() + self.history)[-room:] if room else []
        rows = [r[:width] for r in (top + bottom)][-height:]
        # The cursor sits after the last input row, which is followed by a rule, the footer and the notice.
        cursor_row = max(len(rows) - 3 - (1 if self.notice else 0), 0)
        cursor_col = len(rows[cursor_row]) if shown_box == self.box.text else 2  # at the start of a hint
        self.term.draw(rows, (cursor_row, min(cursor_col, width - 1)))


# --------------------------------------------------------------------------------------------------
# Entry point


def _latest_session(env: Mapping[str, str], cwd: str) -> str | None:
    folder = transcript_path_for(env, cwd, "x").parent
    try:
        candidates = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return None
    return candidates[-1].stem if candidates else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ
    try:
        opts = parse_args(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if opts.show_version:
        print(f"{env.get(ENV_RELEASE, '').strip() or SIM_CLAUDE_VERSION} (Claude Code simulated)")
        return 0
    if opts.show_help:
        print(HELP, end="")
        return 0
    if opts.skip_permissions and os.geteuid() == 0 and env.get("IS_SANDBOX", "") not in ("1", "true"):
        print(ROOT_REFUSAL, file=sys.stderr)
        return 1
    if env.get(ENV_EXIT_AT_START):
        try:
            code = int(env[ENV_EXIT_AT_START])
        except ValueError:
            code = 1
        print(f"csd-simworker: exiting at start with status {code} ({ENV_EXIT_AT_START})", file=sys.stderr)
        return code
    if opts.print_mode:
        print("Error: --print is not simulated by csd-simworker", file=sys.stderr)
        return 1

    tables = []
    status_line: str | None = None
    skip_bypass = False
    user_settings = claude_config_dir(env) / "settings.json"
    try:
        # Read-only: the real CLI persists the bypass answer here; the simulator honours it but never writes it.
        skip_bypass = json.loads(user_settings.read_text(encoding="utf-8")).get(
            "skipDangerousModePermissionPrompt") is True
    except (OSError, ValueError, AttributeError):
        pass
    for arg in opts.settings:
        try:
            settings = load_settings_arg(arg)
        except (OSError, ValueError) as e:
            print(f"Error: Invalid settings {arg!r}: {e}", file=sys.stderr)
            return 1
        skip_bypass = skip_bypass or settings.get("skipDangerousModePermissionPrompt") is True
        tables.append(hooks_from_config(settings))
        line = settings.get("statusLine")
        if isinstance(line, dict) and line.get("type") == "command" and isinstance(line.get("command"), str):
            status_line = line["command"]  # the last settings that set one win
    for plugin_dir in opts.plugin_dirs:
        root = os.path.abspath(plugin_dir)
        try:
            config = json.loads((Path(root) / "hooks" / "hooks.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            print(f"Error: Invalid plugin hooks in {root}: {e}", file=sys.stderr)
            return 1
        tables.append(hooks_from_config(config, plugin_root=root))

    cwd = os.getcwd()
    if opts.session_id and (opts.resume or opts.continue_last):
        print("Error: --session-id can only be used with --continue or --resume if --fork-session is also "
              "specified.", file=sys.stderr)
        return 1
    if opts.continue_last and not opts.resume:
        opts.resume = _latest_session(env, cwd)
        if opts.resume is None:
            print("No conversation found to continue", file=sys.stderr)
            return 1
    if opts.resume:
        if not is_uuid(opts.resume) or not transcript_path_for(env, cwd, opts.resume).exists():
            print(f"No conversation found with session ID: {opts.resume}", file=sys.stderr)
            return 1
        session_id, source = opts.resume, "resume"
    elif opts.session_id:
        if not is_uuid(opts.session_id):
            print("Error: Invalid session ID. Must be a valid UUID.", file=sys.stderr)
            return 1
        if transcript_path_for(env, cwd, opts.session_id).exists():
            print(f"Error: Session ID {opts.session_id} is already in use.", file=sys.stderr)
            return 1
        session_id, source = opts.session_id, "startup"
    else:
        session_id, source = str(uuid.uuid4()), "startup"

    if not os.isatty(0):
        print("Error: Raw mode is not supported on the current process.stdin (csd-simworker needs a terminal, "
              "e.g. a tmux pane).", file=sys.stderr)
        return 1

    worker = SimWorker(opts, env, merge_hooks(tables), session_id, source, skip_bypass, status_line)
    if source == "resume":
        for line in worker.transcript.load_existing()[-20:]:
            msg = line.get("message") or {}
            content = msg.get("content")
            if line.get("type") == "user" and isinstance(content, str) and not line.get("isMeta"):
                worker.add_history("❯ ", content, max_rows=3)
            elif line.get("type") == "assistant" and isinstance(content, list):
                for block in content:
                    if isinstance(block, dict) and block.get("type") == "text":
                        worker.add_history("● ", str(block.get("text", "")), max_rows=3)
    code = asyncio.run(worker.run())
    if worker.error is not None:
        import traceback

        traceback.print_exception(worker.error, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
