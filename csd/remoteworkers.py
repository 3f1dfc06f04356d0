"""Workers on other hosts, the engine's side: their records in the workers dir (where each runs and how to
reach it), starting one, its commands run over its host's connection with the remote exit mapped to csd's
own errors, and waiting for turns through the hosts' streams, local workers alongside.

What csd.fleet.Fleet (the Python API) and the remote commands (csd/commands/remote.py) share; csd/remote.py
is the SSH side. Nothing here prints an answer or returns an exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from csd.console import err, submitted_line
from csd.errors import NOT_RUNNING, OK, TURN_FAILED, USAGE, CsdError, NotRunning, TurnFailed, UsageError
from csd.events import Event, failure_line, parse_line
from csd.remote import (Host, HostStream, Record, Tied, by_host, check_version, get_host, host_for, remote_state, run,
                        worker_argv)
from csd.workers import WorkersDir, check_name

TYPE_CHECKING = False  # typing's, without importing typing: a remote worker's read-side command comes through here
if TYPE_CHECKING:
    from csd.supervisor import Supervisor



# ---------------------------------------------------------------- the records of remote workers (in the workers dir)


def read_record(wdir: WorkersDir, name: str) -> Record | None:
    try:
        with open(wdir.remote_path(name), encoding="utf-8") as f:
            return Record(**json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise CsdError(f"unreadable record of remote worker {name!r} at {wdir.remote_path(name)}: {exc}") from None


def records(wdir: WorkersDir) -> list[Record]:
    d = wdir.remote_dir
    try:
        names = sorted(fn[: -len(".json")] for fn in os.listdir(d) if fn.endswith(".json") and not fn.startswith("."))
    except FileNotFoundError:
        return []
    return [r for r in (read_record(wdir, n) for n in names) if r is not None]


def write_record(wdir: WorkersDir, rec: Record) -> None:
    wdir.write_remote(rec.name, json.dumps(rec.to_json(), indent=2) + "\n")


def forget(wdir: WorkersDir, rec: Record) -> None:
    """Remove the record and the local shim of a remote worker (it was stopped)."""
    for p in (wdir.remote_path(rec.name), wdir.shim_path(rec.name)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def record_of(wdir: WorkersDir, handle: str) -> Record | None:
    """The record of the remote worker this name names, else None (one stat: the local path stays cheap)."""
    if "/" in handle or handle.startswith(".") or not wdir.remote_path(handle).is_file():
        return None
    return read_record(wdir, handle)


def host_of(wdir: WorkersDir, handle: str) -> str | None:
    """The host of a remote worker known by this name, else None."""
    rec = record_of(wdir, handle)
    return rec.host if rec is not None else None


# ---------------------------------------------------------------- running a remote worker's commands


class RemoteFailed(CsdError):
    """A remote csd command exited non-zero: ``exit_code`` is its exit code, ``stderr`` what it said."""

    def __init__(self, message: str, exit_code: int, stderr: bytes) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.stderr = stderr


def remote_error(proc: subprocess.CompletedProcess[bytes], host: Host) -> CsdError:
    """The error csd raises for a remote command's failure: of the class its exit code names locally (exit 3
    NotRunning, 2 UsageError, ...), with the remote's own ``csd: error:`` line, the host named."""
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    said = next((ln for ln in reversed(lines) if ln.startswith("csd: error: ")), lines[-1] if lines else "")
    message = f"host {host.name!r}: " + (said.removeprefix("csd: error: ") or f"the remote csd exited {proc.returncode}")
    kind = {NOT_RUNNING: NotRunning, USAGE: UsageError, TURN_FAILED: TurnFailed}.get(proc.returncode)
    if kind is not None:
        return kind(message)
    return RemoteFailed(message, proc.returncode, proc.stderr)


async def run_worker(rec: Record, argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run one per-worker csd command of ``rec`` on its host (off the event loop); a non-zero exit raises."""
    import asyncio

    host = host_for(rec)
    proc = await asyncio.to_thread(run, host, worker_argv(rec, argv), f"running {argv[0]!r} for {rec.name!r}", stdin)
    if proc.returncode != OK:
        raise remote_error(proc, host)
    return proc


def run_worker_sync(rec: Record, argv: list[str]) -> str:
    """run_worker for a caller with no event loop: the command's stdout."""
    host = host_for(rec)
    proc = run(host, worker_argv(rec, argv), f"running {argv[0]!r} for {rec.name!r}")
    if proc.returncode != OK:
        raise remote_error(proc, host)
    return proc.stdout.decode("utf-8", "replace")


def launch(wdir: WorkersDir, host_name: str, name: str, cwd: str, claude_args: list[str], resume: str | None = None,
           made: Callable[[], None] = lambda: None) -> tuple[Record, bytes]:
    """``launch --host`` (``resume``: ``adopt --host``): the remote csd's launch, then a local record and shim.
    Returns the record and what the remote launch said on stderr; its failure raises RemoteFailed (its exit
    code and stderr, for the CLI to pass on as they are). An interrupt while the host launches makes it undo its
    launch (remote.Tied); one after it has reported is sent again once the record and shim are written, right
    after ``made()`` (the CLI's blocks it there, so that an interrupted launch that made its worker exits 0)."""
    host = get_host(host_name)
    check_name(name)
    if wdir.check():
        _clear_the_name(wdir, name)
    check_version(host)
    doing = "launching" if resume is None else "adopting"
    argv = ["hosted-launch", *(["--resume", resume] if resume else []), name, cwd, "--", *claude_args]
    with Tied(host, argv, f"{doing} {name!r}") as tied:  # an interrupt: the host undoes, or it comes after the files
        proc = tied.run()
        if proc.returncode != OK:
            raise RemoteFailed(f"host {host.name!r}: {doing} {name!r} failed (exit {proc.returncode})", proc.returncode,
                               proc.stderr)
        try:
            info = json.loads(proc.stdout)
            remote_shim = info["shim"]
            rec = Record(name, host.name, info["session_id"], info["cwd"], str(Path(remote_shim).parent.parent),
                         remote_shim, info["started_at"])
        except (ValueError, KeyError, TypeError):
            raise CsdError(f"worker {name!r} was made on host {host.name!r}, but its report could not be read: "
                           f"{proc.stdout[:200]!r}") from None
        write_record(wdir, rec)
        wdir.write_shim(name, host=host.name)
        made()
    return rec, proc.stderr


def _clear_the_name(wdir: WorkersDir, name: str) -> None:
    """Refuse a name a local worker or a live remote one has; forget the record of a gone remote one."""
    if any(m.tmux_name == name for m in wdir.metas()):
        raise CsdError(f"a local worker {name!r} exists (shim {wdir.shim_path(name)}); stop it or pick another name")
    old = read_record(wdir, name)
    if old is not None:
        state = remote_state(host_for(old), old)
        if state != "gone":
            raise CsdError(f"worker {name!r} already runs on host {old.host!r} ({state}); stop it first: {wdir.shim_path(name)} stop")
        err(f"csd: clearing the record of gone remote worker {name!r} on host {old.host!r}")
        forget(wdir, old)


async def send(rec: Record, prompt: str, shell: bool = False) -> Event:
    """The remote ``send``; returns the user_prompt_submit line that confirmed it (read back from its host)."""
    proc = await run_worker(rec, ["send", *(["--shell"] if shell else []), "-"], stdin=prompt.encode("utf-8"))
    said = proc.stderr.decode("utf-8", "replace")
    line_no = submitted_line(said)
    if line_no is None:
        raise CsdError(f"host {rec.host!r}: its csd sent the prompt to {rec.name!r} but did not say which events line confirmed it: {said.strip()!r}")
    last = (await run_worker(rec, ["read-events", "--last", "1"] if shell else ["read-events", "--last", "1", "--type", "user_prompt_submit"]))
    raw = last.stdout.decode("utf-8", "replace").strip()
    return parse_line(raw, line_no) if raw else Event(line_no, "user_prompt_submit", "", {}, "")


# ---------------------------------------------------------------- waiting for turns, local and remote together


class TurnWait:
    """Wait for the turns of local and remote workers to end: local ones through the supervisor, each host's
    through one stream (csd/remote.py: re-established and replayed when the connection drops).

    ``after``: for a remote worker, end only on a turn end past that line of its log (``--after-line``)."""

    def __init__(self, sup: Supervisor, names: Iterable[str], settled: bool, after: dict[str, int] | None = None) -> None:
        self.sup, self.names, self.settled = sup, list(names), settled
        self.remote = {n: rec for n in self.names if (rec := record_of(sup.wdir, n)) is not None}
        self.local = [sup.resolve(n).tmux_name for n in self.names if n not in self.remote]  # unknown names fail here
        self.streams = [HostStream(get_host(h), rwd, recs, settled, sup.changed) for (h, rwd), recs in by_host(self.remote.values()).items()]
        for s in self.streams:
            s.busy_line.update({r.name: line for r in s.recs if (line := (after or {}).get(r.name)) is not None})

    async def run(self, any_: bool) -> list[tuple[str, Event]]:
        """(name, the line that ended its turn): the first with ``any_``, else every one, in the given order."""
        import asyncio

        for name in self.local:
            await self.sup.track(name)
        tasks = [asyncio.ensure_future(s.run()) for s in self.streams]
        try:
            return await self.sup.wait_events(lambda: self._ended(any_))  # fails, not hangs, on a full disk
        finally:
            for s, t in zip(self.streams, tasks):
                if not all(r.name in s.done for r in s.recs):
                    t.cancel()  # a stream whose workers all ended is ending by itself: let it close its connection
            await asyncio.gather(*tasks, return_exceptions=True)

    def _ended(self, any_: bool) -> list[tuple[str, Event]] | None:
        for s in self.streams:
            if s.error is not None:
                raise s.error
        ended: list[tuple[str, Event]] = []
        for name in self.names:
            ev = self.result(name)
            if ev is not None:
                ended.append((name, ev))
                if any_:
                    return ended
            elif not any_:
                return None
        return None if any_ else ended

    def result(self, name: str) -> Event | None:
        """The line that ended ``name``'s turn (a ``gone`` stand-in for a worker that died), or None yet."""
        if name not in self.remote:
            return self.sup.turn_result(name, self.settled)
        raw = next((s.done[name] for s in self.streams if name in s.done), None)
        return parse_line(raw, 0) if raw is not None else None

    def busy(self) -> list[str]:
        """The workers whose turn has not ended yet (for a timeout's message)."""
        return [n for n in self.names if self.result(n) is None]

    def failure(self, name: str, ev: Event) -> str | None:
        """The one-line failure of the turn ``ev`` ended, or None: a remote one as its host's stream said (the
        host reads the transcript of a release without StopFailure), else by its stop_failure line."""
        if name not in self.remote:
            return self.sup.turn_failure(name, ev)
        said = next((s.failures[name] for s in self.streams if name in s.failures), None)
        return said or (failure_line(name, ev) if ev.error is not None else None)
