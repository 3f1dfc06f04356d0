"""The transcript the simulated worker writes, in Claude Code's format and timing (lines held back and released
as the real CLI's lag behind its hooks), and what it reads back from a transcript it resumes."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from csd.clock import epoch, now_iso
from csd.sim.options import SIM_CLAUDE_VERSION
from csd.transcript import parse_lines


def short_id(prefix: str) -> str:
    """An id in the style of the API's message, request and tool-use ids (msg_…, req_…, toolu_…)."""
    return prefix + uuid.uuid4().hex[:24]


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The lines of a transcript that are JSON objects (csd's tolerant parsing); nothing when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return iter(())
    return iter(parse_lines(text.split("\n")).entries)


def resume_fields(path: Path) -> dict[str, Any]:
    """Plausible values for SessionStart(resume), derived from the resumed transcript."""
    chars = 0
    last_response: float | None = None
    for obj in json_lines(path):
        if isinstance(obj.get("message"), dict):
            chars += len(json.dumps(obj["message"].get("content"), ensure_ascii=False))
        if obj.get("type") == "assistant" and isinstance(obj.get("timestamp"), str):
            last_response = epoch(obj["timestamp"]) or last_response
    if last_response is None:
        try:
            last_response = path.stat().st_mtime
        except OSError:
            last_response = time.time()
    since = max(int(time.time() - last_response), 0)
    tokens = 3600 + chars // 4  # the system prompt and tools, plus the conversation
    return {"seconds_since_last_response": since, "context_tokens": tokens,
            "prompt_cache_likely_expired": since >= 300,
            "estimated_cache_write_usd": round(tokens * 5e-6, 4)}


class TranscriptWriter:
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
        lines = [obj for obj in json_lines(self.path) if obj.get("uuid")]
        if lines:
            self.parent_uuid = lines[-1]["uuid"]
            self.message_count += len(lines)
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
        for obj in json_lines(self.path):
            if obj.get("type") == "cost-state":
                try:
                    cost = float(obj.get("totalCostUSD") or 0.0)
                except (ValueError, TypeError):
                    pass
        return cost
