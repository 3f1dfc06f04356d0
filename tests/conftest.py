"""Shared fixtures: a private workers dir, HOME and tmux server per test, reaped in a finalizer that never raises."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from csd.workers import CONSENT_FILE, WorkersDir
from support import SIMWORKER, Env, kill_server


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
    # where Claude Code (and the simulated worker) put background task output: inside the test's dir
    monkeypatch.setenv("CLAUDE_CODE_TMPDIR", str(root / "cctmp"))
    for var in ("TMUX", "TMUX_PANE", "CSD_WATCH_BACKEND", "CSD_CONVERSE_DIAG_FILE"):
        monkeypatch.delenv(var, raising=False)
    e = Env(root, WorkersDir(wdir_path), home, socket)
    try:
        yield e
    finally:
        kill_server(socket)
        shutil.rmtree(sockdir, ignore_errors=True)


