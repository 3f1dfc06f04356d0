"""What `send` does to a prompt (pure): the text the model will get, the keystrokes that deliver it, and what the
screen says about the input line.

Measured on Claude Code 2.1.330 in tmux (tests/e2e/test_prompt_delivery.py checks each rule against the mock
API's request bodies):

* One bracketed paste of more than 800 characters or with more line breaks than min(rows - 10, 2) becomes a
  "[Pasted text #N]" placeholder and reaches the model wrapped in ``<pasted_content id=…>``. Pastes of at most
  800 characters with no line break, joined by a raw line feed (C-j, a newline in the input box), arrive
  exactly, whatever their number: 1 MB in 10 000 lines went through as one buffer (``paste-buffer -r``), but the TUI
  takes its time over many pastes (see INGEST_CHARS_PER_S), so past CSD_EXACT_PROMPT_LIMIT characters send falls
  back to one paste: fast, and wrapped.
* A paste that starts with ``!`` into an empty input line switches to bash mode and runs the text as a shell
  command. Typing ``x``, C-a, pasting ``!`` and pressing Delete leaves a literal ``!`` in prompt mode.
* ``\\`` + Enter inserts a newline instead of submitting: one Left before Enter submits a prompt ending in ``\\``.
* A pasted CR (alone or in CRLF) is a line break of its own (CRLF arrived doubled); a tab becomes four spaces;
  trailing whitespace is trimmed (leading whitespace and leading newlines are kept).
* Esc, Esc clears the input line wherever the cursor is (bash mode stays on; Backspace on an empty bash-mode
  line leaves it). Ctrl-C would clear it too, but arms "Press Ctrl-C again to exit".
* An unknown slash command fires no hook; the screen says ``Unknown command: /name``.
"""

from __future__ import annotations

import re

from csd.value import Value

PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"
#: The longest paste (in UTF-16 code units, as the TUI counts) that Claude Code keeps as typed text.
CHUNK_UNITS = 800
#: How fast Claude Code takes in a prompt typed as many pastes (measured on 2.1.330 with two busy cores: 20 000
#: characters in 5.6 s, 100 000 in 12.8 s; a single paste of 1 MB takes 1 s): send's confirmation wait grows by
#: one second per this many characters.
INGEST_CHARS_PER_S = 5000
#: The TUI swallows an Enter that comes in its first few hundred milliseconds after SessionStart, and no event
#: says when it is ready (FACTS §4, 2.1.330: Enter at the instant of SessionStart swallowed 1/38, at +0.3 s
#: and +1 s 0/20). send holds its first Enter until this long after the session_start line's timestamp; only
#: a send that comes that early waits, never a launch.
ENTER_READY_AFTER_START = 0.35
#: What Claude Code turns a tab into.
TAB = "    "
#: Keys inside the input stream (bytes a terminal sends for them).
KEY_CTRL_A = "\x01"
KEY_DELETE = "\x1b[3~"
KEY_LEFT = "\x1b[D"
#: Every control character a terminal or a TUI could act on: C0 (ESC, NUL, CR, C-u, C-c, ...) except the line
#: feed, DEL, C1 (0x9b is a one-byte CSI) and lone surrogates (argv's undecodable bytes).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
#: The input box's rules; a box taller than the screen shows "─── ↑ 5626 more ───" as its top rule (2.1.330).
_RULE = re.compile(r"^(?=.{20,}$)─{3,}(?: (?P<arrow>[↑↓]) \d+ more ─*)?$")


def clean_prompt(text: str) -> str:
    """The prompt exactly as the model will receive it: CRLF and CR become LF, a tab four spaces, every other
    control character (ESC and so every escape sequence, NUL, C1, DEL) is removed, trailing whitespace trimmed.

    One pass reaches the fixed point (``clean_prompt(clean_prompt(t)) == clean_prompt(t)``): no ESC is left, so no
    paste marker or key sequence can be rebuilt from what remains.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", TAB)
    return _CONTROL.sub("", text).rstrip()


def _units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _segments(line: str) -> list[str]:
    """``line`` cut into pieces of at most CHUNK_UNITS UTF-16 units."""
    out: list[str] = []
    start = size = 0
    for i, ch in enumerate(line):
        if size + _units(ch) > CHUNK_UNITS:
            out.append(line[start:i])
            start, size = i, 0
        size += _units(ch)
    if start < len(line):
        out.append(line[start:])
    return out


def _pasted(text: str, exact: bool) -> str:
    """``exact``: bracketed pastes of at most CHUNK_UNITS each, one per piece of a line, lines joined by a raw LF
    (C-j). Otherwise one bracketed paste (the TUI shows a placeholder and wraps the text in <pasted_content>)."""
    if not exact:
        return PASTE_START + text + PASTE_END if text else ""
    return "\n".join("".join(PASTE_START + seg + PASTE_END for seg in _segments(line)) for line in text.split("\n"))


def input_stream(text: str, shell: bool = False, exact: bool = True) -> bytes:
    """The bytes that put ``text`` (a cleaned prompt) into Claude Code's empty input line, ready for Enter.

    ``shell``: the text is a command for bash mode (it gets the leading ``!`` that switches the mode on).
    Otherwise a leading ``!`` is kept as text: ``x``, C-a, ``!``, Delete puts it there in prompt mode.
    ``exact`` False: one paste (for prompts too long to type exactly in reasonable time, see INGEST_CHARS_PER_S).
    """
    if shell:
        stream = _pasted("!" + text, exact)
    elif text.startswith("!"):
        stream = PASTE_START + "x" + PASTE_END + KEY_CTRL_A + PASTE_START + "!" + PASTE_END + KEY_DELETE + _pasted(text[1:], exact)
    else:
        stream = _pasted(text, exact)
    if text.endswith("\\"):
        stream += KEY_LEFT  # with the cursor right after a backslash, Enter would insert a newline
    return stream.encode("utf-8")


class InputLine(Value):
    """Claude Code's input box as the screen shows it. (A csd.value.Value: send starts with no ``dataclasses``.)"""

    _fields = ("mode", "text")
    mode: str  # "prompt" (❯) or "shell" (!, bash mode)
    text: str  # the rows' text, prefixes removed, trailing blanks trimmed ("…" when its top is off screen)

    def __init__(self, mode: str, text: str) -> None:
        self._set(mode=mode, text=text)

    @property
    def clean(self) -> bool:
        return self.mode == "prompt" and not self.text


def input_line(screen: str) -> InputLine | None:
    """Pure: the input box of a Claude Code screen: the rows between the last two rules, the first starting with
    ``❯`` (prompt) or ``!`` (bash mode). None when no input box is shown (a dialog, a menu)."""
    rows = screen.rstrip("\n").split("\n")
    rules = [(i, m) for i, row in enumerate(rows) if (m := _RULE.match(row.strip()))]
    if not rules:
        return None
    bottom = rules[-1][0]
    top, top_rule = rules[-2] if len(rules) > 1 else (-1, None)
    box = rows[top + 1 : bottom]
    if not box:
        return None
    first = box[0]
    if first[:1] not in ("❯", "!"):
        if top < 0 or (top_rule is not None and top_rule.group("arrow") == "↑"):
            return InputLine("prompt", "…")  # the box is taller than the screen: its first row is out of sight
        return None
    mode = "prompt" if first[0] == "❯" else "shell"
    lines = [first[2:]] + [row[2:] for row in box[1:]]
    return InputLine(mode, "\n".join(ln.rstrip().replace("\u00a0", " ") for ln in lines).strip("\n").rstrip())


def unknown_command(before: str, after: str, command: str) -> str | None:
    """Pure: the screen's own words when ``command`` (e.g. ``/notacommand``) was refused between two captures."""
    needle = f"Unknown command: {command}"
    if after.count(needle) <= before.count(needle):
        return None
    lines = [ln.strip().lstrip("●⎿ ").strip() for ln in after.splitlines()]
    at = max(i for i, ln in enumerate(lines) if needle in ln)
    words = [lines[at]]
    # Claude Code adds a line about the arguments ("Args from unknown skill: …") right after it
    for ln in lines[at + 1 : at + 4]:
        if ln.startswith("Args from unknown"):
            words.append(ln)
            break
    return " / ".join(words)
