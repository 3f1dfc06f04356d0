"""Fixtures for the end-to-end tests against the real Claude Code CLI: the binary, the mock API, the world.

``claude_bin`` (session) finds the binary: ``$CSD_E2E_CLAUDE``, else the last stdout line of
``bash .ci/install-claude.sh`` (run once per session; it reuses its cache). When that fails, or when
``$CSD_E2E_SKIP_REASON`` is set, every test that uses it is skipped with the reason (shown by ``-rs``).

``mock_api`` (module) is one stdlib mock of the Messages API on 127.0.0.1.

``real`` (module) is one private world: a HOME made by ``offline.offline_env`` (FACTS §3: seeded
``~/.claude.json``, auth token, the five no-traffic variables, ``IS_SANDBOX=1`` as root,
``CLAUDE_CODE_TMPDIR``) plus the consent file, a private workers dir and tmux socket, and
``CSD_CLAUDE_BIN``. That environment is the whole environment of every csd process the tests run
(``env=``, nothing inherited), so the worker gets it from csd, as a controller's would be.
Its finalizer never raises: it kills the private tmux server, waits for every claude process it saw
to exit (a dying claude still rewrites ``~/.claude.json``, FACTS gotcha 10), then removes HOME.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from mockapi import MockAPI  # noqa: E402
from offline import offline_env  # noqa: E402

from csd.workers import CONSENT_FILE  # noqa: E402

INSTALL = REPO / ".ci" / "install-claude.sh"
LAUNCH_TIMEOUT = 30  # CSD_LAUNCH_TIMEOUT for every launch here (csd's default, set explicitly)


def _executable(path: str) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


@pytest.fixture(scope="session")
def claude_bin() -> str:
    reason = os.environ.get("CSD_E2E_SKIP_REASON")
    if reason:
        pytest.skip(f"real Claude Code: {reason}")
    path = os.environ.get("CSD_E2E_CLAUDE", "")
    if path:
        if not _executable(path):
            pytest.skip(f"real Claude Code: CSD_E2E_CLAUDE={path!r} is not an executable file")
        return path
    try:
        proc = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"real Claude Code: could not run {INSTALL.relative_to(REPO)}: {exc}")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not _executable(lines[-1]):
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"real Claude Code: {INSTALL.relative_to(REPO)} failed (exit {proc.returncode}): {why}")
    return lines[-1]


@pytest.fixture(scope="module")
def mock_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockAPI]:
    api = MockAPI(log_path=tmp_path_factory.mktemp("mockapi") / "requests.jsonl").start()
    try:
        yield api
    finally:
        try:
            api.stop()
        except Exception:
            pass


class Real:
    """One module's private world of real workers, driven only through csd's command line."""

    def __init__(self, root: Path, claude: str, api: MockAPI) -> None:
        self.root = root
        self.api = api
        self.proj = root / "proj"  # pre-trusted
        self.untrusted = root / "untrusted"  # never pre-trusted: the real trust dialog appears
        self.proj.mkdir()
        self.untrusted.mkdir()
        self.workers = root / "workers"
        # tmux socket paths are limited to ~100 bytes: keep it short
        self.sockdir = Path(f"/tmp/csd-e2e-{uuid.uuid4().hex[:10]}")
        self.sockdir.mkdir(mode=0o700)
        self.socket = str(self.sockdir / "s")
        self.env = offline_env(api.url, root=root / "w", trusted=[self.proj])
        self.home = Path(self.env["HOME"])
        (self.home / CONSENT_FILE).parent.mkdir(parents=True, exist_ok=True)
        (self.home / CONSENT_FILE).write_text("granted\n")
        self.env.update(
            CSD_CLAUDE_BIN=claude,
            CSD_WORKERS_DIR=str(self.workers),
            CSD_TMUX_SOCKET=self.socket,
            CSD_LAUNCH_TIMEOUT=str(LAUNCH_TIMEOUT),
        )
        self.shims: dict[str, Path] = {}
        self.pids: set[int] = set()  # every claude process seen, waited for at the end

    # -- running csd
    def run(self, argv: list[str], timeout: float = 90, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                              env=self.env if env is None else env)

    def csd(self, *args: str, timeout: float = 90, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "csd", *args], timeout, env)

    def shim(self, name: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self.run([str(self.shims[name]), *args], timeout)

    def popen_shim(self, name: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(self.shims[name]), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.env)

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=10)

    # -- workers
    def started(self, name: str, proc: subprocess.CompletedProcess[str]) -> Path:
        """Record what launch/adopt printed: the shim path (stdout's only line) and claude's pid."""
        assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr}"
        shim = Path(proc.stdout.strip())
        assert proc.stdout == f"{shim}\n" and shim.is_file()
        self.shims[name] = shim
        pid = self.pane_pid(name)
        if pid:
            self.pids.add(pid)
        return shim

    def launch(self, name: str, cwd: Path | None = None) -> Path:
        return self.started(name, self.csd("launch", name, str(cwd or self.proj)))

    def worker(self, name: str) -> Path:
        """The shim of an idle worker of that name, launching it (in the trusted dir) if there is none."""
        if name in self.shims and self.shims[name].exists():
            if self.shim(name, "status").stdout.strip() == "idle":
                return self.shims[name]
            self.shim(name, "stop")  # left busy or dead by a failed test: start afresh
        return self.launch(name)

    def pane_pid(self, name: str) -> int:
        out = self.tmux("list-panes", "-t", f"={name}:", "-F", "#{pane_pid}").stdout.strip()
        return int(out) if out.isdigit() else 0

    def events(self, name: str, type_: str | None = None) -> list[dict]:
        out = self.shim(name, "read-events", *(["--type", type_] if type_ else [])).stdout
        return [json.loads(line) for line in out.splitlines()]

    def claude_json(self) -> dict:
        return json.loads((self.home / ".claude.json").read_text())

    # -- teardown (never raises)
    def close(self) -> None:
        try:
            out = self.tmux("list-panes", "-a", "-F", "#{pane_pid}").stdout
            self.pids.update(int(p) for p in out.split() if p.isdigit())
        except Exception:
            pass
        try:
            self.tmux("kill-server")
        except Exception:
            pass
        deadline = time.monotonic() + 15
        for pid in self.pids:
            while time.monotonic() < deadline and _running(pid):
                time.sleep(0.05)
        shutil.rmtree(self.sockdir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited process tmux has yet to reap writes nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


@pytest.fixture(scope="module")
def real(claude_bin: str, mock_api: MockAPI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Real]:
    world = Real(tmp_path_factory.mktemp("real"), claude_bin, mock_api)
    try:
        yield world
    finally:
        world.close()
