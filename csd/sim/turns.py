"""What happens in one turn of the simulated worker, in Claude Code 2.1.330's order: a prompt steered by its
directives (or a ``<task-notification>``), a bash-mode command, ``/compact`` and ``/clear`` — transcript lines,
hooks and screen lines each."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from dataclasses import dataclass

from csd.clock import now_iso
from csd.sim.agents import Agents, BgTask
from csd.sim.directives import API_ERROR_TEXT, parse_directives
from csd.sim.hooks import HookRunner, StatusLine
from csd.sim.options import Tuning
from csd.sim.screen import Screen
from csd.sim.session import COMPACT_COST_USD, Session
from csd.sim.tools import Tools
from csd.sim.transcripts import resume_fields, short_id

COMPACT_SUMMARY = "<summary>\nSummary of the conversation so far (simulated compaction).\n</summary>"


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
    started: float = 0.0  # monotonic time the turn began

    @property
    def queued_text(self) -> str | None:
        """How the screen shows it while it waits in the queue; None for what is not shown there."""
        if self.kind == "prompt":
            return self.text
        if self.kind in ("compact", "clear"):
            return f"/{self.kind} {self.text}".rstrip()
        return None


class Turns:
    """Runs the worker's items, one at a time (the worker's queue decides which and when)."""

    def __init__(self, session: Session, hooks: HookRunner, screen: Screen, tools: Tools, agents: Agents,
                 status_line: StatusLine, tuning: Tuning) -> None:
        self.session = session
        self.hooks = hooks
        self.screen = screen
        self.tools = tools
        self.agents = agents
        self.status_line = status_line
        self.tuning = tuning

    async def run(self, item: Item) -> None:
        if item.kind == "compact":
            await self.compact(item)
        elif item.kind == "clear":
            await self.clear(item)
        elif item.kind == "shell":
            await self.shell(item)
        else:
            try:
                await self.turn(item)
            finally:
                # Whatever happened (Esc, exit), held transcript lines are not lost.
                self.session.transcript.release()

    async def fire_stop(self, item: Item, final: str) -> None:
        await self.hooks.fire("Stop", {
            **self.session.turn_fields(item.prompt_id), "effort": {"level": "medium"}, "hook_event_name": "Stop",
            "stop_hook_active": False, "last_assistant_message": final, "background_tasks": self.agents.payload(),
            "session_crons": []})
        item.stopped = True
        self.status_line.schedule()

    async def fire_session_start(self, source: str, prompt_id: str | None = None) -> None:
        payload = {**self.session.common(prompt_id), "hook_event_name": "SessionStart", "source": source}
        if source == "resume":
            # Observed with 2.1.330: a resumed session reports its context and cache state instead of the model.
            payload.update(resume_fields(self.session.transcript.path))
        else:
            payload["model"] = self.session.model
        await self.hooks.fire("SessionStart", payload, source)

    async def shell(self, item: Item) -> None:
        """A bash-mode command (2.1.330): ``<bash-input>`` and ``<bash-stdout>…<bash-stderr>`` user lines, then the
        model answers them; Stop fires, UserPromptSubmit does not."""
        transcript = self.session.transcript
        self.screen.add_history("! ", item.text)
        transcript.conversation({"promptId": item.prompt_id, "type": "user",
                                 "message": {"role": "user", "content": f"<bash-input>{item.text}</bash-input>"}})
        stdout, stderr, _, _ = await self.tools.run_bash(item.text)
        output = f"<bash-stdout>{stdout}</bash-stdout><bash-stderr>{stderr}</bash-stderr>"
        self.screen.add_history("  ⎿  ", stdout or stderr or "(No content)", max_rows=4)
        transcript.conversation({"promptId": item.prompt_id, "type": "user",
                                 "message": {"role": "user", "content": output}})
        await self.tools.think()
        final = f"ECHO: {output}"
        transcript.assistant(short_id("msg_sim"), short_id("req_sim"), {"type": "text", "text": final}, 0,
                             "end_turn", self.session.usage(final))
        self.screen.add_history("● ", final)
        await self.fire_stop(item, final)

    async def turn(self, item: Item) -> None:
        """A prompt's turn, steered by its directives, or a finished agent's <task-notification> turn."""
        await self.begin(item)
        if item.kind == "synthetic":
            final = f'ECHO: task-notification: Agent "{item.bg.description}" finished' if item.bg else None
            failed = None
        else:
            final, failed = await self.follow_directives(item)
        if failed is not None:
            await self.fail(item, failed)
        else:
            await self.answer(item, final if final is not None else f"ECHO: {item.text}")

    async def begin(self, item: Item) -> None:
        """The turn's prompt: its user line and its UserPromptSubmit (a typed prompt's fired when submitted)."""
        transcript = self.session.transcript
        if item.kind == "synthetic":
            self.screen.add_history("❯ ", item.text.split("\n")[0] + " …")
            self.session.prompt_id = item.prompt_id
            transcript.write({"type": "queue-operation", "operation": "dequeue", "timestamp": now_iso(),
                              "sessionId": self.session.id})
            transcript.user_prompt(item.text, item.prompt_id, synthetic=True)
            await self.hooks.fire("UserPromptSubmit", {
                **self.session.turn_fields(item.prompt_id), "hook_event_name": "UserPromptSubmit",
                "prompt": item.text})
            return
        self.screen.add_history("❯ ", item.text)
        if not item.user_line_written:
            transcript.user_prompt(item.text, item.prompt_id)
            item.user_line_written = True
        if item.ups_task is not None:
            await asyncio.wait({item.ups_task})  # never cancels the hook itself

    async def follow_directives(self, item: Item) -> tuple[str | None, str | None]:
        """Do what the prompt's directives say, in order: (the reply they set, the error of a FAIL:)."""
        final: str | None = None
        for d in parse_directives(item.text):
            if d.kind == "reply":
                final = d.arg
            elif d.kind == "sleep":
                self.session.transcript.release()  # a new response is being awaited: earlier lines are on disk
                await asyncio.sleep(d.seconds)
            elif d.kind == "hang":
                self.session.transcript.release()
                await asyncio.Event().wait()
            elif d.kind == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            elif d.kind == "tool" and d.name == "Agent":
                final = "DONE: " + (await self.agents.agent_tool_call(item.prompt_id, d.arg))[:200]
            elif d.kind == "tool":
                final = "DONE: " + (await self.tools.call(item.prompt_id, d.name, d.arg))[:200]
            elif d.kind == "bg":
                final = "DONE: " + (await self.agents.launch_bg(item.prompt_id, d.seconds))[:200]
            elif d.kind == "fail":
                return final, d.arg
            elif d.kind == "retry":
                await self.tools.failed_attempts(int(d.seconds))
        return final, None

    async def answer(self, item: Item, final: str) -> None:
        """The final response, the Stop hooks, then (after the lag) the lines the real transcript writes late."""
        transcript = self.session.transcript
        await self.tools.think()
        # Observed with 2.1.330: the Stop hooks run before the turn's last tool result, its final text and
        # stop_hook_summary reach the transcript (30-70 ms later); a reader woken by Stop may not see them yet.
        transcript.hold()
        transcript.assistant(short_id("msg_sim"), short_id("req_sim"), {"type": "text", "text": final},
                             0, "end_turn", self.session.usage(final))
        self.screen.add_history("● ", final)
        stop_started = time.monotonic()
        await self.fire_stop(item, final)
        stop_ms = int((time.monotonic() - stop_started) * 1000)
        self.screen.redraw()
        if self.tuning.lag_s > 0:
            await asyncio.sleep(self.tuning.lag_s)
        stop_commands = self.hooks.commands("Stop")
        transcript.system(
            "stop_hook_summary", hookCount=len(stop_commands),
            hookInfos=[{"command": c.command, "durationMs": stop_ms} for c in stop_commands],
            hookErrors=[], preventedContinuation=False, stopReason="", hasOutput=False, level="suggestion")
        extra = {"pendingBackgroundAgentCount": len(self.agents.running)} if self.agents.running else {}
        duration = time.monotonic() - item.started
        transcript.system("turn_duration", durationMs=int(duration * 1000),
                          messageCount=transcript.message_count, **extra, isMeta=False)
        transcript.release()
        self.screen.history += [f"✻ Worked for {int(duration)}s", ""]

    async def fail(self, item: Item, error: str) -> None:
        """End the turn as 2.1.330 does when its API calls fail: the synthetic assistant line, then
        StopFailure (never Stop)."""
        await self.tools.think()
        text = API_ERROR_TEXT.get(error, f"API Error: {error} (simulated)")
        self.session.transcript.conversation({
            "message": {
                "id": short_id("msg_sim"), "type": "message", "role": "assistant", "model": "<synthetic>",
                "content": [{"type": "text", "text": text}], "stop_reason": "stop_sequence", "stop_sequence": "",
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
            "type": "assistant", "isApiErrorMessage": True, "error": error,
        })
        self.screen.add_history("● ", text)
        if self.tuning.has_stop_failure:
            await self.hooks.fire("StopFailure", {
                **self.session.common(item.prompt_id), "effort": {"level": "medium"},
                "hook_event_name": "StopFailure", "error": error, "last_assistant_message": text})
        else:
            # before StopFailure (2.1.78) a failed turn fired Stop; its message was the error text
            await self.hooks.fire("Stop", {
                **self.session.turn_fields(item.prompt_id), "hook_event_name": "Stop", "stop_hook_active": False,
                "last_assistant_message": text})
        item.stopped = True
        self.status_line.schedule()
        self.screen.redraw()

    async def compact(self, item: Item) -> None:
        """/compact: PreCompact, the compaction's sub-agent stopping, the boundary and summary lines,
        SessionStart(compact), PostCompact; the session and its cost go on."""
        self.screen.add_history("❯ ", "/compact" + (f" {item.text}" if item.text else ""))
        await self.hooks.fire("PreCompact", {**self.session.common(item.prompt_id), "hook_event_name": "PreCompact",
                                             "trigger": "manual", "custom_instructions": item.text or None}, "manual")
        agent_id = "a" + uuid.uuid4().hex[:16]
        await self.hooks.fire("SubagentStop", {
            **self.session.turn_fields(item.prompt_id), "agent_id": agent_id, "agent_type": "",
            "effort": {"level": "medium"}, "hook_event_name": "SubagentStop", "stop_hook_active": False,
            "agent_transcript_path": str(self.agents.subagent_path(agent_id)),
            "last_assistant_message": COMPACT_SUMMARY, "background_tasks": self.agents.payload(),
            "session_crons": []}, "")
        self.write_compaction(item)
        await self.fire_session_start("compact", item.prompt_id)
        await self.hooks.fire("PostCompact", {**self.session.common(item.prompt_id), "hook_event_name": "PostCompact",
                                              "trigger": "manual", "compact_summary": COMPACT_SUMMARY}, "manual")
        self.screen.history = ["✻ Conversation compacted (ctrl+o for history)", ""]
        self.session.cost += COMPACT_COST_USD  # /compact keeps the session and adds the compaction's cost
        self.status_line.schedule(0.0)

    def write_compaction(self, item: Item) -> None:
        """The transcript lines of a /compact: the boundary (a new chain), the summary, the command."""
        transcript = self.session.transcript
        previous = transcript.parent_uuid
        transcript.conversation({"type": "system", "subtype": "compact_boundary",
                                 "content": "Conversation compacted", "level": "info", "logicalParentUuid": previous,
                                 "compactMetadata": {"trigger": "manual"}}, chained=False)
        transcript.conversation({
            "promptId": item.prompt_id, "type": "user", "isCompactSummary": True,
            "message": {"role": "user", "content": "This session is being continued from a previous conversation "
                        "that ran out of context. The summary below covers the earlier portion of the "
                        f"conversation.\n{COMPACT_SUMMARY}"}})
        transcript.conversation({
            "promptId": item.prompt_id, "type": "user",
            "message": {"role": "user", "content": "<command-name>/compact</command-name>\n"
                        "            <command-message>compact</command-message>\n"
                        f"            <command-args>{item.text}</command-args>"}})

    async def clear(self, item: Item) -> None:
        """/clear: SessionEnd(clear), then a new session: SessionStart(clear), no prompt_id, no model."""
        await self.hooks.fire("SessionEnd", {**self.session.common(item.prompt_id), "hook_event_name": "SessionEnd",
                                             "reason": "clear"}, "clear")
        self.session.renew()
        self.screen.history = []
        await self.hooks.fire("SessionStart", {**self.session.common(), "hook_event_name": "SessionStart",
                                               "source": "clear"}, "clear")
        self.status_line.schedule(0.0)
