"""The running simulated worker: its parts wired together, and its lifecycle (start-up delay and dialogs,
SessionStart, terminal input, signals, SessionEnd and exit) inside the task group that owns its tasks."""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import time
import uuid
from collections.abc import Mapping

from csd.sim.agents import Agents, BgTask
from csd.sim.files import record_trust, workspace_trusted
from csd.sim.hooks import HookRunner, HookTable, StatusLine
from csd.sim.keyboard import Keyboard
from csd.sim.keys import Key, KeyParser
from csd.sim.options import DEFAULT_MODEL, ENV_EXIT_AFTER_START, Options, Tuning
from csd.sim.runtime import Runtime
from csd.sim.screen import (BYPASS_CHOICES, BYPASS_DIALOG, TRUST_CHOICES, TRUST_DIALOG, Frame, Screen, SimDialog,
                            Terminal)
from csd.sim.session import Session
from csd.sim.tools import Tools
from csd.sim.turnqueue import TurnQueue
from csd.sim.turns import Item, Turns

ESCAPE_WAIT_S = 0.03  # a lone ESC with nothing after it for this long is the Escape key


class SimWorker:
    """The running simulated TUI of one process: it wires the session, hooks, screen, tools, agents and turns
    together, and turns keys and signals into what Claude Code does with them."""

    def __init__(self, opts: Options, env: Mapping[str, str], hooks: HookTable, session_id: str,
                 source: str, skip_bypass_dialog: bool, status_line: str | None = None) -> None:
        self.opts = opts
        self.env = dict(env)
        self.tuning = tuning = Tuning.from_env(env)
        self.cwd = os.getcwd()
        model = opts.model or DEFAULT_MODEL
        permission_mode = "bypassPermissions" if opts.skip_permissions else (opts.permission_mode or "default")
        self.source = source
        self.skip_bypass_dialog = skip_bypass_dialog
        self.runtime = Runtime()
        self.session = Session(tuning, self.env, self.cwd, model, permission_mode, session_id, source == "resume")
        self.screen = Screen(Terminal(clear_redraw=tuning.clear_redraw), tuning.version, model, self.cwd,
                             permission_mode == "bypassPermissions")
        self.screen.frame = self.frame
        self.hooks = HookRunner(hooks, self.session, self.env, self.runtime, self.screen.hook_failed)
        self.status_line = StatusLine(status_line, self.session, self.env, self.runtime)
        self.tools = Tools(self.session, self.hooks, self.screen, tuning, self.env)
        self.agents = Agents(self.session, self.hooks, self.screen, self.tools, self.runtime, tuning, self.env,
                             self.on_agent_finished)
        self.turns = Turns(self.session, self.hooks, self.screen, self.tools, self.agents, self.status_line, tuning)
        self.queue = TurnQueue(self.turns, self.runtime, tuning)
        self.parser = KeyParser()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.keyboard = Keyboard(self.session, self.hooks, self.screen, self.queue, self.runtime,
                                 self.begin_shutdown)
        self.session_started = False
        self.error: BaseException | None = None
        self._reader_on = False
        self._esc_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Future[int] | None = None

    # ---- lifecycle

    async def run(self) -> int:
        """Run until the program exits; its exit status (70, with ``error`` set, when the simulator failed)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._exit = loop.create_future()
        code = 70
        try:
            async with asyncio.TaskGroup() as group:
                self.runtime.attach(group)
                for sig, status in ((signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 0)):
                    loop.add_signal_handler(sig, self.begin_shutdown, "other", status)
                loop.add_signal_handler(signal.SIGWINCH, self.screen.redraw)
                self.screen.term.enter()
                self.runtime.spawn(self.startup())
                try:
                    code = await self._exit
                finally:
                    self.quiesce()
        except* Exception as failure:
            # A bug in the simulator: end the program visibly rather than hang a controller's wait.
            self.error = failure
            code = 70
        finally:
            self.tools.kill()
            self.session.transcript.close()
            self.screen.term.restore()
        return code

    def quiesce(self) -> None:
        """Leaving: take no more input, signals or timers, and cancel what still runs (the task group waits)."""
        self.runtime.exiting = True
        loop = self._loop
        if loop is not None:
            if self._reader_on:
                loop.remove_reader(self.screen.term.fd_in)
                self._reader_on = False
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGWINCH):
                loop.remove_signal_handler(sig)
        if self._esc_handle is not None:
            self._esc_handle.cancel()
        self.queue.cancel_idle()
        self.tools.kill()
        self.runtime.cancel_all()

    def finish(self, code: int) -> None:
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(code)

    def begin_shutdown(self, reason: str, code: int) -> None:
        """Exit like Claude Code: SessionEnd (once a session has started), then leave with code."""
        if self.runtime.exiting:
            return
        self.runtime.exiting = True
        self.screen.mode = "exiting"
        self.queue.stop()
        self.tools.kill()
        self.runtime.spawn(self._shutdown(reason, code))

    async def _shutdown(self, reason: str, code: int) -> None:
        try:
            if self.session_started:
                await self.hooks.fire("SessionEnd", {**self.session.common(), "hook_event_name": "SessionEnd",
                                                     "reason": reason}, reason)
                # 2.1.330 writes two cost-state lines at /exit, one when it is killed
                self.session.end(2 if reason == "prompt_input_exit" else 1)
        finally:
            self.finish(code)

    async def startup(self) -> None:
        if self.tuning.startup_delay > 0:
            await asyncio.sleep(self.tuning.startup_delay)
        if not await self.pass_dialogs():
            self.finish(1)
            return
        self.screen.mode = "main"
        self.screen.dialog = None
        self.ensure_reader()
        self.screen.redraw()
        # Set before firing so a signal during the SessionStart hooks still produces SessionEnd.
        self.session_started = True
        # The not-ready window counts from the moment SessionStart fires, not from when its hooks end: the
        # real TUI's readiness does not depend on how slow the hooks are.
        self.keyboard.ready_at = time.monotonic() + self.tuning.not_ready_s
        await self.turns.fire_session_start(self.source)
        self.status_line.schedule(0.0)
        exit_after = self.tuning.exit_after_start
        if exit_after:
            self.screen.add_history(
                "", f"csd-simworker: exiting after start with status {exit_after} ({ENV_EXIT_AFTER_START})")
            self.begin_shutdown("other", int(exit_after) if exit_after.lstrip("-").isdigit() else 1)
            return
        if self.opts.prompt:
            self.keyboard.submit(self.opts.prompt)
            self.screen.redraw()

    async def pass_dialogs(self) -> bool:
        """The workspace-trust and bypass-permissions dialogs, when they show; False when one was declined."""
        trust = self.tuning.trust_mode
        if trust == "always" or (trust == "auto" and not workspace_trusted(self.env, self.cwd)):
            if not await self.ask(TRUST_DIALOG, TRUST_CHOICES, " "):
                return False
            # Like the real CLI, which remembers the answer for this directory (always: also when forced).
            record_trust(self.env, self.cwd)
        if self.opts.skip_permissions and not self.skip_bypass_dialog:
            return await self.ask(BYPASS_DIALOG, BYPASS_CHOICES, "  ")
        return True

    async def ask(self, lines: tuple[str, ...], choices: tuple[str, ...], indent: str) -> bool:
        assert self._loop is not None
        shown = tuple(line.format(cwd=self.cwd) for line in lines)
        dialog = SimDialog(shown, choices, indent, time.monotonic(), self._loop.create_future())
        self.screen.dialog = dialog
        self.screen.mode = "dialog"
        self.ensure_reader()
        self.screen.redraw()
        return await dialog.answer

    def on_agent_finished(self, notification: str, task: BgTask) -> None:
        """A background agent finished: its <task-notification> turn waits its turn."""
        self.queue.cancel_idle()
        self.queue.add(Item("synthetic", notification, str(uuid.uuid4()), bg=task))
        self.screen.redraw()

    def frame(self) -> Frame:
        return Frame(self.queue.queued_texts(), self.queue.busy(), len(self.agents.running), self.keyboard.box)

    # ---- input

    def ensure_reader(self) -> None:
        if not self._reader_on and self._loop is not None:
            self._loop.add_reader(self.screen.term.fd_in, self.on_readable)
            self._reader_on = True

    def on_readable(self) -> None:
        assert self._loop is not None
        try:
            data = os.read(self.screen.term.fd_in, 65536)
        except OSError:
            data = b""
        if not data:
            # The pty is gone (tmux kill-session); SIGHUP usually says so first.
            self._loop.remove_reader(self.screen.term.fd_in)
            self._reader_on = False
            self.begin_shutdown("other", 129)
            return
        if self._esc_handle is not None:
            self._esc_handle.cancel()
            self._esc_handle = None
        for key in self.parser.feed(self.decoder.decode(data)):
            self.on_key(key)
        if self.parser.pending_escape:
            self._esc_handle = self._loop.call_later(ESCAPE_WAIT_S, self.on_escape_timeout)
        self.screen.redraw()

    def on_escape_timeout(self) -> None:
        self._esc_handle = None
        for key in self.parser.flush_escape():
            self.on_key(key)
        self.screen.redraw()

    def on_key(self, key: Key) -> None:
        if self.screen.mode == "dialog" and self.screen.dialog is not None:
            self.screen.dialog.on_key(key)
        elif self.screen.mode == "main":
            self.keyboard.on_key(key)
