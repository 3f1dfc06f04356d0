"""``csd demo``: the whole loop (launch, converse, fan out, watch, read, stop) with simulated workers in a private sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console

from csd import tmux
from csd.errors import FAILURE, OK, UsageError
from csd.clock import epoch, now_iso
from csd.workers import CONSENT_FILE, Meta, WorkersDir

if TYPE_CHECKING:
    from csd.supervisor import Supervisor

T = TypeVar("T")

MAX_WORKERS = 12
#: tmux refuses socket paths longer than sun_path (~104 bytes); a long $TMPDIR falls back to /tmp.
MAX_SOCKET_PATH = 100
#: How long the check waits for processes that are already exiting (a tmux server closing down).
EXIT_GRACE = 5.0
#: Variables the demo replaces while it runs (csd reads its configuration from the environment).
#: CLAUDE_CONFIG_DIR is removed so transcripts land in the sandbox HOME, not the user's config dir.
SANDBOX_VARS = ("HOME", "CSD_WORKERS_DIR", "CSD_TMUX_SOCKET", "CSD_CLAUDE_BIN", "IS_SANDBOX", "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_TMPDIR")


@dataclass
class Sandbox:
    """A temporary HOME, workers dir, project dir and tmux socket: the demo touches nothing else."""

    root: Path
    home: Path
    workers: Path
    project: Path
    socket: str
    claude_bin: str
    saved: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Sandbox:
        base = tempfile.gettempdir()
        if len(os.path.join(base, "csd-demo-xxxxxxxx", "tmux.sock")) > MAX_SOCKET_PATH and os.path.isdir("/tmp"):
            base = "/tmp"
        root = Path(tempfile.mkdtemp(prefix="csd-demo-", dir=base))  # mode 0700
        home, project = root / "home", root / "project"
        (home / ".claude").mkdir(parents=True)
        project.mkdir()
        # Consent is granted in the sandbox HOME only: the demo must never grant it in the user's real HOME.
        (home / CONSENT_FILE).write_text(f"granted {now_iso()} by csd demo (sandbox)\n")
        return cls(root, home, root / "workers", project, str(root / "tmux.sock"), simworker_command(root))

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        values = {
            "HOME": str(self.home),
            "CSD_WORKERS_DIR": str(self.workers),
            "CSD_TMUX_SOCKET": self.socket,
            "CSD_CLAUDE_BIN": self.claude_bin,
            # the simulated worker, like claude, refuses --dangerously-skip-permissions as root without it
            "IS_SANDBOX": "1",
            "CLAUDE_CONFIG_DIR": None,
            # background-task output goes here, inside the sandbox, not /tmp/claude-<uid>
            "CLAUDE_CODE_TMPDIR": str(self.root / "cctmp"),
        }
        self.saved = {k: os.environ.get(k) for k in SANDBOX_VARS}
        try:
            for k, v in values.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield
        finally:
            for k, old in self.saved.items():
                if old is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = old


def simworker_command(root: Path) -> str:
    """The simulated worker next to this interpreter, else a wrapper that runs ``python -m csd.sim``."""
    script = Path(sys.executable).parent / "csd-simworker"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    (root / "bin").mkdir(exist_ok=True)
    wrapper = root / "bin" / "csd-simworker"
    package_parent = Path(__file__).resolve().parent.parent
    # PYTHONPATH: the worker runs in another cwd, where `-m csd.sim` would not find an uninstalled csd.
    wrapper.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(package_parent))}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(sys.executable)} -m csd.sim "$@"\n'
    )
    wrapper.chmod(0o700)
    return str(wrapper)


class Narrator:
    """A few clear lines per step on stderr (stdout stays empty: the demo has no answer to print)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def step(self, text: str) -> None:
        self.console.print(text, style="bold", markup=False, highlight=False, soft_wrap=True)

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print("  " + text, style=style, markup=False, highlight=False, soft_wrap=True)


async def _gather(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; the first failure cancels the rest and is raised as itself (not a group)."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return [t.result() for t in tasks]


def fan_out_seconds(n: int) -> list[float]:
    """Turn lengths for the fan-out: the first worker gets the longest, so wait_any has a real winner."""
    step = 1.0 if n <= 4 else 3.0 / (n - 1)
    return [round(1 + (n - 1 - i) * step, 1) for i in range(n)]


async def demo(workers: int = 3, table: bool = True) -> int:
    """Run the whole loop on this machine with simulated workers; exit 0 when it worked and left nothing."""
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"invalid --workers {workers}: use 1 to {MAX_WORKERS}")
    console = Console(stderr=True, highlight=False)
    say = Narrator(console)
    sandbox = Sandbox.create()
    finished = False
    problems: list[str] = []
    try:
        with sandbox.environment():
            say.step(f"csd demo: {workers} simulated workers (no claude, no account, no network) in a sandbox")
            say.say(f"sandbox {sandbox.root}: its own HOME, workers dir and tmux server; your ~/.claude and tmux are untouched")
            say.say(f"tmux socket {sandbox.socket}")
            say.say(f"simulated worker {sandbox.claude_bin}")
            say.say(f"watch it from another terminal: CSD_WORKERS_DIR={sandbox.workers} csd watch")
            await _loop(sandbox, say, workers, table)
            problems = _verify(sandbox, say)
        finished = True
    finally:
        if not finished:
            say.say("stopped early: cleaning up (the sandbox's tmux server, its workers, the sandbox itself)", style="yellow")
        _cleanup(sandbox, say)
    if problems:
        say.step("csd demo: FAILED - something was left behind: " + "; ".join(problems))
        return FAILURE
    say.step("csd demo: done - the whole loop ran on this machine and left nothing behind")
    return OK


async def _loop(sb: Sandbox, say: Narrator, n: int, table: bool) -> None:
    from csd.fleet import Fleet

    names = [f"demo-{i + 1}" for i in range(n)]
    async with Fleet(WorkersDir(sb.workers)) as sup:
        say.step(f"[1/6] launch {n} workers at once (Fleet.launch)")
        t0 = time.monotonic()
        metas = await _gather([sup.launch(name, str(sb.project)) for name in names])
        say.say(f"{', '.join(names)}: idle after {time.monotonic() - t0:.1f}s, each in its own tmux session")

        first = names[0]
        say.step(f"[2/6] converse with {first} (send, wait for the turn, read the reply)")
        for prompt in ("REPLY:Hello! I am a simulated Claude Code worker.", "TOOL:Bash:echo 6 times 7 is $((6*7))"):
            reply = await sup.converse(first, prompt)
            say.say(f"> {prompt}", style="cyan")
            say.say(f"< {reply.text()}", style="green")

        say.step("[3/6] fan out: a prompt of a different length to each worker, then wait_any and wait_all")
        if table and say.console.is_terminal:
            await _with_live_table(sup, say.console, metas, _fan_out(sup, say, names))
        else:
            if table:
                say.say("(live table skipped: stderr is not a terminal)")
            await _fan_out(sup, say, names)

        say.step(f"[4/6] read_turn {first}: its last turn from the transcript, as markdown")
        for line in sup.read_turn(first).splitlines():
            say.say("| " + line, style="dim")

        say.step(f"[5/6] stop all {n} workers (/exit, wait for the session to end, remove their files)")
        t0 = time.monotonic()
        await _gather([sup.stop(name) for name in names])
        say.say(f"stopped {', '.join(names)} in {time.monotonic() - t0:.1f}s")


async def _fan_out(sup: Supervisor, say: Narrator, names: list[str]) -> None:
    seconds = fan_out_seconds(len(names))
    prompts = [
        f"TOOL:Bash:echo {name} is working for {s:g}s\nSLEEP:{s:g}\nREPLY:{name} done after {s:g}s"
        for name, s in zip(names, seconds)
    ]
    submitted = await _gather([sup.send(name, p) for name, p in zip(names, prompts)])
    say.say("sent " + ", ".join(f"SLEEP:{s:g} to {name}" for name, s in zip(names, seconds)))
    t0 = time.monotonic()
    winner, _ = await sup.wait_any(names)
    say.say(f"wait_any: {winner} finished first ({time.monotonic() - t0:.1f}s)", style="green")
    done = await sup.wait_all(names)
    say.say(f"wait_all: all {len(names)} finished after {time.monotonic() - t0:.1f}s", style="green")
    sent_at = {name: ev.ts for name, ev in zip(names, submitted)}
    order = sorted(done, key=lambda item: item[1].ts)
    say.say("in order: " + ", ".join(f"{name} ({_elapsed(sent_at[name], ev.ts)})" for name, ev in order))


def _elapsed(start: str, end: str) -> str:
    a, b = epoch(start), epoch(end)
    return "?" if a is None or b is None else f"{b - a:.1f}s"


async def _with_live_table(sup: Supervisor, console: Console, metas: list[Meta], work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` under the live table of the workers, redrawn on each of their events."""
    from csd.render import LiveRows, live_table

    rows = LiveRows(sup)
    for meta in metas:
        await rows.add(meta)
    with live_table(console, rows.snapshot()) as draw:
        async with asyncio.TaskGroup() as tg:
            drawer = tg.create_task(rows.draw_on_change(draw))
            try:
                await work
            finally:
                drawer.cancel()


def _verify(sb: Sandbox, say: Narrator) -> list[str]:
    """Step 6: no tmux server, no processes, no files; returns what is left (empty when all is clean)."""
    say.step("[6/6] check that nothing is left behind")
    problems: list[str] = []
    sessions = tmux.session_names_sync(sb.socket)
    if sessions:
        problems.append(f"tmux sessions still running: {' '.join(sessions)}")
    elif sessions is not None:
        tmux.kill_server_sync(sb.socket)  # a server told to outlive its sessions (exit-empty off) is ours to end
    left = _wait_exit(sb, EXIT_GRACE)
    if left is None:
        say.say("(no /proc here: cannot list processes; the tmux server check stands in for it)")
    elif left:
        problems.append(f"processes still running: {', '.join(map(str, left))}")
    else:
        say.say("no tmux server and no worker, hook or tool process left", style="green")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sb.socket)  # tmux leaves its socket file behind when the server exits
    files = [str(p.relative_to(sb.workers)) for p in sb.workers.rglob("*") if not p.is_dir()] if sb.workers.exists() else []
    if files:
        problems.append(f"files left in the workers dir: {', '.join(sorted(files))}")
    else:
        say.say("no meta, events file, lock or shim left in the workers dir", style="green")
    _cleanup(sb)
    if sb.root.exists():
        problems.append(f"could not remove {sb.root}")
    else:
        say.say(f"sandbox {sb.root} removed, tmux socket included", style="green")
    return problems


def _processes_of(sb: Sandbox) -> list[int] | None:
    """The processes this run caused that are still there (not this one); None where there is no /proc.

    The sandbox path is unique to this run: the tmux server carries its socket in its command line, and
    every worker, hook and tool inherits CSD_EVENTS_FILE in it. An operator's ``csd watch`` of the
    sandbox (which the demo suggests) has neither, so it is neither reported nor killed.
    """
    if not os.path.isdir("/proc"):
        return None
    in_cmdline = sb.socket.encode()
    in_environ = f"CSD_EVENTS_FILE={sb.workers}/".encode()
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        for part, needle in (("cmdline", in_cmdline), ("environ", in_environ)):
            try:
                with open(f"/proc/{entry.name}/{part}", "rb") as f:
                    if needle in f.read():
                        found.append(int(entry.name))
                        break
            except OSError:
                continue  # exited meanwhile, or not ours to read
    return found


def _wait_exit(sb: Sandbox, timeout: float) -> list[int] | None:
    """The sandbox's processes (see _processes_of) left once those already exiting have exited.

    They get up to ``timeout`` in all, each exit waking us through its pidfd (no polling); None where
    there is no /proc. Synchronous on purpose: cleanup after a Ctrl-C runs it while the task is cancelled.
    """
    deadline = time.monotonic() + timeout
    while True:
        pids = _processes_of(sb)
        left = deadline - time.monotonic()
        if not pids or left <= 0 or not hasattr(os, "pidfd_open"):
            return pids
        poller = select.poll()
        fds = []
        for pid in pids:
            try:
                fds.append(os.pidfd_open(pid))
            except OSError:
                continue  # already gone
            poller.register(fds[-1], select.POLLIN)
        if not fds:
            continue  # all gone between the scan and the pidfds: the next scan says so
        try:
            waiting = len(fds)
            while waiting and (left := deadline - time.monotonic()) > 0:
                for fd, _ in poller.poll(left * 1000):
                    poller.unregister(fd)
                    waiting -= 1
        finally:
            for fd in fds:
                os.close(fd)
        # an exited process lingers as a zombie until reaped, with no command line or environment left;
        # loop once more for any process started meanwhile (a hook fired by a worker on its way out)


def _cleanup(sb: Sandbox, say: Narrator | None = None) -> None:
    """Leave nothing behind, whatever happened: end the sandbox's tmux server and workers, remove the sandbox."""
    if os.path.exists(sb.socket):
        tmux.kill_server_sync(sb.socket)  # its panes' processes get SIGHUP and exit
        for pid in _wait_exit(sb, EXIT_GRACE) or []:
            # still running after the grace period, and ours: its environment names this run's sandbox
            if say is not None:
                say.say(f"killing process {pid}, still running after {EXIT_GRACE:g}s", style="yellow")
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sb.socket)
    shutil.rmtree(sb.root, ignore_errors=True)
