"""The simulated worker's keyboard and input line: terminal input decoded into keys (bracketed pastes kept whole),
and Claude Code 2.1.330's input box as it edits them (placeholders for big pastes, bash mode, C-a/C-e/C-u, ...).

Pure and standard library only (plus csd.prompt, which is too).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from csd.prompt import CHUNK_UNITS, PASTE_END, PASTE_START  # the facts csd's send relies on: one home


_CSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
_CSI_PARTIAL_RE = re.compile(r"\x1b\[[0-?]*[ -/]*")
_PRINTABLE_RE = re.compile(r"[^\x00-\x1f\x7f]+")
_CSI_KEYS = {"A": "up", "B": "down", "C": "right", "D": "left", "Z": "backtab", "3~": "delete"}
_CTRL_KEYS = {"\r": "enter", "\n": "newline", "\x7f": "backspace", "\x08": "backspace",
              "\x15": "ctrl_u", "\x03": "ctrl_c", "\x01": "ctrl_a", "\x05": "ctrl_e"}


@dataclass(frozen=True)
class Key:
    """One decoded input event: a key, or a run of typed or pasted text."""

    kind: str  # text | paste | enter | newline | backspace | ctrl_u | ctrl_c | esc | up | down | ...
    text: str = ""


class KeyParser:
    """Turns terminal input (already UTF-8 decoded) into keys, bracketed pastes kept whole."""

    def __init__(self) -> None:
        self._buf = ""
        self._paste: list[str] | None = None

    @property
    def pending_escape(self) -> bool:
        """True when the input so far ends in a lone ESC that may be the Escape key or a sequence start."""
        return self._paste is None and self._buf == "\x1b"

    def flush_escape(self) -> list[Key]:
        """Called when no byte followed a lone ESC for a while: it was the Escape key."""
        if self.pending_escape:
            self._buf = ""
            return [Key("esc")]
        return []

    def feed(self, data: str) -> list[Key]:
        self._buf += data
        keys: list[Key] = []
        while self._buf:
            if self._paste is not None:
                done = self._feed_paste(keys)
            elif self._buf[0] == "\x1b":
                done = self._feed_escape(keys)
            else:
                done = self._feed_plain(keys)
            if done:
                break  # the rest may be the start of a sequence: wait for more input
        return keys

    def _feed_paste(self, keys: list[Key]) -> bool:
        """Inside a bracketed paste: collect up to its end marker; True when the input ran out first."""
        assert self._paste is not None
        buf = self._buf
        end = buf.find(PASTE_END)
        if end < 0:
            # Hold back a tail that could be the start of the end marker split across reads.
            keep = next((k for k in range(min(len(PASTE_END) - 1, len(buf)), 0, -1)
                         if PASTE_END.startswith(buf[-k:])), 0)
            self._paste.append(buf[:len(buf) - keep])
            self._buf = buf[len(buf) - keep:]
            return True
        self._paste.append(buf[:end])
        self._buf = buf[end + len(PASTE_END):]
        # Observed (2.1.330): each CR in a paste is a line break of its own (a CRLF arrives as two), and a
        # tab becomes four spaces.
        text = "".join(self._paste).replace("\r", "\n").replace("\t", "    ")
        self._paste = None
        keys.append(Key("paste", text))
        return False

    def _feed_escape(self, keys: list[Key]) -> bool:
        """An ESC: a CSI or SS3 key, a paste's start, or the Escape key; True when more input is needed."""
        buf = self._buf
        if len(buf) == 1:
            return True  # maybe the start of a sequence: wait for more, or flush_escape()
        if buf[1] == "[":
            m = _CSI_RE.match(buf)
            if m is None:
                if _CSI_PARTIAL_RE.fullmatch(buf):
                    return True  # incomplete sequence: wait for the rest
                keys.append(Key("esc"))
                self._buf = buf[1:]
                return False
            seq = m.group(0)
            self._buf = buf[len(seq):]
            if seq == PASTE_START:
                self._paste = []
            else:
                keys.append(Key(_CSI_KEYS.get(seq[2:].lstrip("1;"), "unknown")))
            return False
        if buf[1] == "O":
            if len(buf) < 3:
                return True
            keys.append(Key(_CSI_KEYS.get(buf[2], "unknown")))
            self._buf = buf[3:]
            return False
        keys.append(Key("esc"))
        self._buf = buf[1:]
        return False

    def _feed_plain(self, keys: list[Key]) -> bool:
        """A control key or a run of printable text."""
        buf = self._buf
        if buf[0] in _CTRL_KEYS:
            keys.append(Key(_CTRL_KEYS[buf[0]]))
            self._buf = buf[1:]
            return False
        m = _PRINTABLE_RE.match(buf)
        if m is None:
            self._buf = buf[1:]  # other control characters (tab, C-a, ...) do nothing here
            return False
        keys.append(Key("text", m.group(0)))
        self._buf = buf[m.end():]
        return False


#: Observed (2.1.330): one paste longer than this (UTF-16 units) becomes a "[Pasted text #N]" placeholder.
PASTE_LIMIT = CHUNK_UNITS
#: Slash commands the simulated worker knows; any other ``/word`` is refused with "Unknown command: /word".
SLASH_COMMANDS = frozenset({"/exit", "/quit", "/clear", "/compact"})
#: A first word that is a command name (``/word``), not a path such as ``/tmp/x`` (which is sent as a prompt).
SLASH_WORD = re.compile(r"/[^/\s]+")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def paste_placeholder_limit(rows: int) -> int:
    """Observed: a paste with more line breaks than min(rows - 10, 2) becomes a placeholder."""
    return min(rows - 10, 2)


class InputBox:
    """Claude Code's input line as 2.1.330 edits it (each rule observed in tmux, tests/e2e/test_prompt_delivery.py):

    * a paste over PASTE_LIMIT characters, or with more line breaks than ``paste_placeholder_limit(rows)``, shows as
      ``[Pasted text #N]`` and is submitted wrapped in ``<pasted_content id=…>``;
    * ``!`` typed or pasted first into an empty line switches to bash mode (the ``!`` is not kept); Backspace on an
      empty bash-mode line leaves it;
    * C-a / C-e go to the start / end of the cursor's line, Left / Right / Delete / Backspace as usual, C-u deletes
      back to the start of the line (at its start: the line break before it), Esc Esc clears the text (the mode stays);
    * Enter right after a backslash replaces it with a line break instead of submitting;
    * the submitted text has its trailing whitespace trimmed (leading whitespace is kept).
    """

    def __init__(self, paste_id: str = "") -> None:
        self.text = ""
        self.cursor = 0
        self.mode = "prompt"  # prompt | shell
        self.pastes: dict[str, str] = {}
        self.paste_id = paste_id or str(uuid.uuid4().int % 9000 + 1000)

    def set(self, text: str) -> None:
        self.text, self.cursor = text, len(text)

    def clear(self) -> None:
        self.set("")
        self.pastes.clear()

    def insert(self, text: str, pasted: bool = False, rows: int = 50) -> None:
        if not self.text and self.mode == "prompt" and text.startswith("!"):
            self.mode, text = "shell", text[1:]
        if pasted and (_utf16_len(text) > PASTE_LIMIT or text.count("\n") > paste_placeholder_limit(rows)):
            n = len(self.pastes) + 1
            lines = text.count("\n")
            token = f"[Pasted text #{n}" + (f" +{lines} lines]" if lines else "]")
            self.pastes[token] = text
            text = token
        self.text = self.text[: self.cursor] + text + self.text[self.cursor :]
        self.cursor += len(text)

    def backspace(self) -> None:
        if not self.text and self.mode == "shell":
            self.mode = "prompt"
        elif self.cursor > 0:
            self.text = self.text[: self.cursor - 1] + self.text[self.cursor :]
            self.cursor -= 1

    def delete(self) -> None:
        self.text = self.text[: self.cursor] + self.text[self.cursor + 1 :]

    def move(self, key: str) -> None:
        line_start = self.text.rfind("\n", 0, self.cursor) + 1
        if key == "left":
            self.cursor = max(0, self.cursor - 1)
        elif key == "right":
            self.cursor = min(len(self.text), self.cursor + 1)
        elif key == "ctrl_a":
            self.cursor = line_start
        elif key == "ctrl_e":
            end = self.text.find("\n", self.cursor)
            self.cursor = len(self.text) if end < 0 else end

    def kill_line_before(self) -> None:
        line_start = self.text.rfind("\n", 0, self.cursor) + 1
        start = line_start if self.cursor > line_start else max(0, self.cursor - 1)
        self.text = self.text[:start] + self.text[self.cursor :]
        self.cursor = start

    def enter_is_newline(self) -> bool:
        """``\\`` + Enter: the backslash before the cursor becomes a line break."""
        if self.cursor > 0 and self.text[self.cursor - 1] == "\\":
            self.text = self.text[: self.cursor - 1] + "\n" + self.text[self.cursor :]
            return True
        return False

    def submitted(self) -> str:
        """The text Enter submits: trailing whitespace trimmed, then each placeholder expanded as the real one does."""
        text = self.text.rstrip()
        for token, content in self.pastes.items():
            pid = self.paste_id
            text = text.replace(token, f'\n\n<pasted_content id="{pid}">\n{content}\n</pasted_content id="{pid}">\n')
        return text
