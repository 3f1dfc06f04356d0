"""The simulated worker's tasks: one task group owns every task it starts, so none is forgotten and a failing one
ends the program visibly (exit 70 and its traceback) instead of vanishing or hanging a controller's wait."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Runtime:
    """The task group of a running simulated worker, and whether it is shutting down."""

    def __init__(self) -> None:
        self.exiting = False
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def attach(self, group: asyncio.TaskGroup) -> None:
        self._group = group

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start ``coro`` in the task group (its failure fails the group, hence the program)."""
        assert self._group is not None, "spawn() before the task group is open"
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_all(self) -> None:
        """Cancel what is still running (the program is leaving); the task group waits for them."""
        for task in list(self._tasks):
            task.cancel()
