"""The Python API: a Supervisor that also starts and ends workers (csd.lifecycle, with this supervisor).

::

    async with Fleet() as fleet:
        await fleet.launch("api", "/src/api")
        reply = await fleet.converse("api", "run the tests and summarise what failed")
        await fleet.stop("api")

Everything else (``send``, ``wait_for_turn``, ``wait_any``/``wait_all``, ``converse``, ``status``,
``read_events``, ``read_turn``) is csd.supervisor.Supervisor's; it is the CLI's engine too.
"""

from __future__ import annotations

from collections.abc import Iterable

from csd.lifecycle import start_worker, stop_worker
from csd.supervisor import Supervisor
from csd.workers import Meta, check_session_id


class Fleet(Supervisor):
    """A Supervisor that launches, adopts and stops workers itself."""

    async def launch(self, name: str, cwd: str, claude_args: Iterable[str] = ()) -> Meta:
        """Start a worker and return its meta once it can take a prompt (``csd launch NAME CWD -- ARGS``)."""
        args = list(claude_args)
        invocation = ["csd", "launch", name, cwd, *(["--", *args] if args else [])]
        return (await start_worker(self, name, cwd, args, invocation)).meta

    async def adopt(self, name: str, cwd: str, session_id: str, claude_args: Iterable[str] = ()) -> Meta:
        """Bring back the conversation ``session_id`` as worker ``name`` (``csd adopt``)."""
        args = list(claude_args)
        invocation = ["csd", "adopt", name, cwd, session_id, *(["--", *args] if args else [])]
        return (await start_worker(self, name, cwd, args, invocation, resume=check_session_id(session_id))).meta

    async def stop(self, handle: str) -> None:
        """End a worker and remove its files (idempotent for a worker that already died)."""
        await stop_worker(self, self.resolve(handle))
