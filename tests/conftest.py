"""Shared fixtures: a private workers dir, HOME and tmux server per test, reaped in a finalizer that never raises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csd.workers import CONSENT_FILE, Meta, WorkersDir

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


def _kill_server(socket: str) -> None:
    try:
        subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True, timeout=10)
    except Exception:
        pass
    try:
        os.unlink(socket)
    except OSError:
        pass


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    root = tmp_path
    home = root / "home"
    (home / ".claude").mkdir(parents=True)
    (home / CONSENT_FILE).write_text("granted\n")
    wdir_path = root / "workers"
    # tmux socket paths are limited to ~100 bytes: keep it short
    sockdir = Path(f"/tmp/csd-t-{uuid.uuid4().hex[:10]}")
    sockdir.mkdir(mode=0o700)
    socket = str(sockdir / "s")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CSD_WORKERS_DIR", str(wdir_path))
    monkeypatch.setenv("CSD_TMUX_SOCKET", socket)
    monkeypatch.setenv("CSD_CLAUDE_BIN", SIMWORKER)
    monkeypatch.setenv("IS_SANDBOX", "1")
    monkeypatch.setenv("CSD_SIM_IDLE_SECONDS", "3600")
    for var in ("TMUX", "TMUX_PANE", "CSD_WATCH_BACKEND", "CSD_CONVERSE_DIAG_FILE"):
        monkeypatch.delenv(var, raising=False)
    e = Env(root, WorkersDir(wdir_path), home, socket)
    try:
        yield e
    finally:
        _kill_server(socket)
        shutil.rmtree(sockdir, ignore_errors=True)


def wait_file(path: Path, predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Wait for a file written by another process to satisfy ``predicate(text)``.

    Only for files no csd API watches for us (a test's own log); short polls against a deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        result = predicate(text)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {path}: {text[-2000:]!r}")
        time.sleep(0.02)
