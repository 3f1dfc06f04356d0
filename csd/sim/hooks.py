"""Running what Claude Code runs: the configured hooks (their table from settings and plugins, matchers, one
event at a time, payload on stdin) and the settings' statusLine command."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from csd.sim.runtime import Runtime
from csd.sim.session import Session

HOOK_TIMEOUT_S = 60.0
STATUS_LINE_TIMEOUT_S = 5.0
STATUS_LINE_DELAY_S = 0.3  # 2.1.330 runs the statusLine command ~0.3 s after a turn's Stop/StopFailure

HOOK_EVENTS = (
    "SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolBatch", "Notification",
    "Stop", "StopFailure", "SubagentStart", "SubagentStop", "PreCompact", "PostCompact", "SessionEnd",
)


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
            commands = tuple(c for c in (_hook_command(h, plugin_root) for h in group["hooks"]) if c is not None)
            matcher = group.get("matcher")
            table.setdefault(event, []).append(HookGroup(matcher if isinstance(matcher, str) else None, commands))
    return table


def _hook_command(h: Any, plugin_root: str | None) -> HookCommand | None:
    if not (isinstance(h, dict) and h.get("type", "command") == "command" and isinstance(h.get("command"), str)):
        return None
    timeout = h.get("timeout")
    return HookCommand(h["command"],
                       float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else HOOK_TIMEOUT_S,
                       plugin_root)


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


async def run_command(command: str, cwd: str, env: Mapping[str, str], payload: bytes,
                      timeout: float) -> tuple[int | None, bytes]:
    """Run ``command`` with ``sh -c`` and ``payload`` on stdin, in its own process group, killed after
    ``timeout``; its exit status (None: it could not start, or was killed) and its stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError:
        return None, b""
    try:
        async with asyncio.timeout(timeout):
            return await _feed_and_wait(proc, payload)
    except TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        await proc.wait()
        return None, b""


async def _feed_and_wait(proc: asyncio.subprocess.Process, payload: bytes) -> tuple[int | None, bytes]:
    assert proc.stdin is not None and proc.stderr is not None
    try:
        proc.stdin.write(payload)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # a hook that does not read its stdin is fine
    finally:
        proc.stdin.close()
    err = await proc.stderr.read()
    await proc.wait()
    return proc.returncode, err


@dataclass
class HookJob:
    """One event's hooks; abandoned when the turn that fired it is interrupted before they start."""

    event: str
    payload: bytes
    commands: list[HookCommand]
    started: bool = False
    abandoned: bool = False


class HookRunner:
    """Fires hook events as Claude Code does: every hook of an event concurrently, events one at a time."""

    def __init__(self, table: HookTable, session: Session, env: Mapping[str, str], runtime: Runtime,
                 on_failure: Callable[[str, str], None]) -> None:
        self.table = table
        self.session = session
        self.env = env
        self.runtime = runtime
        self.on_failure = on_failure  # (event, first line of stderr): a failed hook, shown under the prompt
        self.pid = os.getpid()
        self._lock = asyncio.Lock()

    def commands(self, event: str, match_value: str | None = None) -> list[HookCommand]:
        return select_hooks(self.table, event, match_value)

    async def fire(self, event: str, payload: dict[str, Any], match_value: str | None = None) -> None:
        """Run every hook of an event concurrently and wait for all; events never overlap."""
        if not self.session.tuning.has_last_message:
            payload.pop("last_assistant_message", None)  # arrived in 2.1.47
        job = HookJob(event, json.dumps(payload, ensure_ascii=False).encode("utf-8"), self.commands(event, match_value))
        task = self.runtime.spawn(self._run_job(job))
        try:
            # Shielded: a hook that has started is not killed by an interrupt, like the real CLI.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not job.started:
                job.abandoned = True
            raise

    async def _run_job(self, job: HookJob) -> None:
        async with self._lock:
            if job.abandoned:
                return
            job.started = True
            if job.commands:
                await asyncio.gather(*(self._run_hook(c, job.payload, job.event) for c in job.commands))

    async def _run_hook(self, hook: HookCommand, payload: bytes, event: str) -> None:
        s = self.session
        env = {**self.env, "CLAUDE_PROJECT_DIR": s.cwd, "CLAUDE_CODE_SESSION_ID": s.id,
               "CLAUDE_PID": str(self.pid), "CLAUDECODE": "1"}
        command = hook.command
        if hook.plugin_root is not None:
            env["CLAUDE_PLUGIN_ROOT"] = hook.plugin_root
            command = command.replace("${CLAUDE_PLUGIN_ROOT}", hook.plugin_root)
        code, err = await run_command(command, s.cwd, env, payload, hook.timeout)
        if code is not None and code not in (0, 2):
            # like Claude Code 2.1.330: a failed hook (exit 1) is shown under the prompt, with the first line of
            # its stderr, and the turn goes on (tests/e2e/test_full_disk_real.py)
            self.on_failure(event, (err.decode(errors="replace").splitlines() or [""])[0])


class StatusLine:
    """The settings' statusLine command, run when 2.1.330 runs it with the session's payload of then."""

    def __init__(self, command: str | None, session: Session, env: Mapping[str, str], runtime: Runtime) -> None:
        self.command = command
        self.session = session
        self.env = env
        self.runtime = runtime

    def schedule(self, delay: float = STATUS_LINE_DELAY_S) -> None:
        """Run the statusLine command (if the settings have one) after ``delay``."""
        if self.command and not self.runtime.exiting:
            self.runtime.spawn(self._run(delay))

    async def _run(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if self.command and not self.runtime.exiting:
            payload = json.dumps(self.session.status_line_payload(), ensure_ascii=False).encode("utf-8")
            await run_command(self.command, self.session.cwd, {**self.env, "CLAUDECODE": "1"}, payload,
                              STATUS_LINE_TIMEOUT_S)
