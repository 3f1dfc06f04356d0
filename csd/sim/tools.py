"""The simulated model's requests and tool calls: each API request and the model's time, the assistant lines of a
tool-calling response, and scripted tool calls (a real ``sh -c`` for Bash) with their hooks in 2.1.330's order."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from csd.sim.hooks import HookRunner
from csd.sim.options import Tuning
from csd.sim.screen import Screen
from csd.sim.session import Session
from csd.sim.transcripts import short_id

BASH_TIMEOUT_S = 120.0  # the real Bash tool's default timeout is 2 minutes


class Tools:
    """The model side of a turn: requests, the responses that call tools, and the tools' processes."""

    def __init__(self, session: Session, hooks: HookRunner, screen: Screen, tuning: Tuning,
                 env: Mapping[str, str]) -> None:
        self.session = session
        self.hooks = hooks
        self.screen = screen
        self.tuning = tuning
        self.env = env
        self.pids: set[int] = set()  # process groups of running Bash tools, killed on interrupt and exit

    def kill(self) -> None:
        for pid in list(self.pids):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    async def think(self) -> None:
        """One API request and the model's time for its response (the real CLI waits for the API here)."""
        self.session.transcript.api_request()
        if self.tuning.turn_s > 0:
            await asyncio.sleep(self.tuning.turn_s)

    async def failed_attempts(self, count: int) -> None:
        """RETRY:<n>: n requests of the next API call that fail (an api-request line each, no response),
        each followed by the retry's wait; the call's last attempt is the next think()."""
        self.session.transcript.release()  # a request is being made: earlier lines are on disk by now
        for _ in range(count):
            self.session.transcript.api_request()
            await asyncio.sleep(self.tuning.retry_s)

    def fields(self, prompt_id: str) -> dict[str, Any]:
        """What the tool events' payloads (PreToolUse, PostToolUse, PostToolBatch) start with."""
        return {**self.session.turn_fields(prompt_id), "effort": {"level": "medium"}}

    async def assistant_tool_use(self, name: str, tool_input: Any, tool_use_id: str) -> str:
        """The two assistant lines of a tool-calling response (text block, tool_use block).

        They are on disk before PreToolUse fires; the tool result that follows is held (written with the next
        response's lines, or after the Stop hooks), as the real CLI's transcript lags behind its hooks.
        """
        transcript = self.session.transcript
        transcript.release()
        await self.think()
        msg_id, req_id = short_id("msg_sim"), short_id("req_sim")
        usage = self.session.usage(f"Calling {name}. {json.dumps(tool_input)}")  # one response: its usage on both lines
        transcript.assistant(msg_id, req_id, {"type": "text", "text": f"Calling {name}."}, 0, "tool_use", usage)
        self.screen.add_history("● ", f"Calling {name}.")
        use_uuid = transcript.assistant(msg_id, req_id, {"type": "tool_use", "id": tool_use_id, "name": name,
                                                         "input": tool_input}, 1, "tool_use", usage)
        transcript.hold()
        return use_uuid

    async def pre_tool_use(self, fields: dict[str, Any], name: str, tool_input: Any, tool_use_id: str) -> None:
        await self.hooks.fire("PreToolUse", {**fields, "hook_event_name": "PreToolUse", "tool_name": name,
                                             "tool_input": tool_input, "tool_use_id": tool_use_id}, name)

    async def post_tool_use(self, fields: dict[str, Any], name: str, tool_input: Any, tool_use_id: str,
                            response: Any, started: float) -> None:
        await self.hooks.fire("PostToolUse", {**fields, "hook_event_name": "PostToolUse", "tool_name": name,
                                              "tool_input": tool_input, "tool_response": response,
                                              "tool_use_id": tool_use_id,
                                              "duration_ms": int((time.monotonic() - started) * 1000)}, name)

    async def post_tool_batch(self, fields: dict[str, Any], calls: list[dict[str, Any]]) -> None:
        """PostToolBatch: after the PostToolUse hooks of one assistant message's tool calls (2.1.330)."""
        await self.hooks.fire("PostToolBatch", {**fields, "hook_event_name": "PostToolBatch", "tool_calls": calls})

    async def call(self, prompt_id: str, name: str, arg: str) -> str:
        """One scripted tool call: assistant lines, PreToolUse, the tool, result line, PostToolUse, PostToolBatch."""
        if name == "Bash":
            tool_input: Any = {"command": arg, "description": "simulated tool call"}
        else:
            try:
                tool_input = json.loads(arg) if arg else {}
            except ValueError:
                tool_input = {"input": arg}
        tool_use_id = short_id("toolu_sim")
        use_uuid = await self.assistant_tool_use(name, tool_input, tool_use_id)
        fields = self.fields(prompt_id)
        await self.pre_tool_use(fields, name, tool_input, tool_use_id)
        started = time.monotonic()
        response, content, is_error, output = await (self._bash(arg) if name == "Bash" else self._other(name, arg))
        self.session.transcript.tool_result(prompt_id, tool_use_id, content, is_error, response, use_uuid)
        await self.post_tool_use(fields, name, tool_input, tool_use_id, response, started)
        await self.post_tool_batch(fields, [{"tool_name": name, "tool_input": tool_input,
                                             "tool_use_id": tool_use_id, "tool_response": content}])
        return output

    async def _bash(self, command: str) -> tuple[Any, Any, bool, str]:
        """The Bash tool: (tool_response, result content, is_error, stdout)."""
        stdout, stderr, interrupted, code = await self.run_bash(command)
        response = {"stdout": stdout, "stderr": stderr, "interrupted": interrupted,
                    "isImage": False, "noOutputExpected": False}
        content = "\n".join(s for s in (stdout, stderr) if s)
        self.screen.add_history("● ", f"Bash({command})", gap=False)
        self.screen.add_history("  ⎿  ", content or "(No content)", max_rows=4)
        return response, content, code != 0, stdout

    async def _other(self, name: str, arg: str) -> tuple[Any, Any, bool, str]:
        """Any other tool: its result is "ok"."""
        self.screen.add_history("● ", f"{name}({arg[:60]})", gap=False)
        self.screen.add_history("  ⎿  ", "ok")
        return "ok", "ok", False, "ok"

    async def run_bash(self, command: str) -> tuple[str, str, bool, int]:
        """``sh -c command`` in the worker's cwd: (stdout, stderr, interrupted by the timeout, exit status)."""
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, cwd=self.session.cwd, env={**self.env, "CLAUDECODE": "1"},
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        self.pids.add(proc.pid)
        interrupted = False
        try:
            try:
                async with asyncio.timeout(BASH_TIMEOUT_S):
                    out, err = await proc.communicate()
            except TimeoutError:
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
            self.pids.discard(proc.pid)
        # The real Bash tool reports output without its trailing newline.
        return (out.decode("utf-8", "replace").rstrip("\n"), err.decode("utf-8", "replace").rstrip("\n"),
                interrupted, proc.returncode if proc.returncode is not None else -1)
