"""Starting and ending workers with the caller's supervisor: launch and adopt (start_worker: the claim, the pane,
the start-up dialogs, session_start; its synchronous first half is csd/startpane.py's), stop (stop_worker), and the converse diagnostic. Returns values and raises
csd.errors; the commands (csd/commands/manage.py) and csd.fleet.Fleet print and choose exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csd import config, tmux
from csd.clock import now_iso
from csd.console import err
from csd.errors import CsdError, TmuxNotAnswering
from csd.proc import is_zombie, proc_start, proc_stat
from csd.screen import Dialog, detect_dialog, exit_words, last_lines, marker_on, startup_hint
from csd.startpane import RUN_HOOK, Prepared, check_claude_args, hook_command, prepare, session_taken
from csd.states import State
from csd.supervisor import Supervisor, Tracked, until_enter_is_safe
from csd.workers import LaunchClaim, Meta, WorkersDir, open_regular

__all__ = ["Launched", "check_claude_args", "hook_command", "start_worker", "stop_worker", "write_diagnostic"]

#: Start-up dialogs appear before session_start and fire no hook, so launch reads the screen at this
#: period until session_start arrives (the only screen polling csd does).
DIALOG_CHECK_INTERVAL = 0.2
#: How long a dialog must have been on screen before csd presses a key (the real one resets its
#: selection during its first ~0.25 s; 0.5 s passed every time).
DIALOG_SETTLE = 0.5
#: A worker that recorded session_end during start-up exits within ~0.4 s (FACTS §4): this long for its exit status.
EXIT_STATUS_WAIT = 3.0


def reproduce_line(invocation: list[str], cwd: str) -> str:
    """The exact command that relaunches an equivalent worker (absolute cwd, csd's own env vars)."""
    argv = list(invocation)
    if len(argv) >= 4 and argv[1] in ("launch", "adopt"):
        argv[3] = cwd
    argv[0] = "csd" if shutil.which("csd") else shlex.join(_entry())
    prefix = [f"{v}={shlex.quote(os.environ[v])}" for v in ("CSD_WORKERS_DIR", "CSD_TMUX_SOCKET", "CSD_CLAUDE_BIN") if os.environ.get(v)]
    return " ".join([*prefix, argv[0], *(shlex.quote(a) for a in argv[1:])])


def _entry() -> list[str]:
    from csd.workers import entry_point

    return entry_point()


@dataclass(frozen=True)
class Launched:
    meta: Meta
    shim: Path
    how: str  # "opened new pane" / "respawned existing pane"
    reproduce: str


def _check_real_cwd(name: str, pid: int, cwd: str) -> None:
    """The worker's process really runs in ``cwd`` (read from /proc, where there is one)."""
    try:
        actual = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return  # no /proc here (or the process just exited: start-up checks report that)
    if actual != cwd:
        raise CsdError(f"worker {name!r} runs in {actual!r}, not in {cwd!r}: it could not enter that directory")


async def _clear_interrupted(wdir: WorkersDir, name: str, claim: LaunchClaim) -> None:
    """Clear what a launch of ``name`` killed mid-way (SIGKILL: no cleanup ran) left: its tmux session,
    meta and events file. Its claim file names the session; a worker that got its shim is complete and
    left to _check_free."""
    dead = claim.previous
    if dead is None:
        return
    try:
        meta = wdir.read_meta(dead.session_id)
    except (OSError, ValueError, KeyError, TypeError, CsdError):
        return
    if meta.tmux_name != name or wdir.shim_path(name).exists():
        return
    err(f"csd: note: clearing what an interrupted launch of {name!r} left (its launcher, pid {dead.pid}, "
        f"died at start-up; session {meta.session_id})")
    if dead.respawn:
        await end_pane_process(name, meta.tmux_socket)  # a session adopt did not make stays
    else:
        await tmux.kill_session(name, meta.tmux_socket)
    wdir.remove_files(meta)


async def _check_free(wdir: WorkersDir, name: str, socket: str | None, resume: str | None) -> bool:
    """No live worker may have the name, and no live worker may use the session id adopt resumes (one
    session id, one worker: two would share a conversation, and their files); a gone one's files are
    cleared. Returns whether a tmux session of that name exists: launch refuses it; adopt respawns its pane
    in place (tmux-resurrect restores sessions by name, with a shell in them)."""
    for m in wdir.metas():
        same_name = m.tmux_name == name
        same_sid = resume is not None and resume in (m.session_id, wdir.current_session_id(m))
        if not (same_name or same_sid):
            continue
        pane = await tmux.pane_of(m.tmux_name, m.tmux_socket, m.pane)
        if tmux.worker_alive(pane, m.pid, m.proc_start):
            shim = wdir.shim_path(m.tmux_name)
            if same_name:
                raise CsdError(
                    f"a worker named {name!r} already exists (session {m.session_id}); stop it first: {shim} stop"
                )
            raise CsdError(
                f"session {resume} is in use by live worker {m.tmux_name!r}: one session id, one worker; "
                f"talk to it through {shim}, or stop it first: {shim} stop"
            )
        err(f"csd: note: clearing the files of gone worker {m.tmux_name!r} ({m.session_id})")
        wdir.remove_files(m)
    exists = await tmux.has_session(name, socket)
    if exists and resume is None:
        raise session_taken(name)
    return exists


async def start_worker(
    sup: Supervisor, name: str, cwd: str, extra: list[str], invocation: list[str], resume: str | None = None,
    progress: Callable[[str], None] | None = None, prepared: Prepared | None = None,
) -> Launched:
    """launch (resume None) or adopt, with the caller's supervisor: validate everything, claim the name,
    start, pass dialogs, wait for session_start. ``progress`` hears what it is doing. ``prepared``: the first
    half, done already by the caller (startpane.prepare, which ``csd launch`` runs before it imports the engine);
    else it runs here (synchronously: a few ms of tmux and files).

    On any failure, interruption included, nothing is left behind: no tmux session, meta, events or shim.
    A launch of a name that another launch holds fails at once and touches nothing.
    """
    prep = prepared or prepare(sup.wdir, name, cwd, extra, invocation, resume)
    prep.owned = True  # from here on, a failure is undone by _Start.run (and the claim released below)
    start = _Start(sup, prep, progress or (lambda _: None))
    try:
        if not prep.created_session:
            await _clear_interrupted(prep.wdir, name, prep.claim)
            start.respawn = await _check_free(prep.wdir, name, prep.socket, resume)
            if start.respawn and resume:
                _check_conversation(prep.meta.cwd, resume, name)
        meta = await start.run()
    finally:
        prep.claim.release()
    how = "respawned existing pane" if start.respawn else "opened new pane"
    return Launched(meta, prep.wdir.shim_path(name), how, reproduce_line(list(invocation), prep.meta.cwd))


class _Start:
    """One start of a worker in its tmux pane, under a claimed name; undone whole when it fails."""

    def __init__(self, sup: Supervisor, prep: Prepared, progress: Callable[[str], None]) -> None:
        self.sup, self.prep, self.wdir, self.progress = sup, prep, prep.wdir, progress
        self.name, self.cwd, self.socket = prep.meta.tmux_name, prep.meta.cwd, prep.socket
        self.respawn = False  # adopt onto a tmux session that is there: its pane is respawned in place

    async def run(self) -> Meta:
        ok = False
        try:
            if not self.prep.created_session:
                await self._start_pane()
            await self._until_ready(self.prep.meta)
            self.wdir.write_shim(self.name, self.socket or "")
            ok = True
            return self.prep.meta
        finally:
            if not ok:
                await self._undo(self.prep.meta)

    async def _end_what_runs(self) -> None:
        # keep the pane dead-but-visible if claude exits at once, so its last lines can be shown
        await tmux.remain_on_exit(self.name, True, self.socket)
        # Whatever runs in the pane ends first, hooks and all: an old claude's SessionEnd must never land
        # in the events file this worker is about to get (it is named after the same session id).
        self.progress("ending the pane's process")
        await end_pane_process(self.name, self.socket)

    async def _start_pane(self) -> None:
        """What prepare left to the event loop: a new session after clearing, or adopt's pane respawned in place."""
        if not self.respawn:
            self.prep.start_pane()
            return
        self.prep.claim.record(self.prep.meta.session_id, True)
        await self._end_what_runs()
        argv = self.prep.write_files(respawn=True)
        await tmux.respawn_pane(self.name, self.cwd, argv, self.socket)
        self.prep.meta = await _record_process(self.wdir, self.prep.meta)

    async def _until_ready(self, meta: Meta) -> None:
        """session_start (dialogs answered on the way), in the right directory, still running."""
        timeout = config.seconds("CSD_LAUNCH_TIMEOUT")
        self.progress("starting")
        tr = await self.sup.track(meta)
        try:
            async with asyncio.timeout(timeout):
                await _pass_startup(self.sup, tr, self.socket, self.progress)
        except TimeoutError:
            screen = await tmux.capture(self.name, self.socket, lines=None)
            raise CsdError(
                f"worker {self.name!r} did not start within {timeout:g}s (no session_start; CSD_LAUNCH_TIMEOUT)."
                + last_lines(screen)
            ) from None
        running = await _runs(meta)
        if running:
            _check_real_cwd(self.name, meta.pid, self.cwd)
        self.progress("ready")
        await _check_still_running(self.sup, tr, self.socket, running)
        await tmux.remain_on_exit(self.name, False, self.socket, check=False)

    async def _undo(self, meta: Meta) -> None:
        self.sup.untrack(self.name)
        if self.prep.created_session:
            await tmux.kill_session(self.name, self.socket)
        elif self.respawn:
            # The session was there before adopt: it stays (with the dead pane showing why), and so does
            # the tmux server with every other session on it.
            pane = await tmux.pane_of(self.name, self.socket, meta.pane) if meta.pid else None
            if tmux.worker_alive(pane, meta.pid, meta.proc_start):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(meta.pid, signal.SIGHUP)
            err(f"csd: note: tmux session {self.name!r} existed before adopt and is left in place, its pane dead; "
                f"reuse it with: {tmux.respawn_line(self.name, self.socket)}")
        self.wdir.remove_files(meta)


def _check_conversation(cwd: str, sid: str, name: str) -> None:
    """Before adopt ends what runs in a pane: the conversation must exist, or claude --resume exits at once
    (Claude Code writes a transcript only once a session has had a prompt)."""
    from csd.transcriptfile import session_transcript

    path = session_transcript(cwd, sid)
    if not os.path.isfile(path):
        raise CsdError(
            f"no conversation {sid} for cwd {cwd} (no {path}): claude --resume would exit at once, so the pane of "
            f"tmux session {name!r} is left as it is; check the session id and cwd (csd list --all shows both)"
        )


async def _record_process(wdir: WorkersDir, meta: Meta) -> Meta:
    """Write the worker's process (pid and start time) into its meta: from now on the worker is that
    process, and a pane that runs anything else is not the worker (status says gone, send refuses)."""
    pane = await tmux.active_pane(meta.tmux_name, meta.tmux_socket)  # the one adopt respawned
    if pane is None or not pane.alive:
        return meta  # exited already: start-up reports it
    meta = meta.replace(pid=pane.pid, proc_start=proc_start(pane.pid), pane=pane.pane_id)
    wdir.write_meta(meta)
    return meta


#: How long a pane's process gets to end after SIGHUP (Claude Code records SessionEnd, then exits in
#: ~0.1 s) and its hooks to finish, before SIGKILL.
END_PROCESS_TIMEOUT = 5.0


async def end_pane_process(name: str, socket: str | None) -> None:
    """End the process in session ``name``'s pane and wait (pidfds, no polling) until it and the hooks it
    started have exited. SIGHUP is what closing the pane sends: Claude Code records its SessionEnd and exits.
    """
    pane = await tmux.active_pane(name, socket)  # the one adopt respawns
    if pane is None or not pane.alive:
        return
    if not await _signal_and_wait([pane.pid], signal.SIGHUP, END_PROCESS_TIMEOUT):
        err(f"csd: note: the process in {name!r} (pid {pane.pid}) did not exit within {END_PROCESS_TIMEOUT:g}s of SIGHUP; killing it")
        await _signal_and_wait([pane.pid], signal.SIGKILL, END_PROCESS_TIMEOUT)
    # A hook the old process started may outlive it (it is orphaned, not killed): wait for those too.
    hooks = _hooks_in_session(pane.pid)
    if hooks and not await _signal_and_wait(hooks, None, END_PROCESS_TIMEOUT):
        await _signal_and_wait(_hooks_in_session(pane.pid), signal.SIGKILL, END_PROCESS_TIMEOUT)


def _hooks_in_session(session: int) -> list[int]:
    """csd hook processes in a process session (tmux makes each pane's process a session leader)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = proc_stat(int(entry.name)) or []
        if len(fields) <= 3 or fields[3] != str(session).encode():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read()
                if RUN_HOOK.encode() in cmdline or b"hook.py" in cmdline:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


async def _signal_and_wait(pids: list[int], sig: int | None, timeout: float) -> bool:
    """Send ``sig`` (None: none) to each process and wait until all have exited; False on timeout."""
    loop = asyncio.get_running_loop()
    fds: list[int] = []
    try:
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except ProcessLookupError:
                continue
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fds[-1], sig)
        waits = []
        for fd in fds:
            done = loop.create_future()
            loop.add_reader(fd, lambda d=done: d.done() or d.set_result(None))
            waits.append(done)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)
        except TimeoutError:
            return False
        return True
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)


async def _runs(meta: Meta) -> bool:
    """Whether the worker's process still runs: read from /proc when launch recorded it (pid and start time; no
    tmux call), else asked of tmux (no /proc, or the pane's process had exited before launch could record it)."""
    if meta.pid and meta.proc_start:
        return not is_zombie(meta.pid) and proc_start(meta.pid) == meta.proc_start
    return tmux.worker_alive(await tmux.pane_of(meta.tmux_name, meta.tmux_socket, meta.pane), meta.pid, meta.proc_start)


async def _check_still_running(sup: Supervisor, tr: Tracked, socket: str | None, running: bool) -> None:
    """One look after session_start, with no wait (the TUI's own readiness is paid by the first send, see
    prompt.ENTER_READY_AFTER_START): a worker already exiting (its pane kept dead by remain-on-exit) fails the
    launch with its exit status and last lines, never a shim for nothing. One that exits later is a worker
    that ended: status says terminated or gone, send refuses. ``running``: as launch saw it after session_start."""
    if running and tr.state not in (State.GONE, State.TERMINATED):
        return
    # session_end comes just before the exit: wait for the process to end, for its exit status
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(EXIT_STATUS_WAIT):
            await sup.wait_until(lambda: True if tr.state == State.GONE or tr.removed else None)
    pane = await tmux.pane_of(tr.name, socket, tr.meta.pane)
    screen = await tmux.capture(tr.meta.where, socket, lines=None)
    status = exit_words(tmux.exit_status(pane) if pane is not None else "")
    raise CsdError(f"worker {tr.name!r} exited right after starting{status}, before its first prompt.{startup_hint(screen)}{last_lines(screen)}")


async def _pass_startup(sup: Supervisor, tr: Tracked, socket: str | None, progress: Callable[[str], None]) -> None:
    """Wait for session_start; meanwhile answer start-up dialogs and fail fast if the worker exits."""
    name = tr.name
    answered: set[str] = set()
    seen_at: dict[str, float] = {}
    while True:
        if tr.state not in (State.LAUNCHING,):
            if tr.state in (State.GONE, State.TERMINATED) or tr.removed:
                break
            return
        # the visible screen only: a dialog redrawn by clearing leaves stale copies of itself in the history
        screen = await tmux.visible(tr.meta.where, socket)
        if not await _runs(tr.meta):
            break
        dialog = detect_dialog(screen)
        if dialog is not None:
            seen_at.setdefault(dialog.key, time.monotonic())
            # dialogs are drawn before they take keys: a key sent in the first ~0.25 s is lost
            if time.monotonic() - seen_at[dialog.key] >= DIALOG_SETTLE:
                progress(f"answering the {dialog.key} dialog")
                await _answer(dialog, tr.meta.where, socket)
                answered.add(dialog.key)
                seen_at.pop(dialog.key, None)
        try:
            async with asyncio.timeout(DIALOG_CHECK_INTERVAL):
                await sup.wait_until(lambda: True if tr.state != State.LAUNCHING else None)
        except TimeoutError:
            pass
    screen = await tmux.capture(tr.meta.where, socket, lines=None)
    pane = await tmux.pane_of(name, socket, tr.meta.pane)
    status = exit_words(tmux.exit_status(pane) if pane is not None else "")
    raise CsdError(f"worker {name!r} exited during start-up{status}.{startup_hint(screen)}{last_lines(screen)}")


async def _answer(dialog: Dialog, name: str, socket: str | None) -> None:
    """Move the marker onto the accepting option, check it moved, then press Enter (never a bare Enter).
    ``name``: the worker's pane (Meta.where)."""
    if dialog.keys:
        for _ in range(5):
            screen = await tmux.visible(name, socket)
            if marker_on(screen, dialog.yes_text):
                break
            await tmux.send_keys(name, *dialog.keys, socket=socket)
            await asyncio.sleep(0.25)  # the TUI redraws the marker; no event tells us when
        else:
            raise CsdError(f"could not select {dialog.yes_text!r} in the {dialog.key} dialog of {name!r}")
        if not marker_on(await tmux.visible(name, socket), dialog.yes_text):
            raise CsdError(f"could not select {dialog.yes_text!r} in the {dialog.key} dialog of {name!r}")
    await tmux.send_keys(name, "Enter", socket=socket)


async def stop_worker(sup: Supervisor, meta: Meta) -> None:
    """/exit, wait (event-driven) for session_end or death, kill the session if still there, remove files.

    Keys are typed only into the worker's own process: a pane that now runs something else (the worker
    died and someone respawned it) gets no keys and its session is left alone.
    """
    wdir = sup.wdir
    socket = meta.tmux_socket
    name = meta.tmux_name
    remove = True
    looked = False  # the pane is the worker's (or gone): from then on an interrupt ends it at once
    try:
        pane = await tmux.pane_of(name, socket, meta.pane)
        if pane is not None and pane.alive and not tmux.worker_alive(pane, meta.pid, meta.proc_start):
            err(f"csd: note: tmux session {name!r} now runs another process (pid {pane.pid}), not worker {name!r} "
                f"(pid {meta.pid}); left alone")
            return
        looked = True
        if pane is not None:
            await _exit(sup, meta, config.seconds("CSD_STOP_TIMEOUT"))
        await _end_session(meta)
    except TmuxNotAnswering as exc:
        # the worker may well be alive: keep its files, so that stop can be run again once tmux answers
        remove = False
        raise TmuxNotAnswering(f"{exc} (worker {name!r} not stopped, its files kept: run stop again once tmux answers)") from None
    except asyncio.CancelledError:
        remove = looked and await _kill_at_once(name, socket)  # else the worker is as it was, files and all
        raise
    finally:
        sup.untrack(name)
        if remove:
            wdir.remove_files(meta)
            # the claim file a launcher killed mid-launch left (never one a launch under way holds: that fails)
            with contextlib.suppress(CsdError, OSError):
                LaunchClaim(wdir, name).release()


async def _end_session(meta: Meta) -> None:
    """Kill the worker's tmux session; one in which a person opened panes of their own (a split, a window) keeps
    them: only the worker's pane goes, said on stderr."""
    name, socket = meta.tmux_name, meta.tmux_socket
    others = await tmux.others_in_session(name, meta.pane, socket) if meta.pane else []
    if not others:
        await tmux.kill_session(name, socket)
        return
    await tmux.kill_pane(meta.pane, socket)
    err(f"csd: note: tmux session {name!r} has other panes ({' '.join(others)}), not the worker's: only the "
        f"worker's pane was closed, the session stays")


async def _kill_at_once(name: str, socket: str | None) -> bool:
    """An interrupted stop (Ctrl-C, SIGTERM) that had begun: it was asked to end the worker, so the tmux session is
    killed now rather than after the worker's own exit; True once it is gone. Without this, the files would go and
    the session stay, a worker csd no longer knows. A second interrupt, or tmux not answering: False."""
    try:
        killed = await tmux.kill_session(name, socket)
    except (CsdError, asyncio.CancelledError):
        return False
    if killed:
        err(f"csd: stop interrupted: tmux session {name!r} killed without waiting for the worker to exit")
    return True


async def _exit(sup: Supervisor, meta: Meta, timeout: float) -> None:
    """Type /exit into the worker (after Escape if it is working) and wait for it to be gone."""
    name, socket = meta.tmux_name, meta.tmux_socket
    tr = await sup.track(meta)
    if tr.state == State.GONE:
        return
    where = meta.where
    if tr.state == State.WORKING:
        await tmux.send_keys(where, "Escape", socket=socket)
    await tmux.send_keys(where, "C-u", socket=socket)
    await tmux.send_keys(where, "/exit", literal=True, socket=socket)
    await until_enter_is_safe(tr)  # a stop right after launch: the TUI would swallow the Enter
    await tmux.send_keys(where, "Enter", socket=socket)
    try:
        async with asyncio.timeout(timeout):
            await sup.wait_until(lambda: True if tr.state == State.GONE or tr.removed else None)
    except TimeoutError:
        err(f"csd: {name!r} did not exit within {timeout:g}s of /exit; killing its tmux session")


async def write_diagnostic(wdir: WorkersDir, meta: Meta, path: str, reason: str = "") -> None:
    """What a human needs to see why a converse failed (``reason``: timed out, no reply text): processes,
    screen, transcript and events tails."""
    from csd.reply import transcript_file

    socket = meta.tmux_socket
    parts = [f"# csd diagnostic for {meta.tmux_name} ({meta.session_id}) at {now_iso()}"]
    if reason:
        parts += ["## reason", reason]
    pane = await tmux.pane_of(meta.tmux_name, socket, meta.pane)
    if pane is not None:
        proc = await asyncio.create_subprocess_exec(
            # tmux starts each pane's process as a session leader: its session is the worker's process tree
            "ps", "-o", "pid,ppid,stat,etime,args", "--forest", "-s", str(pane.pid),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        parts += ["## process tree", out.decode(errors="replace")]
    parts += ["## pane", await tmux.capture(meta.where, socket, lines=200)]
    tpath = transcript_file(wdir, meta)
    if tpath is not None and tpath.is_file():
        parts += [f"## transcript tail ({tpath})", "\n".join(tpath.read_text(errors="replace").splitlines()[-20:])]
    epath = wdir.events_path(meta.session_id)
    with contextlib.suppress(OSError, CsdError):
        with os.fdopen(open_regular(epath), "rb") as f:
            parts += [f"## events tail ({epath})", "\n".join(f.read().decode(errors="replace").splitlines()[-30:])]
    _write_private(path, "\n\n".join(parts) + "\n", "the diagnostic")


def _write_private(path: str, text: str, what: str) -> None:
    """Create ``path`` afresh, 0600, never through a link: it holds prompts and screens, and a path in
    a shared dir (/tmp) may have been planted by another user."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise CsdError(
            f"did not write {what} to {path!r}: it already exists (csd creates it afresh, mode 0600, and never "
            "writes through a link); remove it or choose another path"
        ) from None
    except OSError as exc:
        raise CsdError(f"could not write {what} to {path!r}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
        f.write(text)
