"""What keys do on the simulated worker's main screen, as in 2.1.330: edit the input line, submit a prompt (or a
slash command, or a bash-mode command), interrupt the running turn, clear the line, exit."""

from __future__ import annotations

import time
from collections.abc import Callable

from csd.sim.hooks import HookRunner
from csd.sim.keys import SLASH_COMMANDS, SLASH_WORD, InputBox, Key
from csd.sim.runtime import Runtime
from csd.sim.screen import Screen
from csd.sim.session import Session
from csd.sim.turnqueue import TurnQueue
from csd.sim.turns import Item


class Keyboard:
    """The main screen's input line and what its keys do."""

    def __init__(self, session: Session, hooks: HookRunner, screen: Screen, queue: TurnQueue, runtime: Runtime,
                 shutdown: Callable[[str, int], None]) -> None:
        self.session = session
        self.hooks = hooks
        self.screen = screen
        self.queue = queue
        self.runtime = runtime
        self.shutdown = shutdown  # (SessionEnd reason, exit status)
        self.box = InputBox()
        self.ready_at = float("inf")  # Enter does nothing before this (monotonic) time
        self.swallowed_text: str | None = None
        self.ctrl_c_at: float | None = None
        self.esc_at: float | None = None

    def on_key(self, key: Key) -> None:
        if key.kind != "ctrl_c":
            self.ctrl_c_at = None
        if key.kind != "esc":
            self.esc_at = None
        self.screen.notice = ""
        box = self.box
        if key.kind in ("text", "paste"):
            box.insert(key.text, pasted=key.kind == "paste", rows=self.screen.term.size()[1])
        elif key.kind == "newline":
            box.insert("\n")
        elif key.kind == "backspace":
            box.backspace()
        elif key.kind == "delete":
            box.delete()
        elif key.kind in ("left", "right", "ctrl_a", "ctrl_e"):
            box.move(key.kind)
        elif key.kind == "ctrl_u":
            box.kill_line_before()
        elif key.kind == "enter":
            self.on_enter()
        elif key.kind == "esc":
            self.on_escape()
        elif key.kind == "ctrl_c":
            self.on_ctrl_c()

    def on_escape(self) -> None:
        box = self.box
        if self.queue.turn_running():
            self.interrupt()
        elif box.text and self.esc_at is not None and time.monotonic() - self.esc_at < 1.0:
            box.clear()  # like the real TUI, a double Esc clears the input box (bash mode stays)
            self.esc_at = None
        elif box.text:
            self.esc_at = time.monotonic()
            self.screen.notice = "esc again to clear"

    def on_ctrl_c(self) -> None:
        box = self.box
        if self.queue.turn_running():
            self.interrupt()
        elif self.ctrl_c_at is not None and time.monotonic() - self.ctrl_c_at < 2.0 and not box.text:
            self.shutdown("prompt_input_exit", 0)
        else:
            # like the real TUI: clears a non-empty line and arms the exit all the same
            box.clear()
            self.ctrl_c_at = time.monotonic()
            self.screen.notice = "Press Ctrl-C again to exit"

    def interrupt(self) -> None:
        item = self.queue.interrupt()
        if item is not None and item.kind == "prompt":
            # The interrupted prompt comes back into the input line, above what was being typed.
            self.box.set(item.text + ("\n" + self.box.text if self.box.text else ""))

    def on_enter(self) -> None:
        if time.monotonic() < self.ready_at:
            return  # not ready yet: like the real TUI the Enter is lost and the text stays
        if self.box.enter_is_newline():
            return
        text = self.box.submitted()
        if not text.strip():
            return
        if "SWALLOW-ENTER" in text and self.swallowed_text != text:
            self.swallowed_text = text
            return
        self.swallowed_text = None
        shell = self.box.mode == "shell"
        self.box.clear()
        self.box.mode = "prompt"
        if shell:
            self.submit_shell(text)
        else:
            self.submit(text)

    def submit_shell(self, command: str) -> None:
        """Bash mode, as 2.1.330: the command runs, its input and output become user lines, and the model answers
        them in a turn that fires Stop but no UserPromptSubmit."""
        self.queue.cancel_idle()
        self.queue.add(Item("shell", command, self.session.new_prompt_id()))

    def submit(self, text: str) -> None:
        self.queue.cancel_idle()
        command = text.split(None, 1)
        word = command[0] if command else ""
        prompt_id = self.session.new_prompt_id()
        if word in ("/exit", "/quit"):
            self.shutdown("prompt_input_exit", 0)
        elif word in ("/clear", "/compact"):
            self.queue.add(Item(word[1:], command[1] if len(command) > 1 else "", prompt_id))
        elif SLASH_WORD.fullmatch(word) and word not in SLASH_COMMANDS:
            # Observed: no hook fires, nothing reaches the transcript; a path such as /tmp/x is a prompt
            self.screen.add_history("● ", f"Unknown command: {word}")
            if len(command) > 1:
                self.screen.add_history("● ", f"Args from unknown skill: {command[1]}")
        else:
            self.submit_prompt(text, prompt_id)

    def submit_prompt(self, text: str, prompt_id: str) -> None:
        item = Item("prompt", text, prompt_id)
        if self.queue.current is None and not self.queue.items:
            # Starts at once: its user line is on disk before UserPromptSubmit fires.
            self.session.transcript.user_prompt(text, prompt_id)
            item.user_line_written = True
        # UserPromptSubmit fires at submit time even while busy; the turn itself waits its turn.
        item.ups_task = self.runtime.spawn(self.hooks.fire("UserPromptSubmit", {
            **self.session.turn_fields(prompt_id), "hook_event_name": "UserPromptSubmit", "prompt": text}))
        self.queue.add(item)
