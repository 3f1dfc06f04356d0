"""Helpers shared by the tests: a private world (workers dir, HOME, tmux socket) and csd run as a controller would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

from csd.workers import Meta, WorkersDir

SIMWORKER = str(Path(sys.executable).parent / "csd-simworker")


@dataclass
class Env:
    """One test's private world: workers dir, HOME, and tmux socket (all under tmp_path)."""

    root: Path
    wdir: WorkersDir
    home: Path
    socket: str

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=check)

    def session(self, name: str, *cmd: str) -> None:
        """A real tmux session running ``cmd`` (default: a long sleep) on the private server."""
        self.tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "30", *(["--", *cmd] if cmd else ["--", "sleep", "100000"]))

    def add_worker(self, name: str, events: list[dict] | None = None, live: bool = True, sid: str | None = None,
                   meta_extra: dict | None = None, raw_lines: list[str] | None = None) -> Meta:
        """A worker made of a meta, an events file and (when live) a real tmux session."""
        sid = sid or str(uuid.uuid4())
        meta = {"tmux_name": name, "session_id": sid, "cwd": str(self.root), "started_at": "2026-11-25T00:00:00Z"}
        meta.update(meta_extra or {})
        self.wdir.ensure()
        self.wdir.meta_path(sid).write_text(json.dumps(meta))
        lines = [json.dumps({"ts": "2026-11-25T00:00:01Z", **e}) for e in (events or [])] + (raw_lines or [])
        self.wdir.events_path(sid).write_text("".join(line + "\n" for line in lines))
        if live:
            self.session(name)
        return self.wdir.read_meta(sid)


def kill_server(socket: str) -> None:
    try:
        subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True, timeout=10)
    except Exception:
        pass
    try:
        os.unlink(socket)
    except OSError:
        pass


def csd(*argv: str, input: bytes | None = None, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "csd", *argv], input=input, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def popen(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "csd", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


def launch(env: Env, name: str, *claude_args: str) -> Path:
    proc = csd("launch", name, str(env.root), *(["--", *claude_args] if claude_args else []))
    assert proc.returncode == 0, proc.stderr.decode()
    return Path(proc.stdout.decode().strip())


def status(shim: Path) -> str:
    return subprocess.run([str(shim), "status"], capture_output=True, text=True).stdout.strip()


def events(shim: Path, type_: str | None = None) -> list[dict]:
    out = subprocess.run([str(shim), "read-events", *(["--type", type_] if type_ else [])], capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def until(what: Callable[[], Any], timeout: float = 20) -> Any:
    """What ``what()`` returns once it is truthy: for what a worker does in its own time (the statusLine
    command ~0.3 s after Stop, a kill noticed); checked every 50 ms, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            assert got, "condition never held"
            return got
        time.sleep(0.05)


def listed(name: str) -> dict[str, Any]:
    """The worker's object in ``csd list --all --json``."""
    proc = csd("list", "--all", "--json", name)
    assert proc.returncode == 0, proc.stderr.decode()
    (row,) = [obj for line in proc.stdout.decode().splitlines() if (obj := json.loads(line))["name"] == name]
    return row


def wait_blocked(proc: subprocess.Popen[bytes]) -> None:
    """Until the csd process is tracking its worker: it holds a pidfd on the worker's process, which it
    opens after its watch is set up (both backends). Read from /proc. The pidfds csd holds on its own tmux
    clients while they run (tmux._exit_within) are not that one: their process is csd's child."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if any(_pidfd_on_another_process(proc.pid, fd) for fd in Path(f"/proc/{proc.pid}/fd").iterdir()):
                return
        except (FileNotFoundError, ProcessLookupError):
            pass
        time.sleep(0.01)
    raise AssertionError("the csd process never set up its watch")


def _pidfd_on_another_process(pid: int, fd: Path) -> bool:
    """Whether ``fd`` (of process ``pid``) is a pidfd on a process that is not ``pid``'s child."""
    if "pidfd" not in os.readlink(fd):
        return False
    info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
    target = next(line.split()[1] for line in info.splitlines() if line.startswith("Pid:"))
    status = Path(f"/proc/{target}/status").read_text()
    return f"PPid:\t{pid}\n" not in status


def signal_when(proc: subprocess.Popen[bytes], path: Path, sig: int) -> tuple[bool, bytes, bytes]:
    """Send ``sig`` to ``proc`` the moment ``path`` appears (checked without a pause, so the signal lands within
    microseconds of it); whether it was sent, and ``proc``'s output once it has exited. Not sent: ``proc`` ended
    between two looks, before ``path`` was seen (the caller tries again, or fails)."""
    deadline = time.monotonic() + 30
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            return False, out, err
        assert time.monotonic() < deadline, proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return True, out, err


def leftovers(env: Env) -> list[str]:
    """Everything a failed launch could leave: tmux sessions, metas, events files, shims, locks."""
    sessions = env.tmux("list-sessions", "-F", "#{session_name}", check=False).stdout.split()
    files = sorted(p.name for p in env.wdir.path.iterdir() if p.is_file()) if env.wdir.path.exists() else []
    shims = sorted(p.name for p in env.wdir.bin.iterdir()) if env.wdir.bin.exists() else []
    return sessions + files + shims


PAGE = 4096


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs of its own mounted at ``path`` (made if missing), e.g. to fill it; skips the test, saying
    why, where mounting is not allowed (not root)."""
    import pytest

    path.mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}): {proc.stderr.strip() or proc.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path, events: Path, room: int) -> Path:
    """Use up the file system of ``directory``, leaving ``room`` bytes in the events file's last page
    (tmpfs counts pages: a write into a page already held still succeeds). Returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * PAGE)
        except OSError:
            pass
    pad = (PAGE - events.stat().st_size % PAGE) % PAGE - room
    with open(events, "ab", buffering=0) as f:
        f.write(b"\n" * max(0, pad))  # blank lines: readers skip them
    return filler
