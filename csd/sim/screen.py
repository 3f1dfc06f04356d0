"""What the simulated worker shows in its terminal: the screen (header, history, queued prompts, the input line,
the footer), the start-up dialogs with their exact texts, and the terminal itself (raw mode, bracketed paste)."""

from __future__ import annotations

import asyncio
import os
import re
import termios
import textwrap
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from csd.sim.keys import InputBox, Key


def model_display_name(model: str) -> str:
    """claude-opus-5-5 -> Opus 5.5 (the header's style); other names as they are."""
    m = re.fullmatch(r"claude-([a-z]+)-(\d+)(?:-(\d{1,2}))?(?:-\d{8})?", model)
    if m is None:
        return model
    return m.group(1).capitalize() + " " + m.group(2) + (f".{m.group(3)}" if m.group(3) else "")


class Terminal:
    """The controlling terminal: raw mode, bracketed paste, whole-screen redraws; never raises on a dead tty."""

    def __init__(self, fd_in: int = 0, fd_out: int = 1, clear_redraw: bool = False) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self.clear_redraw = clear_redraw
        self._saved: list[Any] | None = None
        self._rows_drawn = 0

    def enter(self) -> None:
        try:
            self._saved = termios.tcgetattr(self.fd_in)
            tty.setraw(self.fd_in, termios.TCSANOW)
        except termios.error:
            self._saved = None
        self.write("\x1b[?2004h")

    def restore(self) -> None:
        # Leave the cursor under the last drawn row so what follows (a shell prompt) does not overwrite it.
        self.write(f"\x1b[?2004l\x1b[{self._rows_drawn + 1};1H\x1b[?25h")
        if self._saved is not None:
            try:
                termios.tcsetattr(self.fd_in, termios.TCSADRAIN, self._saved)
            except termios.error:
                pass
            self._saved = None

    def size(self) -> tuple[int, int]:
        try:
            s = os.get_terminal_size(self.fd_out)
            return max(s.columns, 20), max(s.lines, 8)
        except OSError:
            return 80, 24

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        try:
            while data:
                n = os.write(self.fd_out, data)
                data = data[n:]
        except OSError:
            pass  # the pane is gone (kill-session); the SIGHUP handler ends the program

    def draw(self, rows: list[str], cursor: tuple[int, int] | None) -> None:
        out = ["\x1b[?25l" + ("\x1b[H\x1b[2J" if self.clear_redraw else "")]
        for r, row in enumerate(rows):
            out.append(f"\x1b[{r + 1};1H{row}\x1b[K")
        out.append(f"\x1b[{len(rows) + 1};1H\x1b[J")
        self._rows_drawn = len(rows)
        if cursor is not None:
            out.append(f"\x1b[{cursor[0] + 1};{cursor[1] + 1}H\x1b[?25h")
        self.write("".join(out))


def wrap_rows(text: str, width: int, first: str, cont: str, max_rows: int | None = None) -> list[str]:
    """Hard-wrap text to width with a prefix on the first row and an indent on the others."""
    rows: list[str] = []
    avail = max(width - len(first), 8)
    for line in text.split("\n"):
        if not line:
            rows.append("")
            continue
        while line:
            rows.append(line[:avail])
            line = line[avail:]
    if not rows:
        rows = [""]
    if max_rows is not None and len(rows) > max_rows:
        hidden = len(rows) - (max_rows - 1)
        rows = rows[:max_rows - 1] + [f"… +{hidden} lines"]
    return [(first if i == 0 else cont) + r for i, r in enumerate(rows)]


TRUST_DIALOG = (
    "Accessing workspace:",
    "",
    "{cwd}",
    "",
    "Quick safety check: Is this a project you created or one you trust? (Like your own code, a well-known "
    "open source project, or work from your team). If not, take a moment to review what's in this folder first.",
    "",
    "Claude Code'll be able to read, edit, and execute files here.",
    "",
    "Security guide",
)
TRUST_CHOICES = ("No, exit", "Yes, I trust this folder")
BYPASS_DIALOG = (
    "WARNING: Claude Code running in Bypass Permissions mode",
    "",
    "In Bypass Permissions mode, Claude Code will not ask for your approval before running potentially "
    "dangerous commands.",
    "This mode should only be used in a sandboxed container/VM that has restricted internet access and can "
    "easily be restored if damaged.",
    "",
    "By proceeding, you accept all responsibility for actions taken while running in Bypass Permissions mode.",
    "",
    "https://code.claude.com/docs/en/security",
)
BYPASS_CHOICES = ("No, exit", "Yes, I accept")
DIALOG_DEAF_S = 0.3  # the real dialogs drop keys for a moment after they are drawn (FACTS §3)


@dataclass
class SimDialog:
    """A start-up dialog whose default choice, 0, exits."""

    lines: tuple[str, ...]
    choices: tuple[str, ...]
    indent: str
    shown_at: float
    answer: asyncio.Future[bool]
    selected: int = 0

    def rows(self, width: int) -> list[str]:
        rows = ["─" * width]
        for line in self.lines:
            rows += textwrap.wrap(line, max(width - len(self.indent) - 1, 20),
                                  initial_indent=self.indent, subsequent_indent=self.indent) or [""]
        rows.append("")
        for i, choice in enumerate(self.choices):
            rows.append(f"{self.indent}{'❯' if i == self.selected else ' '} {choice}")
        rows += ["", f"{self.indent}Enter to confirm · Esc to cancel"]
        return rows

    def on_key(self, key: Key) -> None:
        """Up/Down choose, Enter answers (True for the last choice, the one that goes on), Esc and C-c exit."""
        if time.monotonic() - self.shown_at < DIALOG_DEAF_S or self.answer.done():
            return
        if key.kind == "up":
            self.selected = max(0, self.selected - 1)
        elif key.kind == "down":
            self.selected = min(len(self.choices) - 1, self.selected + 1)
        elif key.kind == "enter":
            self.answer.set_result(self.selected == len(self.choices) - 1)
        elif key.kind in ("esc", "ctrl_c"):
            self.answer.set_result(False)


@dataclass(frozen=True)
class Frame:
    """What the main screen shows besides the history: the queue, the turn, the agents, the input line."""

    queued: list[str]  # the queued prompts and commands, as shown
    busy: bool  # a turn is running and has not reached its Stop
    agents: int  # background agents still running
    box: InputBox


class Screen:
    """The simulated TUI's screen: a dialog, or the main view (header, history, queue, input line, footer)."""

    def __init__(self, term: Terminal, version: str, model: str, cwd: str, bypass: bool) -> None:
        self.term = term
        self.version = version
        self.model = model
        self.cwd = cwd
        self.bypass = bypass  # bypassPermissions mode: the footer says so
        self.mode = "starting"  # starting | dialog | main | exiting
        self.dialog: SimDialog | None = None
        self.history: list[str] = []
        self.notice = ""
        self.frame: Callable[[], Frame] | None = None  # set by the worker: what the main view shows now

    def add_history(self, prefix: str, text: str, max_rows: int = 12, gap: bool = True) -> None:
        width, _ = self.term.size()
        self.history += wrap_rows(text[:4000], width, prefix, " " * len(prefix), max_rows) + ([""] if gap else [])
        del self.history[:-500]
        self.redraw()

    def hook_failed(self, event: str, line: str) -> None:
        self.history += [f"  ⎿  {event} hook failed", f"     {line}"]
        self.redraw()

    def header(self) -> list[str]:
        return ["", f" ▐▛███▜▌   Claude Code v{self.version} (simulated)",
                f"▝▜█████▛▘  {model_display_name(self.model)} · API Usage Billing", f"  ▘▘ ▝▝    {self.cwd}", ""]

    def redraw(self) -> None:
        width, height = self.term.size()
        if self.mode == "dialog" and self.dialog is not None:
            self.term.draw([r[:width] for r in self.dialog.rows(width)][:height], None)
            return
        if self.mode != "main" or self.frame is None:
            return
        frame = self.frame()
        bottom: list[str] = []
        for shown in frame.queued:
            bottom += wrap_rows(shown, width, "❯ ", "  ", 2) + ["  ⎿  Queued · ctrl+x ctrl+s to send now", ""]
        if frame.busy:
            bottom += ["✻ Working…", ""]
        elif frame.agents:
            plural = "s" if frame.agents != 1 else ""
            bottom += [f"✻ Waiting for {frame.agents} background agent{plural} to finish", ""]
        box = frame.box
        # The real input line is ❯ + a no-break space (U+00A0); an empty box with queued prompts shows a hint.
        shown_box = box.text if box.text or not frame.queued else "Press up to edit queued messages"
        prompt = "!\u00a0" if box.mode == "shell" else "❯\u00a0"
        box_rows = wrap_rows(shown_box, width, prompt, "  ", 8)
        bottom += ["─" * width, *box_rows, "─" * width, self.footer(frame)]
        if self.notice:
            bottom.append(f"  {self.notice}")
        room = max(height - len(bottom), 0)
        top = (self.header() + self.history)[-room:] if room else []
        rows = [r[:width] for r in (top + bottom)][-height:]
        # The cursor sits after the last input row, which is followed by a rule, the footer and the notice.
        cursor_row = max(len(rows) - 3 - (1 if self.notice else 0), 0)
        cursor_col = len(rows[cursor_row]) if shown_box == box.text else 2  # at the start of a hint
        self.term.draw(rows, (cursor_row, min(cursor_col, width - 1)))

    def footer(self, frame: Frame) -> str:
        if frame.box.mode == "shell":
            footer = "  ! for shell mode"
        elif self.bypass:
            footer = "  ⏵⏵ bypass permissions on (shift+tab to cycle)"
        else:
            footer = "  ? for shortcuts"
        if frame.busy:
            footer += " · esc to interrupt"
        if frame.agents:
            footer += " · /tasks to see subagents"
        return footer
