"""The simulated worker's turn order: one item (prompt, task notification, bash command, /compact, /clear) at a
time, the running one interruptible, and the idle_prompt Notification once the queue is empty."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from csd.sim.options import Tuning
from csd.sim.runtime import Runtime
from csd.sim.turns import Item, Turns


class TurnQueue:
    """The worker's turn order: items run one at a time; Esc interrupts the running one; idle_prompt after."""

    def __init__(self, turns: Turns, runtime: Runtime, tuning: Tuning) -> None:
        self.turns = turns
        self.runtime = runtime
        self.tuning = tuning
        self.items: deque[Item] = deque()
        self.current: Item | None = None
        self.turn_task: asyncio.Task[None] | None = None
        self.runner_task: asyncio.Task[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None

    def add(self, item: Item) -> None:
        self.items.append(item)
        self.kick()

    def kick(self) -> None:
        if self.runtime.exiting:
            return
        if self.runner_task is None or self.runner_task.done():
            self.runner_task = self.runtime.spawn(self.run())

    def turn_running(self) -> bool:
        return self.turn_task is not None and not self.turn_task.done()

    def busy(self) -> bool:
        """A turn is running and has not reached its Stop yet."""
        return self.current is not None and not self.current.stopped

    def queued_texts(self) -> list[str]:
        return [text for text in (item.queued_text for item in self.items) if text is not None]

    async def run(self) -> None:
        screen = self.turns.screen
        while self.items and not self.runtime.exiting:
            item = self.items.popleft()
            self.current = item
            item.started = time.monotonic()
            self.turn_task = self.runtime.spawn(self.turns.run(item))
            screen.redraw()
            try:
                # asyncio.wait does not raise when the turn is interrupted (cancelled) by Esc; a turn that fails
                # fails the task group itself.
                await asyncio.wait({self.turn_task})
            except asyncio.CancelledError:
                self.turn_task.cancel()
                raise
            finally:
                self.current = None
            if self.turn_task.cancelled():
                screen.history += ["  ⎿  Interrupted · What should Claude do instead?", ""]
            screen.redraw()
            # Observed with 2.1.330: no idle_prompt Notification follows /clear (it does follow /compact).
            if not self.items and not self.runtime.exiting and item.kind != "clear":
                self.arm_idle()

    def interrupt(self) -> Item | None:
        """Esc or C-c during a prompt's (or task notification's) turn before its Stop: cancel it; the item."""
        item = self.current
        if item is None or not self.turn_running() or item.kind not in ("prompt", "synthetic") or item.stopped:
            return None
        assert self.turn_task is not None
        self.turn_task.cancel()
        self.turns.tools.kill()
        return item

    def stop(self) -> None:
        """The worker is exiting: no more turns, the running one cancelled."""
        self.cancel_idle()
        for task in (self.turn_task, self.runner_task):
            if task is not None:
                task.cancel()

    def arm_idle(self) -> None:
        self.cancel_idle()
        if self.tuning.idle_s > 0:
            self._idle_handle = asyncio.get_running_loop().call_later(self.tuning.idle_s, self.on_idle)

    def cancel_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def on_idle(self) -> None:
        self._idle_handle = None
        if self.runtime.exiting or self.current is not None or self.items:
            return
        session = self.turns.session
        self.runtime.spawn(self.turns.hooks.fire("Notification", {
            **session.common(), "hook_event_name": "Notification", "message": "Claude is waiting for your input",
            "notification_type": "idle_prompt"}, "idle_prompt"))
