"""What ``send`` and ``converse`` do, written once for the two ways csd runs them.

``steps`` is send's algorithm as a generator: it yields what it needs done and is handed the answer (or the
exception, thrown in at the yield): a ``tmux.Call``, ``Pause(seconds)``, ``Submitted(seconds)`` (the event
that confirms the prompt, or None once the time has passed) or ``Died()`` (the pane went away). Two drivers
run it: csd.supervisor with asyncio (the Python API, watch, demo, fleets) and csd.waiter with no event loop
(the ``send`` and ``converse`` commands, which then start without importing asyncio: ~45 ms of a send's ~100,
bench/README.md). The rules around the steps (what may be sent, what confirms it, what ends the conversed
turn, what the reply is) are plain functions both drivers call. Also the per-worker lock two controllers
take before they type.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Generator, Iterable, Reversible

from csd import config, tmux
from csd.clock import epoch, now_iso
from csd.console import err
from csd.errors import CsdError, EmptyReply, NotRunning, TurnFailed, UsageError
from csd.events import Event, failure_line, failure_text
from csd.prompt import ENTER_READY_AFTER_START, INGEST_CHARS_PER_S, input_line, input_stream, unknown_command
from csd.reply import TRANSCRIPT_LAG_LIMIT, Reply
from csd.states import ENDED, State, Worker
from csd.value import Value
from csd.workers import Meta, WorkersDir, events_unwritable, open_regular

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (send starts without it)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from csd.prompt import InputLine

    Steps = Generator[object, Any, Event]

#: How long a second controller reads the lock file for its holder's line before giving up on it, and how
#: often: the holder writes it a few microseconds after it takes the lock.
LOCK_HOLDER_WAIT, LOCK_HOLDER_RETRY = 1.0, 0.005
#: While a slash command waits for its confirmation, how often send looks for "Unknown command" on the screen.
UNKNOWN_COMMAND_CHECK = 0.1
#: How long send waits for the screen to show an emptied input line (the TUI redraws within ~50 ms).
CLEAR_INPUT_TIMEOUT = 2.0


class Pause(Value):
    """A step: wait this long (a fixed delay the TUI needs; each says why where it is yielded)."""

    _fields = ("seconds",)
    seconds: float

    def __init__(self, seconds: float) -> None:
        self._set(seconds=seconds)


class Submitted(Value):
    """A step: the event that confirms the prompt (``confirmation``), waited for up to ``seconds``; None when the
    time passed first. Raises NotRunning when the worker ended, CsdError when its events cannot be written."""

    _fields = ("seconds",)
    seconds: float

    def __init__(self, seconds: float) -> None:
        self._set(seconds=seconds)


class Died(Value):
    """A step: the worker's pane is gone (a key could not be pressed): the driver marks the worker gone."""


class Prepared(Value):
    """A prompt as send delivers it: the text, whether it is typed exactly (else one paste), how long its
    confirmation may take, and whether it is a slash command or a bash-mode command."""

    _fields = ("text", "shell", "exact", "submit_timeout", "slash")
    text: str
    shell: bool
    exact: bool
    submit_timeout: float
    slash: bool

    def __init__(self, text: str, shell: bool, exact: bool, submit_timeout: float, slash: bool) -> None:
        self._set(text=text, shell=shell, exact=exact, submit_timeout=submit_timeout, slash=slash)


def prepare(prompt: str, shell: bool) -> Prepared:
    """The prompt as the model will get it (``prompt.clean_prompt``: csd/prompt.py has the rules); refuses an
    empty one. ``shell``: run as a command in Claude Code's bash mode (``!``); otherwise a leading ``!`` is text.
    A prompt over CSD_EXACT_PROMPT_LIMIT goes as one paste (``announce`` says so); an exact one gets the time the
    TUI takes to ingest it on top of CSD_SUBMIT_TIMEOUT."""
    from csd.prompt import clean_prompt

    text = clean_prompt(prompt)
    if shell and text.startswith("!"):
        text = text[1:]
    if not text.strip():
        raise UsageError("refusing to send an empty prompt" + (" (the prompt was only whitespace and control characters)" if prompt else ""))
    submit_timeout = config.seconds("CSD_SUBMIT_TIMEOUT")
    exact = len(text) <= config.count("CSD_EXACT_PROMPT_LIMIT")
    if exact:
        submit_timeout += len(text) // INGEST_CHARS_PER_S  # the TUI takes in many pastes at its own pace
    return Prepared(text, shell, exact, submit_timeout, not shell and text.lstrip().startswith("/"))


def announce(p: Prepared) -> None:
    """Say on stderr how a prompt too long to type exactly goes (once the worker is known to take it: a refusal
    stays one line)."""
    if not p.exact:
        err(f"csd: note: the prompt has {len(p.text)} characters, over CSD_EXACT_PROMPT_LIMIT="
            f"{config.count('CSD_EXACT_PROMPT_LIMIT')}: sent as one paste, which Claude Code shows as [Pasted text] "
            "and hands to the model wrapped in <pasted_content>")


def check_sendable(wdir: WorkersDir, name: str, state: State) -> None:
    """Only an idle worker takes a prompt, and only while its events can be written."""
    shim = wdir.shim_path(name)
    if state == State.WORKING:
        raise CsdError(f"cannot send to {name!r} while it is working (Claude Code would queue the prompt); run: {shim} wait-for-turn")
    if state == State.LAUNCHING:
        raise CsdError(f"cannot send to {name!r} while it is launching; run: {shim} wait-for-turn")
    if state in ENDED:
        raise NotRunning(f"cannot send to {name!r}: it is {state}; check it with: {shim} status")
    why = events_unwritable(wdir)
    if why is not None:
        # the prompt would run, but its events (and the turn's end) would be lost
        raise CsdError(f"not sending to {name!r}: {why}")


def enter_hold(worker: Worker, now: float) -> float:
    """How long an Enter (send's, stop's /exit) must wait when it comes right after launch: until
    prompt.ENTER_READY_AFTER_START after the worker's session_start (the TUI swallows an earlier one); 0 later."""
    started = worker.started
    at = epoch(started.ts) if started is not None else None
    if at is None:
        return 0.0
    hold = at + ENTER_READY_AFTER_START - now
    return hold if 0 < hold <= ENTER_READY_AFTER_START else 0.0  # a clock that moved back must not hold longer


def confirmation(name: str, state: State, removed: bool, events: Iterable[Event], mark: tuple[int, int], slash: bool,
                 doing: Callable[[], str]) -> Event | None:
    """The event after ``mark`` (Event.pos) that confirms the prompt: its user_prompt_submit or, for a slash
    command or a bash-mode command, the first event it fires (``/compact``, ``/clear`` fire their own).
    Raises NotRunning once the worker has ended."""
    if removed or state in ENDED:
        raise NotRunning(f"worker {name!r} ended while the prompt was being sent ({doing()})")
    for ev in events:
        if ev.pos > mark and (ev.name == "user_prompt_submit" or (slash and ev.known)):
            return ev
    return None


def steps(meta: Meta, shim: str, p: Prepared, screen: str, hold: Callable[[], float], doing: Callable[[], str]) -> Steps:
    """Send ``p`` to the worker: empty its input line (``screen``: its pane as send first saw it), type the text
    and press Enter (after ``hold()`` seconds, asked right then: enter_hold), then wait for the confirmation,
    pressing Enter again every CSD_SUBMIT_RETRY_INTERVAL (the TUI may have swallowed it). Returns the confirming
    event."""
    name, where, socket = meta.tmux_name, meta.where, meta.tmux_socket
    try:
        yield from _empty_input(name, where, socket, shim, screen)
        before = (yield tmux.capture_call(where, socket, lines=200)) if p.slash else ""
        stream = input_stream(p.text, p.shell, p.exact)
        if (seconds := hold()) > 0:
            yield Pause(seconds)
        # the text and its Enter in one tmux call (checked on the real binary: tests/e2e/test_prompt_delivery.py)
        yield tmux.paste_call(where, stream, f"csd-{meta.session_id}", socket, then=("Enter",))
    except tmux.TmuxError:
        if (yield tmux.pane_call(name, socket)) is None:
            raise NotRunning(f"worker {name!r} is gone: its tmux session ended while the prompt was being sent") from None
        raise
    return (yield from _until_submitted(name, where, socket, shim, p, before, doing))


def _until_submitted(name: str, where: str, socket: str | None, shim: str, p: Prepared, before: str,
                     doing: Callable[[], str]) -> Steps:
    """The confirming event, pressing Enter again every CSD_SUBMIT_RETRY_INTERVAL and, for a slash command,
    reading the screen for "Unknown command". ``where``: the worker's pane (Meta.where)."""
    retry = config.seconds("CSD_SUBMIT_RETRY_INTERVAL")
    command = p.text.split(None, 1)[0] if p.slash else ""
    now = time.monotonic()
    deadline, next_press, presses = now + p.submit_timeout, now + retry, 1
    while (now := time.monotonic()) < deadline:
        wake = min(deadline, next_press, now + UNKNOWN_COMMAND_CHECK if p.slash else deadline)
        ev = yield Submitted(max(0.0, wake - now))
        if ev is not None:
            return ev
        if p.slash:
            words = unknown_command(before, (yield tmux.capture_call(where, socket, lines=200)), command)
            if words is not None:
                raise UsageError(f"{name!r} does not know the command {command!r}; its screen says: {words}")
        if next_press <= time.monotonic() < deadline:
            try:
                yield tmux.keys_call(where, "Enter", socket=socket)
            except tmux.TmuxError:
                if (yield tmux.pane_call(name, socket)) is not None:
                    raise
                yield Died()
                continue  # the next Submitted reports it
            presses += 1
            next_press += retry
    raise CsdError(
        f"{name!r} did not confirm the prompt within {p.submit_timeout:g}s (no user_prompt_submit after {presses} "
        f"Enter presses; {doing()}); see the screen with: {shim} handoff"
    )


def _empty_input(name: str, where: str, socket: str | None, shim: str, screen: str) -> Generator[object, Any, None]:
    """Start from an empty prompt-mode input line: Esc, Esc clears it wherever the cursor is, Backspace leaves an
    empty bash-mode line. What was cleared is named on stderr (it may be a human's typing after a handoff).
    ``where``: the worker's pane (Meta.where), ``name`` for the messages.

    Text that Esc, Esc leaves exactly as it was is not input but a hint the TUI draws in an empty line
    ("Press up to edit queued messages"): send goes on.
    """
    line: InputLine | None = input_line(screen)
    if line is None or line.clean:
        return  # an empty line, or none on the screen to read (csd cannot check it)
    # Text the TUI is still taking away by itself is not left over: right after a /clear's SessionStart the real
    # TUI may show "/clear" a moment more (seen once in ~15 e2e runs), and Esc, Esc then lands on the line it
    # empties, opening its rewind menu. Look every 20 ms, 0.3 s at most, before clearing anything.
    for _ in range(15):
        yield Pause(0.02)
        now = input_line((yield tmux.visible_call(where, socket)))
        if now is not None and now.clean:
            return
        line = now or line
    left = line
    deadline = time.monotonic() + CLEAR_INPUT_TIMEOUT
    while line is None or not line.clean:
        if time.monotonic() >= deadline:
            if line == left and left.mode == "prompt":
                return  # Esc, Esc never changed it: a hint, not input
            shows = "no input line" if line is None else repr(line.text[:80]) + (" in bash mode" if line.mode == "shell" else "")
            raise CsdError(f"could not empty the input line of {name!r} (it shows {shows}); see it with: {shim} handoff")
        if line is None:
            # Esc, Esc on an input line that was empty already opens Claude Code's rewind menu: close it. The
            # line was empty, so what it showed was a hint.
            yield tmux.keys_call(where, "Escape", socket=socket)
            if left.mode == "prompt":
                return
        elif line.text:
            yield tmux.keys_call(where, "Escape", socket=socket)
            yield Pause(0.1)  # two Escapes in one read would be one Meta-Escape
            yield tmux.keys_call(where, "Escape", socket=socket)
        else:
            yield tmux.keys_call(where, "BSpace", socket=socket)
        before = line
        # the TUI redraws; no event says when (~50 ms, more on a busy machine): look every 20 ms, 0.5 s at most
        for _ in range(25):
            yield Pause(0.02)
            line = input_line((yield tmux.visible_call(where, socket)))
            if line != before:
                break
    what = f"{left.text[:80]!r}" if left.text else "nothing"
    err(f"csd: note: cleared what was left in {name!r}'s input line" + (" (bash mode)" if left.mode == "shell" else "") + f": {what}")


class Driven:
    """Steps being run, for a driver's loop: iterating gives each step; the driver sets ``answer`` (what the step
    gives back) or ``error`` (thrown into the steps at that step) before the next; ``value`` is the result."""

    def __init__(self, gen: Steps) -> None:
        self.gen = gen
        self.answer: object = None
        self.error: Exception | None = None
        self.value: Event | None = None

    def __iter__(self) -> Driven:
        return self

    def __next__(self) -> object:
        answer, error, self.answer, self.error = self.answer, self.error, None, None
        try:
            return self.gen.throw(error) if error is not None else self.gen.send(answer)
        except StopIteration as done:
            self.value = done.value
            raise StopIteration from None


def drive(gen: Steps, do: Callable[[object], object]) -> Event:
    """Run ``steps`` with no event loop: ``do(step)`` answers each step (csd.supervisor's driver is the same
    loop with ``await``)."""
    run = Driven(gen)
    for step in run:
        try:
            run.answer = do(step)
        except Exception as exc:  # into the steps, at the step that failed (a KeyboardInterrupt is not handed in)
            run.error = exc
    assert run.value is not None
    return run.value


def path_hint(recent: Reversible[Event], worker: Worker) -> Event | None:
    """The newest event that names the transcript (it changes with /clear): among ``recent`` (newest last),
    else the worker's last event, turn end or turn start."""
    for ev in reversed(recent):
        if isinstance(ev.data.get("transcript_path"), str):
            return ev
    for known in (worker.last_event, worker.turn_end, worker.turn_start):
        if known is not None and isinstance(known.data.get("transcript_path"), str):
            return known
    return None


def check_arrival(name: str, shim: str, p: Prepared, ev: Event) -> None:
    """Warn when the hook's ``prompt`` is not what was sent (it caps long values: then the kept start must match)."""
    got = ev.data.get("prompt")
    if ev.name != "user_prompt_submit" or not p.exact or p.slash or p.shell or not isinstance(got, str):
        return
    cut = got.rfind("…[truncated ")
    if got == p.text or (cut >= 0 and p.text.startswith(got[:cut])):
        return
    err(f"csd: warning: {name!r} received the prompt altered (sent {len(p.text)} characters, "
        f"it recorded {got[:60]!r}...); see it with: {shim} read-turn")


def turn_end(name: str, worker: Worker, removed: bool, submitted: Event, doing: Callable[[], str]) -> Event | None:
    """What ends a conversed turn: the turn end after ``submitted`` once the worker is idle; None while it works.
    Raises NotRunning when the worker died or exited during the turn."""
    if removed or worker.state == State.GONE:
        raise NotRunning(f"worker {name!r} died during the turn ({doing()})")
    if worker.state == State.TERMINATED:
        raise NotRunning(f"worker {name!r} exited during the turn ({doing()})")
    end = worker.turn_end
    if worker.state == State.IDLE and end is not None and end.pos > submitted.pos:
        return end
    return None


def reply_of(wdir: WorkersDir, meta: Meta, submitted: Event, stop: Event, before: Path | None, offset: int,
             backend: str | None) -> Reply:
    """The conversed turn's Reply (``before``, ``offset``: the transcript and its size before the send). Raises
    TurnFailed when the stop line says the turn failed."""
    from csd.reply import transcript_file

    if stop.error is not None:
        raise TurnFailed(failure_line(meta.tmux_name, stop), stop)
    path = transcript_file(wdir, meta, submitted)
    return Reply(meta, submitted, stop, path, backend, offset if path == before else 0)


def checked(reply: Reply, shim: str) -> Reply:
    """The reply once its transcript was waited for (when ``needs_transcript``): TurnFailed when the transcript
    shows the turn's API error, EmptyReply when there is no text; a warning when it stays cut."""
    name = reply.meta.tmux_name
    if reply.needs_transcript:
        turn = reply.turn()
        if turn is not None and turn.api_error is not None:
            from csd.transcript import final_text

            raise TurnFailed(failure_text(name, turn.api_error, final_text(turn)), reply.stop)
    text = reply.text()
    if not text.strip():
        reason = reply.why_empty()
        raise EmptyReply(f"{name!r} ended its turn with no reply text ({reason}); see it with: {shim} read-turn", reason)
    if reply.truncated(text):
        err(f"csd: warning: {name!r}: the reply was cut to {len(text)} characters by the hook and the transcript "
            f"({reply.transcript}) did not complete it within {TRANSCRIPT_LAG_LIMIT:g}s; printing what there is")
    return reply


def _flock_holder(fd: int) -> str:
    """Who holds the flock on ``fd``'s file, from /proc/locks (for a holder that never wrote its line)."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                parts = line.split()
                if "FLOCK" in parts and key in parts:
                    return f"pid {parts[parts.index(key) - 1]}"
    except OSError:
        pass
    return "another process"


class WorkerLock:
    """The per-worker lock that stops two controllers from interleaving input on one worker."""

    def __init__(self, wdir: WorkersDir, meta: Meta, what: str) -> None:
        self.path = wdir.lock_path(meta.session_id)
        self.meta = meta
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> WorkerLock:
        fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + LOCK_HOLDER_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # The holder writes who it is just after it takes the lock: a loser that reads in between
                # reads nothing, so it reads again (briefly) rather than tell the user nothing.
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                if not holder and time.monotonic() < deadline:
                    time.sleep(LOCK_HOLDER_RETRY)
                    continue
                holder = holder or _flock_holder(fd)
                os.close(fd)
                raise CsdError(f"worker {self.meta.tmux_name!r} is busy: {holder} holds its lock; wait for it to finish, then retry") from None
            except BaseException:
                os.close(fd)
                raise
        with contextlib.suppress(OSError):  # who holds it is a courtesy: a full disk must not fail the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({self.what}, since {now_iso()})".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None
