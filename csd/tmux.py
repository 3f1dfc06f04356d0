"""tmux as subprocesses (asyncio, or plain for the commands that run no event loop) with argv lists, one socket
option, and exact targets."""

from __future__ import annotations

import contextlib
import math
import os
import select
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence

from csd import config
from csd.errors import CsdError, TmuxNotAnswering
from csd.proc import is_zombie, proc_start, proc_stat, signals_held
from csd.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the read path imports this module)
if TYPE_CHECKING:
    from typing import Any

#: What csd asks tmux for, one pane per line (workers run a single pane each).
PANE_FORMAT = "#{session_name}\t#{pane_id}\t#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}"
NO_SERVER_MARKERS = ("no server running", "error connecting to", "No such file or directory")
#: The only variables a tmux client gets from csd. A client that starts the server hands the server its
#: whole environment (tmux's global environment, which every later session and pane of that server
#: inherits, the user's own shells included): so never the controller's secrets. Workers get theirs
#: from launch (csd/envfile.py). TMUX picks the server csd runs in when no socket is set; the locale,
#: whether tmux speaks UTF-8.
CLIENT_VARS = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMUX", "TMUX_TMPDIR", "TERM", "LANG", "LC_ALL", "LC_CTYPE")


def client_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in CLIENT_VARS}


class TmuxError(CsdError):
    """A tmux command failed; rendered as ``<subcommand>: <stderr>``."""


class Pane(Value):
    _fields = ("session", "pane_id", "pid", "dead", "dead_status")
    session: str
    pane_id: str
    pid: int
    dead: bool
    dead_status: str

    def __init__(self, session: str, pane_id: str, pid: int, dead: bool, dead_status: str = "") -> None:
        self._set(session=session, pane_id=pane_id, pid=pid, dead=dead, dead_status=dead_status)

    @property
    def alive(self) -> bool:
        """Not dead in tmux's eyes and not a zombie that tmux has yet to reap."""
        return not self.dead and not is_zombie(self.pid)


def socket_args(socket: str | None = None) -> list[str]:
    """``-S path`` for a path, ``-L name`` for a name, nothing for the default server."""
    socket = config.tmux_socket() if socket is None else socket
    if not socket:
        return []
    return ["-S", socket] if "/" in socket else ["-L", socket]


def argv(args: Sequence[str], socket: str | None = None) -> list[str]:
    return ["tmux", *socket_args(socket), *args]


def session_target(name: str) -> str:
    """Exact session target: tmux resolves a bare ``-t api`` by prefix (it would match ``api-2``)."""
    return f"={name}"


def pane_target(name: str) -> str:
    """The active pane of exactly session ``name``; a pane id (``%N``: Meta.where) is that very pane."""
    return name if name.startswith("%") else f"={name}:"


def parse_panes(output: str) -> dict[str, Pane]:
    """Pure: ``list-panes -a -F PANE_FORMAT`` output -> {session name: its first pane, pane id: that pane}
    (session names never begin with ``%``, pane ids always do). Read a worker's with worker_pane."""
    panes: dict[str, Pane] = {}
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        try:
            pid = int(parts[2])
        except ValueError:
            pid = 0
        pane = Pane(parts[0], parts[1], pid, parts[3] == "1", parts[4] if len(parts) > 4 else "")
        panes.setdefault(parts[0], pane)
        if parts[1].startswith("%"):
            panes[parts[1]] = pane
    return panes


def worker_pane(panes: dict[str, Pane], name: str, pane_id: str = "") -> Pane | None:
    """The worker's pane among ``panes`` (parse_panes): its own (``pane_id``, Meta.pane), gone with it, when the
    meta names one; else session ``name``'s first. A pane a person opened beside it is never the worker's."""
    return panes.get(pane_id) if pane_id else panes.get(name)


def worker_alive(pane: Pane | None, pid: int = 0, start: int = 0) -> bool:
    """Whether the worker still runs in ``pane``: a worker is its process, not its pane. With the ``pid`` and
    ``start`` recorded at launch, a pane respawned with something else (a shell, another claude) is not the
    worker; without them (metas of older releases) a live pane is all there is to go on."""
    if pane is None or not pane.alive:
        return False
    if not pid:
        return True
    return pane.pid == pid and (not start or proc_start(pid) in (start, 0))


def exit_status(pane: Pane) -> str:
    """How the pane's process ended: tmux's ``pane_dead_status``, else (a zombie tmux has not reaped yet, which can
    take seconds) the exit code the kernel keeps for it in /proc/PID/stat; empty when unknown or still running."""
    if pane.dead_status:
        return pane.dead_status
    fields = proc_stat(pane.pid) if pane.pid > 0 else None
    if not fields or fields[0] != b"Z":
        return ""
    try:
        wait_status = int(fields[-1])  # field 52, exit_code: the status as waitpid reports it
    except ValueError:
        return ""
    return f"signal {wait_status & 0x7F}" if wait_status & 0x7F else str(wait_status >> 8)


def _no_server(stderr: str) -> bool:
    return any(m in stderr for m in NO_SERVER_MARKERS)


def _error(args: Sequence[str], stderr: str) -> TmuxError:
    return TmuxError(f"tmux {args[0] if args else ''}: {stderr.strip() or 'failed'}")


def _not_answering(args: Sequence[str], socket: str | None, seconds: float, bound: str = " (CSD_TMUX_TIMEOUT)") -> str:
    where = " ".join(socket_args(socket)) or "(default socket)"
    return (
        f"the tmux server {where} is not answering: 'tmux {args[0] if args else ''}' got no reply in {seconds:.1f}s{bound}; "
        "it may be stopped (kill -STOP) or swamped: find it with: ps -C tmux -o pid,stat,args"
    )


#: The last tmux command cut short while the server was silent, for a wait that timed out meanwhile.
_unanswered: str | None = None


def unanswered() -> TmuxNotAnswering | None:
    """The error for a tmux command that was cancelled (a wait's own timeout) after the server had
    been silent for over a second, else None: a wait that timed out then should name tmux, not the worker."""
    return TmuxNotAnswering(_unanswered) if _unanswered else None


def _bound(within: float | None) -> tuple[float, str]:
    """How long a tmux client may take: CSD_TMUX_TIMEOUT, or ``within`` seconds when the caller's own time is
    shorter (a wait's timeout: the line then names tmux all the same); and what the error line says of it."""
    seconds = config.seconds("CSD_TMUX_TIMEOUT")
    if within is not None and within < seconds:
        return max(within, 0.0), ""
    return seconds, " (CSD_TMUX_TIMEOUT)"


def run_sync(args: Sequence[str], socket: str | None = None, input: bytes | None = None,
             within: float | None = None) -> tuple[int, str, str]:
    """One tmux command, unchecked, for the commands that should not pay for an event loop: (exit code, stdout,
    stderr). Bounded by CSD_TMUX_TIMEOUT, and by ``within`` seconds when the caller's own time is shorter (_bound)."""
    return Running(Call(list(args), socket, input, check=False, read=_answer), within).result()


def _answer(rc: int, out: str, err: str) -> tuple[int, str, str]:
    return rc, out, err


def list_panes_sync(socket: str | None = None, within: float | None = None) -> dict[str, Pane]:
    """Every session's pane with one tmux call (no server running: no sessions); ``within``: as run_sync."""
    rc, out, err = run_sync(["list-panes", "-a", "-F", PANE_FORMAT], socket, within=within)
    if rc != 0:
        if _no_server(err):
            return {}
        raise _error(["list-panes"], err)
    return parse_panes(out)


def _scratch(name: str) -> int:
    """An anonymous file for one stream of a tmux client. Not a pipe: the tmux server receives the
    client's descriptors, so a stopped server would hold a pipe open and a reader would wait forever
    after the client is killed."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())  # the dup keeps the unlinked file alive


def _streams(input: bytes | None) -> list[int]:
    """A client's stdout and stderr, and its stdin holding ``input`` when there is one (_scratch files)."""
    fds = [_scratch("tmux-out"), _scratch("tmux-err")]
    if input is not None:
        fds.append(_scratch("tmux-in"))
        os.write(fds[2], input)
        os.lseek(fds[2], 0, os.SEEK_SET)
    return fds


def _drain(fd: int) -> str:
    chunks = []
    pos = 0
    while chunk := os.pread(fd, 1 << 16, pos):
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks).decode(errors="replace")


async def run(
    args: Sequence[str], socket: str | None = None, input: bytes | None = None, check: bool = True
) -> tuple[int, str, str]:
    """Run one tmux command; with ``check`` a non-zero exit raises TmuxError.

    Bounded by CSD_TMUX_TIMEOUT (TmuxNotAnswering); a cancellation kills the client and returns at once.
    """
    import asyncio

    global _unanswered
    seconds = config.seconds("CSD_TMUX_TIMEOUT")
    fds = _streams(input)
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv(args, socket),
                stdin=fds[2] if input is not None else subprocess.DEVNULL,
                stdout=fds[0],
                stderr=fds[1],
                env=client_env(),
            )
        except FileNotFoundError:
            raise CsdError("tmux is not installed or not on PATH; install tmux (e.g. apt-get install tmux)") from None
        started = time.monotonic()
        try:
            async with asyncio.timeout(seconds):
                await proc.wait()
        except TimeoutError:
            raise TmuxNotAnswering(_not_answering(args, socket, seconds)) from None
        except asyncio.CancelledError:
            waited = time.monotonic() - started
            if waited > 1.0:
                _unanswered = _not_answering(args, socket, waited, bound="")
            raise
        finally:
            if proc.returncode is None:
                proc.kill()
                # no pipes: the killed client's exit is all there is to wait for
                await asyncio.shield(proc.wait())
        rc = proc.returncode or 0
        stdout, stderr = _drain(fds[0]), _drain(fds[1])
    finally:
        for fd in fds:
            os.close(fd)
    if check and rc != 0:
        raise _error(args, stderr)
    return rc, stdout, stderr


class Call(Value):
    """One tmux command as a value, run by ``call`` (asyncio) or ``call_sync`` (no event loop), so that what a
    command asks of tmux and how its answer is read are written once for both (send runs either way:
    csd/sending.py). ``read(rc, stdout, stderr)`` makes the answer (None without it); ``check``: a non-zero exit
    raises TmuxError; ``undo``: a command run (unchecked) when this one failed or was interrupted."""

    _fields = ("args", "socket", "input", "check", "read", "undo")
    args: list[str]
    socket: str | None
    input: bytes | None
    check: bool
    read: Callable[[int, str, str], Any] | None
    undo: list[str] | None

    def __init__(self, args: list[str], socket: str | None = None, input: bytes | None = None, check: bool = True,
                 read: Callable[[int, str, str], Any] | None = None, undo: list[str] | None = None) -> None:
        self._set(args=args, socket=socket, input=input, check=check, read=read, undo=undo)


async def call(c: Call) -> Any:
    try:
        rc, out, err = await run(c.args, c.socket, c.input, c.check)
    except BaseException:
        if c.undo is not None:
            with contextlib.suppress(CsdError):  # the failure is what the caller hears
                await run(c.undo, c.socket, check=False)
        raise
    return c.read(rc, out, err) if c.read is not None else None


class Running:
    """A tmux Call started with no event loop and not yet waited for (``result``): so that a command's first two
    round trips overlap (send's look at the screen while it asks about the process). Its streams are anonymous
    files, as ``run``'s are."""

    def __init__(self, c: Call, within: float | None = None) -> None:
        self.call = c
        self.seconds, self.bound = _bound(within)
        self.fds = _streams(c.input)
        try:
            stdin = self.fds[2] if c.input is not None else subprocess.DEVNULL
            self.proc = subprocess.Popen(argv(c.args, c.socket), stdin=stdin, stdout=self.fds[0], stderr=self.fds[1],
                                         env=client_env())
        except BaseException as exc:
            self._close()
            if isinstance(exc, FileNotFoundError):
                raise CsdError("tmux is not installed or not on PATH; install tmux (e.g. apt-get install tmux)") from None
            raise
        self.started = time.monotonic()

    def result(self) -> Any:
        """The call's answer (Call.read), once the client has exited; TmuxNotAnswering past its bound."""
        c = self.call
        try:
            try:
                rc = _exit_within(self.proc, max(0.0, self.started + self.seconds - time.monotonic()))
                if rc is None:
                    raise TmuxNotAnswering(_not_answering(c.args, c.socket, self.seconds, self.bound))
            finally:
                if self.proc.returncode is None:
                    self.proc.kill()
                    self.proc.wait()  # no pipes: the killed client's exit is all there is to wait for
            out, err = _drain(self.fds[0]), _drain(self.fds[1])
        finally:
            self._close()
        if c.check and rc != 0:
            raise _error(c.args, err)
        return c.read(rc, out, err) if c.read is not None else None

    def _close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def _exit_within(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    """``proc``'s exit code once it has exited, None if it is still running after ``seconds``. Woken by the
    exit itself through a pidfd: Popen.wait with a timeout polls at growing intervals (1, 2, 4, 8 ms...), which
    would add up to a few ms to every tmux client a command waits for."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (macOS, an old kernel): Popen's own wait
        try:
            return proc.wait(seconds)
        except subprocess.TimeoutExpired:
            return None
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        deadline = time.monotonic() + seconds
        while not poller.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000))):
            if time.monotonic() >= deadline:
                return None
    finally:
        os.close(pidfd)
    return proc.wait()


def start_sync(c: Call, within: float | None = None) -> Running:
    return Running(c, within)


def call_sync(c: Call, within: float | None = None) -> Any:
    """``c`` run with no event loop, bounded as run_sync is."""
    try:
        return Running(c, within).result()
    except BaseException:
        if c.undo is not None:
            with contextlib.suppress(CsdError):
                run_sync(c.undo, c.socket, within=within)
        raise


def pane_call(name: str, socket: str | None = None, pane_id: str = "") -> Call:
    """The worker's pane in exactly session ``name`` (worker_pane: ``pane_id`` if given, among the panes of every
    window of the session), or None when there is no such session or pane."""
    def read(rc: int, out: str, err: str) -> Pane | None:
        return worker_pane(parse_panes(out), name, pane_id) if rc == 0 else None

    return Call(["list-panes", "-s", "-t", session_target(name), "-F", PANE_FORMAT], socket, check=False, read=read)


def _output(rc: int, out: str, err: str) -> str:
    return out if rc == 0 else ""


def capture_call(name: str, socket: str | None = None, lines: int | None = 50) -> Call:
    """The pane's text with ``lines`` of history (None: all of it; an error line may have scrolled off)."""
    start = "-" if lines is None else f"-{lines}"
    return Call(["capture-pane", "-p", "-J", "-t", pane_target(name), "-S", start], socket, check=False, read=_output)


def visible_call(name: str, socket: str | None = None) -> Call:
    """Only what the pane shows now: a TUI that redraws by clearing the screen pushes its old frames into the
    history, where a stale copy of a dialog or an input line would be read first."""
    return Call(["capture-pane", "-p", "-t", pane_target(name)], socket, check=False, read=_output)


def out_of_mode(target: str) -> list[str]:
    """tmux commands that take pane ``target`` out of any mode it is in (copy mode, left on by a person who
    scrolled back in an attached worker and detached; choose-tree...), for the head of a call that sends keys: in a
    mode, tmux gives send-keys' keys to the mode, not to the program, so a prompt would be typed and its Enter
    never pressed. Checked in the server (``if-shell -F``), in the same client: no round trip more. ``copy-mode
    -q`` (tmux >= 3.2) leaves every mode; on an older tmux a pane in a mode makes the call fail, never the keys go
    astray."""
    return ["if-shell", "-F", "-t", target, "#{pane_in_mode}", f"copy-mode -q -t {target}", ";"]


def keys_call(name: str, *keys: str, literal: bool = False, socket: str | None = None) -> Call:
    target = pane_target(name)
    return Call([*out_of_mode(target), "send-keys", "-t", target, *(["-l"] if literal else []), *keys], socket)


def paste_call(name: str, data: bytes, buffer: str, socket: str | None = None, then: Sequence[str] = ()) -> Call:
    """Write ``data`` to exactly that pane's input as it is (``paste-buffer -r``: no LF -> CR, no markers of tmux's
    own), through a private buffer that is deleted afterwards. One load and one paste whatever the size; ``then``:
    keys pressed right after the paste (send's Enter), in the same tmux client: one round trip for all of it.
    tmux runs the commands of one client in order and skips the rest after one fails, so no key is pressed
    when the paste failed."""
    target = pane_target(name)
    keys = [";", "send-keys", "-t", target, *then] if then else []
    return Call([*out_of_mode(target), "load-buffer", "-b", buffer, "-", ";", "paste-buffer", "-r", "-d", "-b", buffer,
                 "-t", target, *keys], socket, input=data, undo=["delete-buffer", "-b", buffer])


async def active_pane(name: str, socket: str | None = None) -> Pane | None:
    """The pane ``pane_target(name)`` means (the active pane of the session's current window): the one adopt
    respawns, or None when there is no such session."""
    rc, out, _ = await run(["display-message", "-p", "-t", pane_target(name), PANE_FORMAT], socket, check=False)
    return worker_pane(parse_panes(out), name) if rc == 0 else None


async def pane_of(name: str, socket: str | None = None, pane_id: str = "") -> Pane | None:
    """The worker's pane in exactly session ``name`` (pane_call), or None."""
    return await call(pane_call(name, socket, pane_id))


async def has_session(name: str, socket: str | None = None) -> bool:
    rc, _, _ = await run(["has-session", "-t", session_target(name)], socket, check=False)
    return rc == 0


async def kill_session(name: str, socket: str | None = None) -> bool:
    rc, _, _ = await run(["kill-session", "-t", session_target(name)], socket, check=False)
    return rc == 0


async def others_in_session(name: str, pane_id: str, socket: str | None = None) -> list[str]:
    """The ids of session ``name``'s panes that are not ``pane_id`` (in any window): a person's, opened beside
    the worker's."""
    rc, out, _ = await run(["list-panes", "-s", "-t", session_target(name), "-F", "#{pane_id}"], socket, check=False)
    return [p for p in out.split() if p != pane_id] if rc == 0 else []


async def kill_pane(pane_id: str, socket: str | None = None) -> bool:
    rc, _, _ = await run(["kill-pane", "-t", pane_id], socket, check=False)
    return rc == 0


async def capture(name: str, socket: str | None = None, lines: int | None = 50) -> str:
    return await call(capture_call(name, socket, lines))


async def visible(name: str, socket: str | None = None) -> str:
    return await call(visible_call(name, socket))


async def send_keys(name: str, *keys: str, literal: bool = False, socket: str | None = None) -> None:
    await call(keys_call(name, *keys, literal=literal, socket=socket))


async def type_raw(name: str, data: bytes, buffer: str, socket: str | None = None, then: Sequence[str] = ()) -> None:
    await call(paste_call(name, data, buffer, socket, then))


def new_session_sync(name: str, cwd: str, argv: Sequence[str], width: int, height: int, socket: str | None = None) -> Pane | None:
    """A detached session ``name`` of ``width`` x ``height`` running ``argv`` in ``cwd``, and its pane as tmux made
    it (``-P``: no second call to ask for it). The pane stays when ``argv`` exits (remain-on-exit, set in the same
    tmux call), so that its last lines can be read. Synchronous: launch starts the pane before it imports the
    engine (csd/startpane.py)."""
    args = ["new-session", "-d", "-P", "-F", PANE_FORMAT, "-s", name, "-x", str(width), "-y", str(height), "-c", cwd,
            "--", *argv, ";", "set-option", "-p", "-t", pane_target(name), "remain-on-exit", "on"]
    with signals_held():  # an interrupt comes after it: the session is there or not, for the undo to know
        rc, out, err = run_sync(args, socket)
    if rc != 0:
        raise _error(["new-session"], err)
    return parse_panes(out).get(name)


def has_session_sync(name: str, socket: str | None = None) -> bool:
    return run_sync(["has-session", "-t", session_target(name)], socket)[0] == 0


def kill_session_sync(name: str, socket: str | None = None) -> bool:
    return run_sync(["kill-session", "-t", session_target(name)], socket)[0] == 0


async def respawn_pane(name: str, cwd: str, argv: Sequence[str], socket: str | None = None) -> None:
    """Replace what runs in session ``name``'s pane with ``argv`` in ``cwd`` (killing it if it still runs)."""
    await run(["respawn-pane", "-k", "-t", pane_target(name), "-c", cwd, "--", *argv], socket)


async def remain_on_exit(name: str, on: bool, socket: str | None = None, check: bool = True) -> None:
    """Keep session ``name``'s pane (dead, showing its last lines) when its process exits, or not."""
    await run(["set-option", "-p", "-t", pane_target(name), "remain-on-exit", "on" if on else "off"], socket, check=check)


def attach_line(name: str, socket: str | None = None) -> str:
    """The shell command that attaches a terminal to session ``name`` (for a person to run)."""
    return shlex.join(argv(["attach", "-t", session_target(name)], socket))


def kill_line(name: str, socket: str | None = None) -> str:
    """The shell command that ends session ``name`` (for a person to run)."""
    return shlex.join(argv(["kill-session", "-t", session_target(name)], socket))


def respawn_line(name: str, socket: str | None = None) -> str:
    """The shell command that restarts session ``name``'s dead pane (for a person to run)."""
    return shlex.join(argv(["respawn-pane", "-k", "-t", pane_target(name)], socket))


def session_names_sync(socket: str | None = None) -> list[str] | None:
    """The server's session names; None when no server answers (none running, or not tmux at all)."""
    try:
        rc, out, _ = run_sync(["list-sessions", "-F", "#{session_name}"], socket)
    except CsdError:
        return None
    return out.split("\n")[:-1] if rc == 0 else None


def kill_server_sync(socket: str) -> None:
    """End the server on ``socket`` and every pane's process (they get SIGHUP); nothing if there is none.
    Synchronous: it also runs in clean-up after a Ctrl-C, where the event loop may be cancelling."""
    with contextlib.suppress(CsdError):
        run_sync(["kill-server"], socket)
