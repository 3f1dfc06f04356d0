"""Workers on another host over SSH, against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): the
"remote" host is this machine with its own workers dir, tmux server and HOME, reached only through ssh."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csd import remote
from csd.workers import CONSENT_FILE, WorkersDir
from sshd import SSHD, Sshd, descendants, make_sshd, short_dir
from support import SIMWORKER, Env, csd, kill_server, launch, popen, wait_blocked

pytestmark = pytest.mark.skipif(not os.path.exists(SSHD), reason="sshd (Debian's openssh-server) is not installed; .ci/run installs it")
CSD = str(Path(sys.executable).parent / "csd")


@dataclass
class Remote:
    """The remote side: its sshd, its csd's environment, and a way to run its csd directly (as its owner would)."""

    sshd: Sshd
    wdir: WorkersDir
    socket: str
    env: dict[str, str]
    hosts_file: Path

    def csd(self, *argv: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """The remote csd run on that host itself, not through ssh (to check what it has)."""
        return subprocess.run([CSD, *argv], input=input, capture_output=True, timeout=60, env={**os.environ, **self.env})

    def sessions(self) -> list[str]:
        out = subprocess.run(["tmux", "-S", self.socket, "list-sessions", "-F", "#{session_name}"], capture_output=True, text=True)
        return out.stdout.split()

    def write_hosts(self, **extra: dict) -> None:
        hosts = {"box": {"ssh": "root@127.0.0.1", "ssh_args": self.sshd.ssh_args(), "csd": CSD, "env": self.env}, **extra}
        lines = []
        for name, t in hosts.items():
            lines.append(f"[hosts.{name}]")
            for k, v in t.items():
                if isinstance(v, dict):
                    lines.append(f"{k} = {{ " + ", ".join(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items()) + " }")
                else:
                    lines.append(f"{k} = {json.dumps(v)}")
        self.hosts_file.write_text("\n".join(lines) + "\n")


@pytest.fixture
def far(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    root = env.root / "far"
    home = root / "home"
    (home / ".claude").mkdir(parents=True)
    (home / CONSENT_FILE).write_text("granted\n")
    sockdir = short_dir("csd-r")
    ctl = short_dir("csd-c")
    sshd = make_sshd(root / "sshd")
    sshd.start()
    r = Remote(sshd, WorkersDir(root / "workers"), str(sockdir / "s"), {
        "CSD_WORKERS_DIR": str(root / "workers"), "CSD_TMUX_SOCKET": str(sockdir / "s"), "HOME": str(home),
        "CSD_CLAUDE_BIN": SIMWORKER, "IS_SANDBOX": "1", "CSD_SIM_IDLE_SECONDS": "3600",
        "CLAUDE_CODE_TMPDIR": str(root / "cctmp"),
    }, env.root / "hosts.toml")
    r.write_hosts()
    monkeypatch.setenv("CSD_HOSTS_FILE", str(r.hosts_file))
    monkeypatch.setenv("CSD_SSH_CONTROL_DIR", str(ctl))
    try:
        yield r
    finally:
        try:
            for h in remote.load_hosts().values():
                remote.close(h)
        finally:
            sshd.stop()
            kill_server(r.socket)
            shutil.rmtree(sockdir, ignore_errors=True)
            shutil.rmtree(ctl, ignore_errors=True)


def sh(*argv: str | Path, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], input=input.decode() if input else None, capture_output=True, text=True, timeout=timeout)


def launch_far(name: str, cwd: Path) -> Path:
    proc = csd("launch", "--host", "box", name, str(cwd))
    assert proc.returncode == 0, proc.stderr.decode()
    return Path(proc.stdout.decode().strip())


def test_a_remote_worker_through_its_local_shim(env: Env, far: Remote) -> None:
    shim = launch_far("w1", env.root)
    assert shim == env.wdir.shim_path("w1")
    assert "--host box" in shim.read_text() and "--worker w1" in shim.read_text()
    assert far.sessions() == ["w1"]  # the worker runs on the remote host's tmux server
    assert not env.wdir.metas()  # the controller keeps a record, not a meta

    assert sh(shim, "status").stdout == "idle\n"
    conv = sh(shim, "converse", "REPLY:hello from afar")
    assert (conv.returncode, conv.stdout) == (0, "hello from afar\n"), conv.stderr
    assert sh(shim, "send", "SLEEP:0.3").returncode == 0
    waited = sh(shim, "wait-for-turn", "30")
    assert waited.returncode == 0 and json.loads(waited.stdout)["event"] == "stop"
    kinds = [json.loads(line)["event"] for line in sh(shim, "read-events").stdout.splitlines()]
    assert kinds.count("stop") == 2 and kinds[0] == "session_start"
    assert "hello from afar" in sh(shim, "read-turn").stdout or "SLEEP" in sh(shim, "read-turn").stdout
    sid = sh(shim, "session-id").stdout.strip()
    assert sid == json.loads(sh(shim, "status", "--json").stdout)["session_id"]
    # exit codes come back as they are: a usage error of the remote csd is 2, a timeout 1
    assert sh(shim, "read-events", "--type", "bogus").returncode == 2
    assert sh(shim, "send", "HANG").returncode == 0
    timed = sh(shim, "wait-for-turn", "0.5")
    assert timed.returncode == 1 and "timed out" in timed.stderr

    hand = sh(shim, "handoff")
    assert hand.stdout.startswith("ssh ") and " -t " in hand.stdout and "attach" in hand.stdout and str(far.sshd.port) in hand.stdout

    stopped = sh(shim, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not shim.exists() and not env.wdir.remote_path("w1").exists()
    assert far.sessions() == [] and far.wdir.metas() == []
