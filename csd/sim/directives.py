"""The directives that steer the simulated worker from inside a prompt (REPLY:, TOOL:, SLEEP:, BG:, CRASH, HANG,
FAIL:, RETRY:, listed in ``csd.sim.options.HELP``), and the API-error texts a FAIL: turn shows. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass


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
# A sub-agent's prompt says how long it works with the same SLEEP:<s>.
_SLEEP_RE = re.compile(r"(?<![\w-])SLEEP:(\d+(?:\.\d+)?)")


def parse_directives(prompt: str) -> list[Directive]:
    """The directives of a prompt, in the order they appear."""
    return [_directive(m) for m in _DIRECTIVE_RE.finditer(prompt)]


def _directive(m: re.Match[str]) -> Directive:
    if m.group("reply") is not None:
        return Directive("reply", arg=m.group("reply").strip())
    if m.group("tool_name") is not None:
        return Directive("tool", name=m.group("tool_name"), arg=m.group("tool_arg").strip())
    for kind in ("sleep", "bg", "retry"):
        if m.group(kind) is not None:
            return Directive(kind, seconds=float(m.group(kind)))
    if m.group("fail") is not None:
        return Directive("fail", arg=m.group("fail"))
    return Directive("crash" if m.group("crash") is not None else "hang")


def sleep_seconds(prompt: str) -> float | None:
    """The SLEEP:<s> of a sub-agent's prompt, or None."""
    m = _SLEEP_RE.search(prompt)
    return float(m.group(1)) if m else None


#: StopFailure's ``error`` -> the synthetic assistant text Claude Code 2.1.330 shows (FACTS §7).
API_ERROR_TEXT = {
    "rate_limit": "API Error: Request rejected (429) · rate_limit_error (simulated)",
    "server_error": "API Error: 500 api_error (simulated) · This is a server-side issue, usually temporary",
    "authentication_failed": "Please run /login · API Error: 401 authentication_error (simulated)",
    "unknown": "API Error: 400 invalid_request_error (simulated)",
}
