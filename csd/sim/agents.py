"""Background agents as 2.1.330 runs them (``TOOL:Agent:<json>``, ``BG:<s>``): the Agent tool call and its hooks,
the sub-agent's transcript and output file, SubagentStop when it finishes, then the ``<task-notification>`` turn."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csd.clock import now_iso
from csd.events import SYNTHETIC_PROMPT_PREFIX
from csd.sim.directives import sleep_seconds
from csd.sim.files import task_output_path, task_tmp_dir
from csd.sim.hooks import HookRunner
from csd.sim.options import SIM_CLAUDE_VERSION, Tuning
from csd.sim.runtime import Runtime
from csd.sim.screen import Screen
from csd.sim.session import Session
from csd.sim.tools import Tools
from csd.sim.transcripts import short_id

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


def task_notification(task: BgTask, duration_ms: int) -> str:
    """The synthetic prompt 2.1.330 queues when a background agent finishes."""
    return (
        f"{SYNTHETIC_PROMPT_PREFIX}\n"
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


class Agents:
    """The background agents of the worker: launched in a turn, finishing on their own time."""

    def __init__(self, session: Session, hooks: HookRunner, screen: Screen, tools: Tools, runtime: Runtime,
                 tuning: Tuning, env: Mapping[str, str], notify: Callable[[str, BgTask], None]) -> None:
        self.session = session
        self.hooks = hooks
        self.screen = screen
        self.tools = tools
        self.runtime = runtime
        self.tuning = tuning
        self.env = env
        self.notify = notify  # queues the <task-notification> turn of a finished agent
        self.running: dict[str, BgTask] = {}

    def payload(self) -> list[dict[str, str]]:
        """The running agents as Stop's and SubagentStop's ``background_tasks`` list them."""
        return [t.as_payload() for t in self.running.values()]

    def subagent_path(self, agent_id: str) -> Path:
        s = self.session
        return s.transcript.path.parent / s.id / "subagents" / f"agent-{agent_id}.jsonl"

    async def agent_tool_call(self, prompt_id: str, arg: str) -> str:
        """TOOL:Agent:<json>: the real Agent tool, which 2.1.330 always runs in the background."""
        try:
            raw = json.loads(arg) if arg else {}
        except ValueError:
            raw = {"prompt": arg}
        if not isinstance(raw, dict):
            raw = {"prompt": str(raw)}
        prompt = str(raw.get("prompt", ""))
        seconds = sleep_seconds(prompt)
        return await self.launch(prompt_id, raw, self.tuning.agent_s if seconds is None else seconds,
                                 f"ECHO: {prompt}")

    async def launch_bg(self, prompt_id: str, seconds: float) -> str:
        """BG:<seconds>: a background Agent working that long (0: done before the turn's Stop)."""
        tool_input = {"description": f"simulated background agent ({seconds:g}s)",
                      "prompt": f"Work in the background for {seconds:g}s.", "subagent_type": "general-purpose"}
        return await self.launch(prompt_id, tool_input, seconds, f"Background work finished after {seconds:g}s.")

    def _new_task(self, prompt_id: str, tool_use_id: str, tool_input: dict[str, Any], seconds: float,
                  result: str) -> BgTask:
        agent_id = "a" + uuid.uuid4().hex[:16]
        s = self.session
        return BgTask(agent_id, tool_use_id, prompt_id, str(tool_input.get("description") or "agent"),
                      str(tool_input.get("prompt", "")), seconds, str(self.subagent_path(agent_id)),
                      str(task_output_path(self.env, s.cwd, s.id, agent_id)), result,
                      str(tool_input.get("subagent_type") or "general-purpose"))

    async def launch(self, prompt_id: str, tool_input: dict[str, Any], seconds: float, result: str) -> str:
        """An Agent tool call that runs in the background, in the order 2.1.330 fires its hooks."""
        # The hooks get the input without run_in_background (PostToolBatch and the transcript keep it).
        hook_input = {k: v for k, v in tool_input.items() if k != "run_in_background"}
        tool_use_id = short_id("toolu_sim")
        use_uuid = await self.tools.assistant_tool_use("Agent", tool_input, tool_use_id)
        fields = self.tools.fields(prompt_id)
        await self.tools.pre_tool_use(fields, "Agent", hook_input, tool_use_id)
        started = time.monotonic()
        task = self._new_task(prompt_id, tool_use_id, tool_input, seconds, result)
        self.running[task.agent_id] = task
        self.start_subagent_transcript(task)
        await self.hooks.fire("SubagentStart", {**self.session.common(prompt_id), "agent_id": task.agent_id,
                                                "agent_type": task.agent_type, "hook_event_name": "SubagentStart"},
                              task.agent_type)
        response = {"isAsync": True, "status": "async_launched", "agentId": task.agent_id,
                    "description": task.description, "resolvedModel": self.session.model, "prompt": task.prompt,
                    "outputFile": task.output_file, "canReadOutputFile": True, "canContinueAgent": True}
        text = AGENT_LAUNCHED_TEXT.format(agent_id=task.agent_id, output_file=task.output_file)
        content = [{"type": "text", "text": text}]
        self.session.transcript.tool_result(prompt_id, tool_use_id, content, False, response, use_uuid)
        self.screen.add_history("● ", f"Agent({task.description})", gap=False)
        self.screen.add_history("  ⎿  ", "Backgrounded agent (↓ to manage · ctrl+o to expand)")
        await self.tools.post_tool_use(fields, "Agent", hook_input, tool_use_id, response, started)
        await self.tools.post_tool_batch(fields, [{"tool_name": "Agent", "tool_input": tool_input,
                                                   "tool_use_id": tool_use_id, "tool_response": content}])
        if seconds <= 0:
            # A sub-agent that answers at once: its SubagentStop comes before this turn's Stop, which then lists
            # no background task, and its <task-notification> turn follows that Stop.
            await self.finish(task)
        else:
            self.runtime.spawn(self.finish(task))
        return text

    async def finish(self, task: BgTask) -> None:
        started = time.monotonic()
        if task.seconds > 0:
            await asyncio.sleep(task.seconds)
        if self.runtime.exiting:
            return
        self.finish_subagent_transcript(task)
        # Observed: the finishing agent is still listed as running in its own SubagentStop.
        await self.hooks.fire("SubagentStop", {
            **self.session.turn_fields(task.prompt_id), "agent_id": task.agent_id,
            "agent_type": task.agent_type, "effort": {"level": "medium"}, "hook_event_name": "SubagentStop",
            "stop_hook_active": False, "agent_transcript_path": task.transcript_path,
            "last_assistant_message": task.result, "background_tasks": self.payload(), "session_crons": []},
            task.agent_type)
        task.status = "completed"
        self.running.pop(task.agent_id, None)
        notification = task_notification(task, int((time.monotonic() - started) * 1000))
        self.session.transcript.write({"type": "queue-operation", "operation": "enqueue", "timestamp": now_iso(),
                                       "sessionId": self.session.id, "content": notification})
        self.screen.add_history("● ", f'Agent "{task.description}" finished · {int(task.seconds)}s')
        self.notify(notification, task)

    def _subagent_line(self, task: BgTask, parent: str | None, body: dict[str, Any]) -> dict[str, Any]:
        return {"parentUuid": parent, "isSidechain": True, "agentId": task.agent_id, **body,
                "uuid": str(uuid.uuid4()), "timestamp": now_iso(), "userType": "external", "entrypoint": "cli",
                "cwd": self.session.cwd, "sessionId": self.session.id, "version": SIM_CLAUDE_VERSION}

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
        base = task_tmp_dir(self.env)
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
                "id": short_id("msg_sim"), "type": "message", "role": "assistant", "model": self.session.model,
                "content": [{"type": "text", "text": task.result}], "stop_reason": "end_turn",
                "stop_sequence": None}})
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        except (OSError, ValueError, AttributeError):
            pass
