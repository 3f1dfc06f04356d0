"""The ``csd-simworker`` program: its command line checked as the real CLI checks it, settings and plugin hooks
loaded, the session chosen (new, ``--session-id``, ``--resume``, ``--continue``), then the worker run."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csd.sim.files import latest_session, load_settings_arg, transcript_path_for, user_skips_bypass_dialog
from csd.sim.hooks import HookTable, hooks_from_config, merge_hooks
from csd.sim.options import (ENV_EXIT_AT_START, ENV_RELEASE, HELP, ROOT_REFUSAL, SIM_CLAUDE_VERSION, Options,
                             SimUsageError, parse_args)
from csd.sim.worker import SimWorker


class Refusal(Exception):
    """What the real CLI would print before exiting with status 1 (the message is its stderr line)."""


@dataclass
class Settings:
    """What the settings files and plugins configure: hooks, the statusLine command, the bypass answer."""

    hooks: list[HookTable] = field(default_factory=list)
    status_line: str | None = None
    skip_bypass: bool = False


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def load_settings(opts: Options, env: Mapping[str, str]) -> Settings:
    """The --settings values, then each --plugin-dir's hooks/hooks.json; Refusal for one that does not parse."""
    found = Settings(skip_bypass=user_skips_bypass_dialog(env))
    for arg in opts.settings:
        try:
            settings = load_settings_arg(arg)
        except (OSError, ValueError) as e:
            raise Refusal(f"Error: Invalid settings {arg!r}: {e}") from e
        found.skip_bypass = found.skip_bypass or settings.get("skipDangerousModePermissionPrompt") is True
        found.hooks.append(hooks_from_config(settings))
        line = settings.get("statusLine")
        if isinstance(line, dict) and line.get("type") == "command" and isinstance(line.get("command"), str):
            found.status_line = line["command"]  # the last settings that set one win
    for plugin_dir in opts.plugin_dirs:
        root = os.path.abspath(plugin_dir)
        try:
            config = json.loads((Path(root) / "hooks" / "hooks.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise Refusal(f"Error: Invalid plugin hooks in {root}: {e}") from e
        found.hooks.append(hooks_from_config(config, plugin_root=root))
    return found


def choose_session(opts: Options, env: Mapping[str, str], cwd: str) -> tuple[str, str]:
    """The session to run and SessionStart's source (startup or resume); Refusal as the real CLI refuses."""
    if opts.session_id and (opts.resume or opts.continue_last):
        raise Refusal("Error: --session-id can only be used with --continue or --resume if --fork-session is also "
                      "specified.")
    if opts.continue_last and not opts.resume:
        opts.resume = latest_session(env, cwd)
        if opts.resume is None:
            raise Refusal("No conversation found to continue")
    if opts.resume:
        if not is_uuid(opts.resume) or not transcript_path_for(env, cwd, opts.resume).exists():
            raise Refusal(f"No conversation found with session ID: {opts.resume}")
        return opts.resume, "resume"
    if opts.session_id:
        if not is_uuid(opts.session_id):
            raise Refusal("Error: Invalid session ID. Must be a valid UUID.")
        if transcript_path_for(env, cwd, opts.session_id).exists():
            raise Refusal(f"Error: Session ID {opts.session_id} is already in use.")
        return opts.session_id, "startup"
    return str(uuid.uuid4()), "startup"


def show_resumed(worker: SimWorker) -> None:
    """The end of a resumed conversation, on screen as the real CLI shows it."""
    for line in worker.session.transcript.load_existing()[-20:]:
        msg: Any = line.get("message") or {}
        content = msg.get("content")
        if line.get("type") == "user" and isinstance(content, str) and not line.get("isMeta"):
            worker.screen.add_history("❯ ", content, max_rows=3)
        elif line.get("type") == "assistant" and isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text":
                    worker.screen.add_history("● ", str(block.get("text", "")), max_rows=3)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ
    try:
        opts = parse_args(args)
    except SimUsageError as e:
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
    try:
        settings = load_settings(opts, env)
        session_id, source = choose_session(opts, env, os.getcwd())
    except Refusal as e:
        print(e, file=sys.stderr)
        return 1
    if not os.isatty(0):
        print("Error: Raw mode is not supported on the current process.stdin (csd-simworker needs a terminal, "
              "e.g. a tmux pane).", file=sys.stderr)
        return 1
    worker = SimWorker(opts, env, merge_hooks(settings.hooks), session_id, source, settings.skip_bypass,
                       settings.status_line)
    if source == "resume":
        show_resumed(worker)
    code = asyncio.run(worker.run())
    if worker.error is not None:
        traceback.print_exception(worker.error, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
