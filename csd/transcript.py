"""Claude Code transcripts, pure: the path rule, lines parsed tolerantly, turns, markdown, the final reply, the API
call in flight (csd.transcriptfile reads the files)."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping

from csd.events import SYNTHETIC_PROMPT_PREFIX
from csd.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Entries: TypeAlias = "Transcript | Iterable[Mapping[str, Any]]"

__all__ = [
    "ApiState",
    "Interrupt",
    "Item",
    "Text",
    "Thinking",
    "ToolResult",
    "ToolUse",
    "Transcript",
    "Turn",
    "encode_cwd",
    "api_state",
    "final_text",
    "last_turn",
    "parse_lines",
    "transcript_path",
    "turn_after",
    "turn_for_prompt",
    "turn_markdown",
    "turns",
]

# Claude Code caps the encoded directory name and disambiguates long ones with a hash suffix (FACTS §6).
_MAX_ENCODED_LEN = 200
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

# How many lines of a tool result read-turn shows unless asked for everything (SPEC §3 read-turn).
RESULT_PREVIEW_LINES = 5

# User lines whose text starts like this were written by the CLI for a slash command, `!` bash mode or
# `#` memory mode: they are not prompts the model was asked to answer.
_COMMAND_PREFIXES = (
    "<command-name>",
    "<command-message>",
    "<command-args>",
    "<local-command-stdout>",
    "<local-command-stderr>",
    "<local-command-caveat>",
    "<bash-input>",
    "<bash-stdout>",
    "<bash-stderr>",
    "<user-memory-input>",
)
_INTERRUPT_PREFIX = "[Request interrupted by user"


# --------------------------------------------------------------------------------------------------
# Where the transcript is


def encode_cwd(cwd: str) -> str:
    """Encode a working directory the way Claude Code names its project directory.

    Every UTF-16 code unit that is not an ASCII letter or digit becomes `-` (JavaScript's
    `replace(/[^a-zA-Z0-9]/g, "-")`, so a character outside the BMP gives two dashes). A result longer
    than 200 characters is cut to 200 and suffixed with `-` + base36(abs(Java-style hash of `cwd`)).
    """
    out: list[str] = []
    for ch in cwd:
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append("--" if ord(ch) > 0xFFFF else "-")
    encoded = "".join(out)
    if len(encoded) <= _MAX_ENCODED_LEN:
        return encoded
    # Math.abs on a JS number: abs(-2**31) is 2**31, not Java's overflow back to -2**31.
    return f"{encoded[:_MAX_ENCODED_LEN]}-{_base36(abs(_java_string_hash(cwd)))}"


def _java_string_hash(text: str) -> int:
    """Java's String.hashCode: h = 31*h + unit over UTF-16 code units, wrapped to a signed 32-bit int."""
    # surrogatepass keeps lone surrogates (e.g. from surrogateescape'd paths) as the single units JS sees.
    data = text.encode("utf-16-le", "surrogatepass")
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + (data[i] | (data[i + 1] << 8))) & 0xFFFFFFFF
    return h - 0x1_0000_0000 if h & 0x8000_0000 else h


def _base36(n: int) -> str:
    if n == 0:
        return "0"
    digits: list[str] = []
    while n:
        n, rem = divmod(n, 36)
        digits.append(_BASE36[rem])
    return "".join(reversed(digits))


def transcript_path(claude_dir: str, cwd: str, session_id: str) -> str:
    """The path of a session's transcript: `<claude_dir>/projects/<encode_cwd(cwd)>/<session_id>.jsonl`.

    `claude_dir` is Claude Code's config dir (csd.config.claude_dir() says which). Prefer the
    `transcript_path` of a hook payload when there is one.
    """
    return posixpath.join(claude_dir, "projects", encode_cwd(cwd), f"{session_id}.jsonl")


# --------------------------------------------------------------------------------------------------
# Lines


class Transcript(Value):
    """Parsed transcript lines.

    `entries` are the lines that are JSON objects, in file order. `bad_lines` are the 1-based numbers of
    the other non-blank lines, the last line excepted: a last line that does not parse is most likely
    still being written, so it is reported as `partial_tail` instead of as damage.
    """

    _fields = ("entries", "bad_lines", "partial_tail")
    entries: tuple[dict[str, Any], ...]
    bad_lines: tuple[int, ...]
    partial_tail: bool

    def __init__(self, entries: tuple[dict[str, Any], ...] = (), bad_lines: tuple[int, ...] = (), partial_tail: bool = False) -> None:
        self._set(entries=entries, bad_lines=bad_lines, partial_tail=partial_tail)


def parse_lines(lines: Iterable[str]) -> Transcript:
    """Parse JSONL lines (with or without their newlines), skipping blank ones and reporting bad ones."""
    entries: list[dict[str, Any]] = []
    bad: list[int] = []
    last_bad = 0
    last_seen = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last_seen = number
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to be a transcript line
            value = None
        if isinstance(value, dict):
            entries.append(value)
        else:
            bad.append(number)
            last_bad = number
    partial = bool(bad) and last_bad == last_seen
    if partial:
        bad.pop()
    return Transcript(tuple(entries), tuple(bad), partial)


# --------------------------------------------------------------------------------------------------
# Turns


class Text(Value):
    """An assistant text block; `message_id` groups the blocks of one API message.

    `error` is set on the synthetic message Claude Code writes when a turn's API calls failed
    (`isApiErrorMessage`, model `<synthetic>`): the error type (`rate_limit`, `server_error`, ...).
    """

    _fields = ("text", "message_id", "error")
    text: str
    message_id: str | None
    error: str | None

    def __init__(self, text: str, message_id: str | None = None, error: str | None = None) -> None:
        self._set(text=text, message_id=message_id, error=error)


class Thinking(Value):
    """An assistant thinking block (`redacted` for a redacted_thinking block, whose text is unreadable)."""

    _fields = ("text", "redacted")
    text: str
    redacted: bool

    def __init__(self, text: str, redacted: bool = False) -> None:
        self._set(text=text, redacted=redacted)


class ToolUse(Value):
    """A tool call by the assistant."""

    _fields = ("name", "input", "id")
    name: str
    input: Any
    id: str | None

    def __init__(self, name: str, input: Any, id: str | None = None) -> None:
        self._set(name=name, input=input, id=id)


class ToolResult(Value):
    """A tool's result, its content flattened to text (images as `[image]`)."""

    _fields = ("content", "is_error", "tool_use_id")
    content: str
    is_error: bool
    tool_use_id: str | None

    def __init__(self, content: str, is_error: bool = False, tool_use_id: str | None = None) -> None:
        self._set(content=content, is_error=is_error, tool_use_id=tool_use_id)


class Interrupt(Value):
    """The user interrupted the turn (Esc); `text` is e.g. `[Request interrupted by user]`."""

    _fields = ("text",)
    text: str

    def __init__(self, text: str) -> None:
        self._set(text=text)


Item = Text | Thinking | ToolUse | ToolResult | Interrupt


class Turn(Value):
    """One prompt and everything the assistant did for it, in transcript order.

    `synthetic` marks prompts nobody typed (a background task's `<task-notification>`). `stop_reason` is
    the one on the turn's last assistant line.
    """

    _fields = ("prompt", "prompt_id", "items", "synthetic", "uuid", "timestamp", "stop_reason")
    prompt: str
    prompt_id: str | None
    items: tuple[Item, ...]
    synthetic: bool
    uuid: str | None
    timestamp: str | None
    stop_reason: str | None

    def __init__(self, prompt: str, prompt_id: str | None, items: tuple[Item, ...], synthetic: bool, uuid: str | None = None, timestamp: str | None = None, stop_reason: str | None = None) -> None:
        self._set(prompt=prompt, prompt_id=prompt_id, items=items, synthetic=synthetic, uuid=uuid, timestamp=timestamp, stop_reason=stop_reason)

    @property
    def complete(self) -> bool:
        """Whether the transcript already shows the end of this turn.

        True when the turn ends in an interrupt, or in assistant text whose message did not stop for a
        tool call. Claude Code can fire Stop before the closing message reaches the file, so a reader
        racing the Stop event can use this to tell whether to read again.
        """
        if not self.items:
            return False
        last = self.items[-1]
        if isinstance(last, Interrupt):
            return True
        return isinstance(last, Text) and self.stop_reason != "tool_use"

    @property
    def api_error(self) -> str | None:
        """The error type when the turn ended in an API error (its last item is Claude Code's synthetic
        error message), else None. Releases before StopFailure (2.1.78) leave only this to tell."""
        last = self.items[-1] if self.items else None
        return last.error if isinstance(last, Text) else None




class _Builder:
    """A turn being collected (mutable while walking the lines, frozen into a Turn at the end)."""

    def __init__(self, entry: Mapping[str, Any], prompt: str, synthetic: bool) -> None:
        self.prompt = prompt
        self.prompt_id = _str_or_none(entry.get("promptId"))
        self.synthetic = synthetic
        self.uuid = _str_or_none(entry.get("uuid"))
        self.timestamp = _str_or_none(entry.get("timestamp"))
        self.items: list[Item] = []
        self.stop_reason: str | None = None

    def freeze(self) -> Turn:
        return Turn(
            prompt=self.prompt,
            prompt_id=self.prompt_id,
            items=tuple(self.items),
            synthetic=self.synthetic,
            uuid=self.uuid,
            timestamp=self.timestamp,
            stop_reason=self.stop_reason,
        )


def turns(entries: Entries) -> list[Turn]:
    """Split the conversation into turns, oldest first.

    A turn starts at a prompt: a `user` line whose content is a string or text/image blocks and that is
    not a tool result, an `isMeta` line, a compact summary, an interrupt notice, or a slash-command /
    local-command / `!` bash line. Task-notification prompts start turns marked `synthetic`.

    A compact summary ends the current turn, and so does a slash command of another prompt; a slash
    command the model then answers (a custom command or skill) becomes a turn whose prompt is
    `/name args`, while one it does not answer (`/compact`, `/model`) leaves no turn. Lines before the
    first prompt, non-conversation lines, and duplicate lines (same `uuid`) are ignored. Sidechain
    (subagent) lines are ignored unless every conversation line is one, as in a subagent's own file.
    """
    convo = [
        e
        for e in _entry_list(entries)
        if isinstance(e, Mapping) and e.get("type") in ("user", "assistant")
    ]
    # Older versions wrote subagent lines into the main file; a subagent file holds nothing else.
    if any(not e.get("isSidechain") for e in convo):
        convo = [e for e in convo if not e.get("isSidechain")]
    walk = _Walk()
    seen: set[str] = set()
    for entry in convo:
        uuid = entry.get("uuid")
        if isinstance(uuid, str):
            if uuid in seen:
                continue
            seen.add(uuid)
        if entry.get("type") == "assistant":
            walk.assistant(entry)
        else:
            walk.user(entry)
    walk.close()
    return walk.done


class _Walk:
    """turns()' walk over the conversation lines: the turn being collected, and the one a slash command
    of its own prompt would become if the assistant answered it (``pending``)."""

    def __init__(self) -> None:
        self.done: list[Turn] = []
        self.current: _Builder | None = None
        self.pending: _Builder | None = None

    def close(self) -> None:
        if self.current is not None:
            self.done.append(self.current.freeze())
        self.current = None

    def assistant(self, entry: Mapping[str, Any]) -> None:
        if self.current is None and self.pending is not None:
            self.current, self.pending = self.pending, None
        if self.current is not None:
            _add_assistant(self.current, entry)

    def user(self, entry: Mapping[str, Any]) -> None:
        kind, text = _classify_user(entry)
        if kind in ("prompt", "synthetic"):
            self.close()
            self.pending = None
            self.current = _Builder(entry, text, synthetic=kind == "synthetic")
        elif kind == "tool_result" and self.current is not None:
            self.current.items.extend(_tool_results(entry))
        elif kind == "interrupt" and self.current is not None:
            self.current.items.append(Interrupt(text.strip()))
        elif kind == "compact":
            self.close()
            self.pending = None
        elif kind == "command":
            self.command(entry, text)

    def command(self, entry: Mapping[str, Any], text: str) -> None:
        prompt_id = _str_or_none(entry.get("promptId"))
        # Without a promptId of its own (older versions, or one run inside this turn such as a
        # skill the model invoked) the line cannot be told apart from the turn: leave the turn alone.
        if prompt_id is None or (self.current is not None and prompt_id == self.current.prompt_id):
            return
        self.close()
        name = _command_prompt(text)
        if self.pending is not None and self.pending.prompt_id == prompt_id:
            # Caveat, name and stdout lines of one command share its promptId.
            if name and not self.pending.prompt.startswith("/"):
                self.pending.prompt = name
            return
        self.pending = _Builder(entry, name or text, synthetic=False)


def last_turn(entries: Entries, *, include_synthetic: bool = True) -> Turn | None:
    """The last turn, or None; `include_synthetic=False` skips task-notification turns."""
    for turn in reversed(turns(entries)):
        if include_synthetic or not turn.synthetic:
            return turn
    return None


def turn_after(entries: Entries, prompt_id: str | None = None) -> Turn | None:
    """The turn of a prompt among lines read from where the transcript ended before it was sent.

    With a ``prompt_id`` (Claude Code 2.1.196 or so and later), the turn with that ``promptId``; without
    one, or when no turn has it, the first turn whose prompt is not synthetic: a background task's
    ``<task-notification>`` turn can start between the send and the prompt's own line, an earlier turn
    cannot (it is before the offset).
    """
    found = turns(entries)
    if prompt_id:
        for turn in found:
            if turn.prompt_id == prompt_id:
                return turn
    return next((turn for turn in found if not turn.synthetic), None)


def turn_for_prompt(entries: Entries, prompt_id: str) -> Turn | None:
    """The turn whose prompt line has `promptId == prompt_id` (the hooks' `prompt_id`), or None."""
    for turn in reversed(turns(entries)):
        if turn.prompt_id == prompt_id:
            return turn
    return None


def final_text(turn: Turn | None) -> str:
    """The assistant's final reply in a turn: its last text block, joined with the other text blocks of
    the same API message (blank line between them); "" when the turn has no text."""
    if turn is None:
        return ""
    texts = [item for item in turn.items if isinstance(item, Text)]
    if not texts:
        return ""
    last = texts[-1]
    if last.message_id is None:
        return last.text
    return "\n\n".join(t.text for t in texts if t.message_id == last.message_id)


def _entry_list(entries: Entries) -> Iterable[Mapping[str, Any]]:
    return entries.entries if isinstance(entries, Transcript) else entries


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _message_content(entry: Mapping[str, Any]) -> Any:
    message = entry.get("message")
    return message.get("content") if isinstance(message, Mapping) else None


def _classify_user(entry: Mapping[str, Any]) -> tuple[str, str]:
    """What a user line is: prompt, synthetic, tool_result, interrupt, command, compact or skip."""
    if entry.get("isCompactSummary"):
        return "compact", ""
    # isMeta lines are context the CLI adds (caveats, skill bodies); they belong to no one's prompt.
    if entry.get("isMeta") or entry.get("isVisibleInTranscriptOnly"):
        return "skip", ""
    content = _message_content(entry)
    if isinstance(content, list) and any(
        isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content
    ):
        return "tool_result", ""
    text = _flatten(content) if isinstance(content, (str, list)) else ""
    head = text.lstrip()
    if not head:
        return "skip", ""
    if head.startswith(_COMMAND_PREFIXES):
        return "command", text
    if head.startswith(_INTERRUPT_PREFIX):
        return "interrupt", text
    origin = entry.get("origin")
    origin_kind = origin.get("kind") if isinstance(origin, Mapping) else None
    if (
        origin_kind == "task-notification"
        or entry.get("promptSource") == "system"
        or head.startswith(SYNTHETIC_PROMPT_PREFIX)
    ):
        return "synthetic", text
    return "prompt", text


def _command_prompt(text: str) -> str:
    """`/name args` from a `<command-name>…</command-name><command-args>…</command-args>` line, or ""."""
    name = _between(text, "<command-name>", "</command-name>").strip()
    if not name:
        return ""
    if not name.startswith("/"):
        name = "/" + name
    args = _between(text, "<command-args>", "</command-args>").strip()
    return f"{name} {args}" if args else name


def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i += len(start)
    j = text.find(end, i)
    return text[i:] if j < 0 else text[i:j]


def _flatten(content: Any) -> str:
    """Text of a content value that may be null, a string, a block, or a list of blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        return str(content)
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping):
            kind = block.get("type")
            if kind == "text":
                parts.append(_str_or_none(block.get("text")) or "")
            elif kind == "image":
                parts.append("[image]")
            elif isinstance(kind, str):
                parts.append(f"[{kind}]")
    return "\n".join(parts)


def _tool_results(entry: Mapping[str, Any]) -> list[Item]:
    content = _message_content(entry)
    results: list[Item] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, Mapping) and block.get("type") == "tool_result":
            results.append(
                ToolResult(
                    content=_flatten(block.get("content")),
                    is_error=block.get("is_error") is True,
                    tool_use_id=_str_or_none(block.get("tool_use_id")),
                )
            )
    return results


def _add_assistant(turn: _Builder, entry: Mapping[str, Any]) -> None:
    message = entry.get("message")
    if not isinstance(message, Mapping):
        return
    message_id = _str_or_none(message.get("id"))
    content = message.get("content")
    blocks: Iterable[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else (
        content if isinstance(content, list) else ()
    )
    added = False
    for block in blocks:
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind == "text":
            error = None
            if entry.get("isApiErrorMessage"):
                error = _str_or_none(entry.get("error")) or "unknown"
            turn.items.append(Text(_flatten(block.get("text")), message_id, error))
        elif kind == "thinking":
            turn.items.append(Thinking(_flatten(block.get("thinking"))))
        elif kind == "redacted_thinking":
            turn.items.append(Thinking("", redacted=True))
        elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
            name = _str_or_none(block.get("name")) or "?"
            turn.items.append(ToolUse(name, block.get("input"), _str_or_none(block.get("id"))))
        elif isinstance(kind, str) and kind.endswith("_tool_result"):
            # Server-side tools (web search, code execution) put their results in the assistant message.
            turn.items.append(
                ToolResult(_flatten(block.get("content")), False, _str_or_none(block.get("tool_use_id")))
            )
        else:
            continue
        added = True
    if added:
        turn.stop_reason = _str_or_none(message.get("stop_reason"))


# --------------------------------------------------------------------------------------------------
# The API call in flight, from the end of the transcript



class ApiState(Value):
    """What the end of a transcript says about the turn's API calls.

    Claude Code writes one `api-request` line per request it sends, and the response's `assistant` lines
    after it; a failed request leaves no line, and the retry writes another `api-request` line.
    `attempts`: the requests sent since the last conversation line, i.e. of the call still waiting for its
    response (0 when none is pending, e.g. while a tool runs). When the last conversation line is the
    synthetic API error message (the call gave up), `error` is its type, `message` its text and `attempts`
    the requests that call made.
    """

    _fields = ("attempts", "error", "message")
    attempts: int
    error: str | None
    message: str | None

    def __init__(self, attempts: int = 0, error: str | None = None, message: str | None = None) -> None:
        self._set(attempts=attempts, error=error, message=message)

    @property
    def retrying(self) -> bool:
        """More than one request sent for the call in flight, none answered yet."""
        return self.error is None and self.attempts > 1


def api_state(newest_first: Iterable[Mapping[str, Any]]) -> ApiState:
    """Fold transcript lines, newest first, into an ApiState (reads only as far back as it needs)."""
    attempts = 0
    failed: Mapping[str, Any] | None = None
    for entry in newest_first:
        kind = entry.get("type")
        if kind == "api-request":
            attempts += 1
            continue
        if kind not in ("user", "assistant") or entry.get("isSidechain"):
            continue
        if failed is None and kind == "assistant" and entry.get("isApiErrorMessage"):
            failed, attempts = entry, 0  # count the failed call's requests, before it
            continue
        break
    if failed is None:
        return ApiState(attempts)
    message = final_text(Turn("", None, tuple(_assistant_items(failed)), False))
    return ApiState(attempts, _str_or_none(failed.get("error")) or "unknown", message or None)


def _assistant_items(entry: Mapping[str, Any]) -> list[Item]:
    builder = _Builder({}, "", False)
    _add_assistant(builder, entry)
    return builder.items


# --------------------------------------------------------------------------------------------------
# Markdown


def turn_markdown(turn: Turn, full: bool = False) -> str:
    """Render a turn as markdown (SPEC §3 read-turn); tool results show 5 lines unless `full`."""
    blocks = [f"**Prompt:** {turn.prompt}"]
    for item in turn.items:
        if isinstance(item, Text):
            if item.text.strip():
                blocks.append(item.text.strip("\n"))
        elif isinstance(item, Thinking):
            body = "[redacted]" if item.redacted else item.text.strip("\n")
            if body.strip():
                blocks.append(_quote(f"**Thinking:** {body}"))
        elif isinstance(item, ToolUse):
            blocks.append(f"**Tool: {item.name}**\n{_fence(_json(item.input), 'json')}")
        elif isinstance(item, ToolResult):
            label = "**Tool Error:**" if item.is_error else "**Result:**"
            blocks.append(f"{label}\n{_fence(_result_body(item.content, full))}")
        elif isinstance(item, Interrupt):
            blocks.append(f"*{item.text}*")
    return "\n\n".join(blocks) + "\n"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def _json(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _result_body(content: str, full: bool) -> str:
    # Trailing newlines are not lines of output; the fence supplies the line end.
    content = content.rstrip("\n")
    if not content.strip():
        return "(no output)"
    lines = content.split("\n")
    if full or len(lines) <= RESULT_PREVIEW_LINES:
        return content
    return "\n".join(lines[:RESULT_PREVIEW_LINES]) + f"\n... ({len(lines)} lines total)"


def _fence(body: str, lang: str = "") -> str:
    # A fence longer than any backtick run inside keeps tool output containing ``` from closing it early.
    longest = run = 0
    for ch in body:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{body}\n{ticks}"
