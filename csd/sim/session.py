"""The session a simulated worker is in: its id and transcript, the latest prompt id, its cost and tokens, and
the fields every hook payload and the statusLine payload start with. ``/clear`` renews it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from csd.sim.files import transcript_path_for
from csd.sim.options import Tuning
from csd.sim.screen import model_display_name
from csd.sim.transcripts import TranscriptWriter

# The mock model's prices as Claude Code computes them (FACTS "Cost": 2962 input + 12 output tokens = $0.012088)
PRICE_INPUT_USD, PRICE_OUTPUT_USD = 4e-6, 2e-5
COMPACT_COST_USD = 0.05  # what a /compact adds to the session's cost (0.0126 -> 0.064144 observed)


class Session:
    """One session of the worker (per session: /clear starts a new one at cost 0, --resume continues one's cost)."""

    def __init__(self, tuning: Tuning, env: Mapping[str, str], cwd: str, model: str, permission_mode: str,
                 session_id: str, resumed: bool) -> None:
        self.tuning = tuning
        self.env = env
        self.cwd = cwd
        self.model = model
        self.permission_mode = permission_mode
        self.id = session_id
        self.transcript = self._writer()
        self.prompt_id: str | None = None  # the latest one handed out, as Claude Code reports it
        self.cost = self.transcript.last_cost() if resumed else 0.0
        self.tokens = {"input": 0, "output": 0}

    def _writer(self) -> TranscriptWriter:
        t = self.tuning
        return TranscriptWriter(transcript_path_for(self.env, self.cwd, self.id), self.id, self.cwd,
                                self.permission_mode, self.model, t.version, t.has_prompt_id, t.has_api_requests)

    def renew(self) -> None:
        """/clear: the old session's cost-state line closes its transcript; a new session starts from nothing."""
        self.transcript.cost_state(self.cost, self.tokens)
        self.transcript.close()
        self.id = str(uuid.uuid4())
        self.transcript = self._writer()
        self.cost, self.tokens = 0.0, {"input": 0, "output": 0}
        # Observed with 2.1.330: the new session's SessionStart has neither prompt_id nor model.
        self.prompt_id = None

    def new_prompt_id(self) -> str:
        self.prompt_id = str(uuid.uuid4())
        return self.prompt_id

    def end(self, times: int = 1) -> None:
        """The cost-state line(s) of a session's end."""
        for _ in range(times):
            self.transcript.cost_state(self.cost, self.tokens)

    def common(self, prompt_id: str | None = None) -> dict[str, Any]:
        """The fields every hook payload starts with."""
        fields: dict[str, Any] = {"session_id": self.id, "transcript_path": str(self.transcript.path),
                                  "cwd": self.cwd}
        pid = prompt_id or self.prompt_id
        if pid and self.tuning.has_prompt_id:
            fields["prompt_id"] = pid
        return fields

    def turn_fields(self, prompt_id: str | None = None) -> dict[str, Any]:
        """The common fields plus the permission mode, as turn events (Stop, tools, agents) carry them."""
        return {**self.common(prompt_id), "permission_mode": self.permission_mode}

    def usage(self, text: str) -> dict[str, int]:
        """Plausible usage of one response (the context grows with the conversation); its cost, priced like
        the mock model, is added to the session's total."""
        usage = {"input_tokens": 2900 + 40 * self.transcript.message_count, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "output_tokens": max(len(text) // 4, 1)}
        self.tokens["input"] += usage["input_tokens"]
        self.tokens["output"] += usage["output_tokens"]
        self.cost += usage["input_tokens"] * PRICE_INPUT_USD + usage["output_tokens"] * PRICE_OUTPUT_USD
        return usage

    def status_line_payload(self) -> dict[str, Any]:
        """What 2.1.330 gives the statusLine command (samples/statusline-input.json, its main fields)."""
        payload = self.common()
        payload.update({
            "effort": {"level": "medium"}, "model": {"id": self.model, "display_name": model_display_name(self.model)},
            "workspace": {"current_dir": self.cwd, "project_dir": self.cwd, "added_dirs": []},
            "version": self.tuning.version, "output_style": {"name": "default"},
        })
        if self.tuning.has_statusline_cost:
            payload["cost"] = {"total_cost_usd": round(self.cost, 6), "total_duration_ms": 0,
                               "total_api_duration_ms": 0, "total_lines_added": 0, "total_lines_removed": 0}
        payload.update({
            "context_window": {"total_input_tokens": self.tokens["input"],
                               "total_output_tokens": self.tokens["output"], "context_window_size": 1000000},
            "exceeds_200k_tokens": False,
        })
        return payload
