"""The Python API: a Supervisor that also starts and ends workers, here and on the hosts of the hosts file.

::

    async with Fleet() as fleet:
        await fleet.launch("api", "/src/api")
        await fleet.launch("gpu", "/srv/train", host="gpu-box")        # over SSH (see README: Many machines)
        reply = await fleet.converse("api", "run the tests and summarise what failed")
        name, ev = await fleet.wait_any(["api", "gpu"])                # local and remote together
        await fleet.stop("gpu")

A remote worker is named like a local one (its name; the controller keeps a record of where it runs), and
every method takes either. Local workers are csd.supervisor.Supervisor's (the CLI's engine too); a remote
worker's commands run over its host's one SSH connection and its waits follow the host's stream
(csd.remoteworkers), so a dropped connection is re-established and nothing that happened meanwhile is
missed. A remote command's failure raises what the local one would (NotRunning, UsageError, TurnFailed, ...),
its host named; an unreachable host raises HostUnreachable, a missing or incompatible csd there HostCsd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from csd import remoteworkers
from csd.errors import EmptyReply, NotRunning, TurnFailed
from csd.console import err
from csd.events import Event, failure_line, parse_line
from csd.lifecycle import start_worker, stop_worker
from csd.remote import Record, host_for, remote_state
from csd.reply import TRUNCATED_MARK, Reply
from csd.states import State
from csd.supervisor import Supervisor
from csd.workers import Meta, check_session_id


class RemoteReply:
    """A remote worker's finished turn, shaped like csd.reply.Reply: ``prompt`` and ``stop`` are its event
    lines, ``text()`` the reply (the stop event's, or the worker's host reads the transcript when the hook cut
    it), ``markdown()`` the whole turn as ``read-turn`` gives it (one call to the host)."""

    def __init__(self, rec: Record, prompt: Event, stop: Event, text: str) -> None:
        self.rec, self.prompt, self.stop, self._text = rec, prompt, stop, text

    def text(self) -> str:
        return self._text

    async def wait_transcript(self) -> RemoteReply:
        return self  # the host's read-turn waits for its transcript itself

    async def markdown(self, full: bool = False) -> str:
        proc = await remoteworkers.run_worker(self.rec, ["read-turn", *(["--full"] if full else [])])
        return proc.stdout.decode("utf-8", "replace")


class Fleet(Supervisor):
    """A Supervisor that launches, adopts and stops workers itself, and drives workers on other hosts too."""

    def remote(self, handle: str) -> Record | None:
        """Where the remote worker ``handle`` runs (its record), or None for a local worker."""
        return remoteworkers.record_of(self.wdir, handle) if self.wdir.check() else None

    async def launch(self, name: str, cwd: str, claude_args: Iterable[str] = (), host: str | None = None) -> Meta | Record:
        """Start a worker (on ``host`` of the hosts file: over SSH) and return its meta (a remote one: its
        record) once it can take a prompt: ``csd launch [--host HOST] NAME CWD -- ARGS``."""
        args = list(claude_args)
        if host is not None:
            rec, _ = await asyncio.to_thread(remoteworkers.launch, self.wdir, host, name, cwd, args)
            return rec
        invocation = ["csd", "launch", name, cwd, *(["--", *args] if args else [])]
        return (await start_worker(self, name, cwd, args, invocation)).meta

    async def adopt(self, name: str, cwd: str, session_id: str, claude_args: Iterable[str] = (), host: str | None = None) -> Meta | Record:
        """Bring back the conversation ``session_id`` as worker ``name`` (``csd adopt [--host HOST]``)."""
        args = list(claude_args)
        if host is not None:
            rec, _ = await asyncio.to_thread(remoteworkers.launch, self.wdir, host, name, cwd, args, check_session_id(session_id))
            return rec
        invocation = ["csd", "adopt", name, cwd, session_id, *(["--", *args] if args else [])]
        return (await start_worker(self, name, cwd, args, invocation, resume=check_session_id(session_id))).meta

    async def stop(self, handle: str) -> None:
        """End a worker and remove its files (idempotent for a worker that already died)."""
        rec = self.remote(handle)
        if rec is None:
            await stop_worker(self, self.resolve(handle))
            return
        await remoteworkers.run_worker(rec, ["stop"])
        remoteworkers.forget(self.wdir, rec)

    async def status(self, handle: str) -> State:
        rec = self.remote(handle)
        if rec is None:
            return await super().status(handle)
        return State(await asyncio.to_thread(remote_state, host_for(rec), rec))

    def read_events(self, handle: str) -> list[Event]:
        rec = self.remote(handle)
        if rec is None:
            return super().read_events(handle)
        lines = remoteworkers.run_worker_sync(rec, ["read-events"]).splitlines()
        return [parse_line(line, n) for n, line in enumerate(lines, 1) if line.strip()]

    def read_turn(self, handle: str, full: bool = False) -> str:
        rec = self.remote(handle)
        if rec is None:
            return super().read_turn(handle, full)
        return remoteworkers.run_worker_sync(rec, ["read-turn", *(["--full"] if full else [])])

    async def send(self, handle: str, prompt: str, shell: bool = False) -> Event:
        rec = self.remote(handle)
        if rec is None:
            return await super().send(handle, prompt, shell)
        return await remoteworkers.send(rec, prompt, shell)

    async def wait_for_turn(self, handle: str, after_line: int | None = None, settled: bool = False) -> Event:
        rec = self.remote(handle)
        if rec is None:
            return await super().wait_for_turn(handle, after_line, settled)
        wait = remoteworkers.TurnWait(self, [rec.name], settled, None if after_line is None else {rec.name: after_line})
        ((_, ev),) = await wait.run(any_=True)
        if ev.name == "gone":
            raise NotRunning(f"worker {rec.name!r} on host {rec.host!r} is gone: its process ended without session_end")
        return ev

    async def wait_any(self, handles: Iterable[str], settled: bool = False) -> tuple[str, Event]:
        names = list(handles)
        if not any(self.remote(n) for n in names):
            return await super().wait_any(names, settled)
        ((name, ev),) = await remoteworkers.TurnWait(self, names, settled).run(any_=True)
        return name, ev

    async def wait_all(self, handles: Iterable[str], settled: bool = False) -> list[tuple[str, Event]]:
        names = list(handles)
        if not any(self.remote(n) for n in names):
            return await super().wait_all(names, settled)
        return await remoteworkers.TurnWait(self, names, settled).run(any_=False)

    async def converse(self, handle: str, prompt: str) -> Reply | RemoteReply:  # type: ignore[override]
        rec = self.remote(handle)
        if rec is None:
            return await super().converse(handle, prompt)
        submitted = await self.send(handle, prompt)
        stop = await self.wait_for_turn(handle, after_line=submitted.line_no)
        if stop.error is not None:
            raise TurnFailed(failure_line(rec.name, stop), stop)
        if stop.name == "session_end":
            raise NotRunning(f"worker {rec.name!r} on host {rec.host!r} exited during the turn")
        text = stop.data.get("last_assistant_message")
        if not isinstance(text, str) or not text.strip():
            raise EmptyReply(f"{rec.name!r} on host {rec.host!r} ended its turn with no reply text in its stop event; "
                             "see the turn with read_turn()", "the stop event has no last_assistant_message")
        if TRUNCATED_MARK in text[-40:]:
            err(f"csd: warning: {rec.name!r} on host {rec.host!r}: the reply was cut to {len(text)} characters by the hook; "
                "read_turn() has the whole turn")
        return RemoteReply(rec, submitted, stop, text)
