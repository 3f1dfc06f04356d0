"""A real OpenSSH server on 127.0.0.1 for the remote-host tests: its own config, host key and authorized
key in a temp dir, a free port, stopped after. The "remote" host is this machine, with its own workers
dir, tmux socket and HOME given to the remote csd through the hosts file's ``env``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    """One running sshd and what a client needs to reach it (key, known_hosts, port)."""

    root: Path
    port: int
    key: Path
    known_hosts: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.root / "sshd.log"

    def start(self) -> None:
        # sshd wants its privilege-separation dir even when it never uses it
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until it accepts connections (its readiness, not a sleep)
            assert self.proc.poll() is None, self.log.read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.02)
        raise AssertionError("sshd did not start listening: " + self.log.read_text())

    def stop(self) -> None:
        """Kill the server and every connection it serves (each has its own sshd process, which outlives
        the listener), so what runs over them sees its channel close."""
        if self.proc is None:
            return
        doomed = descendants(self.proc.pid)
        for pid in [self.proc.pid, *doomed]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        self.proc = None

    def ssh_args(self) -> list[str]:
        return ["-F", "/dev/null", "-p", str(self.port), "-i", str(self.key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=5"]


def make_sshd(root: Path) -> Sshd:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    port = free_port()
    host_key = root / "host_ed25519"
    key = root / "client_ed25519"
    for k in (host_key, key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} " + " ".join((root / "host_ed25519.pub").read_text().split()[:2]) + "\n")
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {root}/sshd.pid\n"
        f"AuthorizedKeysFile {root}/authorized_keys\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "LogLevel ERROR\nMaxSessions 100\nMaxStartups 100\n"
    )
    return Sshd(root, port, key, known, config)


def short_dir(prefix: str) -> Path:
    """A short private dir under /tmp (unix socket paths are limited to ~100 bytes)."""
    d = Path(f"/tmp/{prefix}-{uuid.uuid4().hex[:10]}")
    d.mkdir(mode=0o700)
    return d


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out
