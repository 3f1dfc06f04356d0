"""Event names and the tolerant parsing of a worker's events file (pure: no I/O beyond what callers pass in)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

# Claude Code hook name -> csd event name lives in the hook (which must not import csd's package).
from csd.hook import HOOK_TO_EVENT
from csd.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    from typing import Any

EVENT_NAMES: tuple[str, ...] = tuple(HOOK_TO_EVENT.values())
SYNTHETIC_PROMPT_PREFIX = "<task-notification>"
#: Events that end a turn the worker was running: a normal end, or an API error (Claude Code fires
#: StopFailure instead of Stop when the turn's API calls fail).
TURN_ENDS = frozenset({"stop", "stop_failure"})

#: What a controller should do about a turn that ended in an API error, by StopFailure's ``error``.
FAILURE_ADVICE = {
    "rate_limit": "rate limited: wait, then resend the prompt",
    "authentication_failed": "the worker needs a login (take it over with handoff and run /login, or fix its API key), then resend",
    "server_error": "a server-side error, usually transient: resend the prompt",
    "billing_error": "a billing problem on the account: fix it, then resend",
    "invalid_request": "the API rejected the request: resending the same prompt will fail again",
}
DEFAULT_FAILURE_ADVICE = "read the error (read-events --last 1), then resend or change the prompt"


def failure_advice(error: str | None) -> str:
    return FAILURE_ADVICE.get(error or "", DEFAULT_FAILURE_ADVICE)


#: Text in a Stop payload's ``last_assistant_message`` that may be Claude Code's synthetic API error message:
#: releases before StopFailure (2.1.78) fire Stop for a failed turn, and only the transcript says it failed.
API_ERROR_MARKERS = ("API Error", "limit · resets")


def failure_line(name: str, event: Event) -> str:
    """One line for a turn that ended in an API error: which worker, the error type, Claude Code's own
    message, and what to do."""
    return failure_text(name, event.error, event.data.get("last_assistant_message"))


def failure_text(name: str, error: str | None, message: object) -> str:
    """failure_line for an error known from elsewhere (the transcript's synthetic error message)."""
    shown = _one_line(message, 160)
    return f"{name!r}: the turn ended in an API error ({error}{': ' + shown if shown else ''}); {failure_advice(error)}"


class Event(Value):
    """One line of an events file. ``data`` is the whole JSON object; unknown names are kept."""

    _fields = ("line_no", "name", "ts", "data", "raw", "gen")
    _hidden = frozenset({"data", "raw"})
    line_no: int
    name: str
    ts: str
    data: dict[str, Any]
    raw: str
    #: How many times the file had been truncated or replaced (log rotation) before this line was read:
    #: line numbers restart at 1 each time, so order is (gen, line_no), never line_no alone.
    gen: int

    def __init__(self, line_no: int, name: str, ts: str, data: dict[str, Any], raw: str, gen: int = 0) -> None:
        self._set(line_no=line_no, name=name, ts=ts, data=data, raw=raw, gen=gen)

    @property
    def pos(self) -> tuple[int, int]:
        """Where the line is in the worker's log across truncations: later lines compare greater."""
        return (self.gen, self.line_no)

    @property
    def known(self) -> bool:
        return self.name in EVENT_NAMES

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) and value else None

    @property
    def source(self) -> str | None:
        value = self.data.get("source")
        return value if isinstance(value, str) else None

    @property
    def notification_type(self) -> str | None:
        value = self.data.get("notification_type")
        return value if isinstance(value, str) else None

    @property
    def bg_running(self) -> int:
        """Background tasks still running when this event fired (stop/subagent_stop), else 0."""
        value = self.data.get("bg_running")
        return value if isinstance(value, int) and value > 0 else 0

    @property
    def error(self) -> str | None:
        """The API error type of a stop_failure (``rate_limit``, ``server_error``, ...), else None."""
        if self.name != "stop_failure":
            return None
        value = self.data.get("error")
        return value if isinstance(value, str) and value else "unknown"

    @property
    def may_hide_api_error(self) -> bool:
        """A ``stop`` that may end a failed turn of a release without StopFailure: no
        ``last_assistant_message`` (before 2.1.47), or one that reads like an API error."""
        if self.name != "stop":
            return False
        last = self.data.get("last_assistant_message")
        return not isinstance(last, str) or not last.strip() or any(m in last for m in API_ERROR_MARKERS)

    @property
    def synthetic(self) -> bool:
        """A prompt Claude Code submitted by itself (a background task reporting back)."""
        prompt = self.data.get("prompt")
        return isinstance(prompt, str) and prompt.startswith(SYNTHETIC_PROMPT_PREFIX)

    def summary(self) -> str:
        """A short human description, e.g. ``Bash: pytest -q`` for a tool call."""
        d = self.data
        if self.name in ("pre_tool_use", "post_tool_use"):
            tool = d.get("tool") or "?"
            arg = _tool_arg(d.get("tool_input"))
            return f"{tool}: {arg}" if arg else str(tool)
        if self.name == "user_prompt_submit":
            return "prompt: " + _one_line(d.get("prompt"))
        if self.name == "stop":
            bg = self.bg_running
            return "stop" + (f" ({bg} background running)" if bg else "")
        if self.name == "stop_failure":
            return f"stop_failure ({self.error})"
        if self.name == "session_start":
            return f"session_start ({self.source})" if self.source else "session_start"
        if self.name == "session_end":
            reason = d.get("reason")
            return f"session_end ({reason})" if reason else "session_end"
        if self.name == "notification":
            return f"notification ({self.notification_type or _one_line(d.get('message'))})"
        return self.name


def _one_line(value: object, limit: int = 60) -> str:
    text = value if isinstance(value, str) else ("" if value is None else json.dumps(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tool_arg(tool_input: object) -> str:
    if isinstance(tool_input, dict):
        for key in ("command", "file_path", "pattern", "description", "url", "query", "prompt"):
            if isinstance(tool_input.get(key), str):
                return _one_line(tool_input[key])
        return _one_line(tool_input)
    return _one_line(tool_input)


class BadLine(ValueError):
    """A malformed or half-written line (a hook killed mid-write)."""

    def __init__(self, line_no: int, reason: str, text: str) -> None:
        super().__init__(f"{f'line {line_no}' if line_no else 'a line'}: {reason}" + (f": {text[:80]!r}" if text else ""))
        self.line_no, self.reason, self.text = line_no, reason, text

    def at(self, line_no: int) -> BadLine:
        """The same report for line ``line_no`` (a backward read learns line numbers last)."""
        return BadLine(line_no, self.reason, self.text)


def too_long(line_no: int, limit: int) -> BadLine:
    """A line over the readers' limit (lines.MAX_LINE): skipped unread, so it is not quoted."""
    return BadLine(line_no, f"longer than {limit} bytes (the hook never writes such a line)", "")


def parse_line(text: str, line_no: int) -> Event:
    """Parse one line; raise BadLine when it is not a JSON object with a string ``event``."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadLine(line_no, f"not JSON ({exc.msg})", text) from None
    except ValueError as exc:  # e.g. a lone surrogate
        raise BadLine(line_no, f"not JSON ({exc})", text) from None
    except RecursionError:
        raise BadLine(line_no, "nested too deeply to be an event", text) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("event"), str):
        raise BadLine(line_no, "not an event object", text)
    ts = obj.get("ts")
    return Event(line_no, obj["event"], ts if isinstance(ts, str) else "", obj, text)


def parse_lines(
    lines: Iterable[str], first_line_no: int = 1, on_bad: Callable[[BadLine], None] | None = None
) -> Iterator[Event]:
    """Parse lines, skipping (and reporting through ``on_bad``) the bad ones; later lines still count."""
    for line_no, text in enumerate(lines, first_line_no):
        text = text.rstrip("\n")
        if not text.strip():
            continue
        try:
            yield parse_line(text, line_no)
        except BadLine as bad:
            if on_bad is not None:
                on_bad(bad)
