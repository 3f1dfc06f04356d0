#!/usr/bin/env python3
"""csd over SSH: what a remote worker costs per call, beside the same worker reached locally.

    python bench/remote.py [--runs N] [--out bench/results-remote.md]

Starts a real OpenSSH server on 127.0.0.1 (tests/sshd.py: its own config, keys and port) and treats this
machine as the remote host, with its own workers dir, tmux server and HOME. So the figures are csd's and
OpenSSH's own overhead with no network latency: add one network round trip per call for a real host.
Rows (medians of real processes):

- ``status``: the shim of a local worker, the shim of a remote one over the host's multiplexed connection,
  and the same without multiplexing (a new SSH handshake each call, what csd avoids);
- ``ssh true`` over the multiplexed connection: the floor of any remote call;
- ``wait-for-turn`` wake: a ``stop`` line appended to the worker's events file (with one write, on the
  worker's host) until the waiting process on the controller exits; per worker through its shim, and
  ``wait-for-turn --any`` (the per-host stream).

Everything it starts is stopped at the end (sshd, its connections, tmux servers, temp dirs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
try:
    import csd  # noqa: F401
except ImportError:
    venv_py = REPO / ".venv" / "bin" / "python"
    if venv_py.is_file() and Path(sys.executable).resolve() != venv_py.resolve():
        os.execv(str(venv_py), [str(venv_py), *sys.argv])
    raise
sys.path.insert(0, str(REPO / "tests"))

from csd import remote  # noqa: E402
from csd.remoteworkers import write_record  # noqa: E402
from csd.workers import CONSENT_FILE, Meta, WorkersDir, now_iso  # noqa: E402
from sshd import descendants, make_sshd, short_dir  # noqa: E402

CSD = str(Path(sys.executable).parent / "csd")
now = time.perf_counter


def line(event: str, **kw: object) -> bytes:
    return (json.dumps({"ts": now_iso(), "event": event, **kw}) + "\n").encode()


def fake_worker(wdir: WorkersDir, name: str, socket: str, root: Path) -> Path:
    """A worker made of a meta, an events file (working) and a live tmux session on ``socket``."""
    sid = str(uuid.uuid4())
    wdir.ensure()
    wdir.write_meta(Meta(name, sid, str(root), now_iso(), tmux_socket=socket))
    path = wdir.events_path(sid)
    path.write_bytes(line("session_start", source="startup", session_id=sid) + line("user_prompt_submit", prompt="go", session_id=sid))
    subprocess.run(["tmux", "-S", socket, "new-session", "-d", "-s", name, "--", "sleep", "100000"], check=True)
    return path


def blocked(pattern: bytes) -> bool:
    """A csd process whose command line holds ``pattern`` is waiting: it holds a pidfd on its worker."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if pattern in (d / "cmdline").read_bytes() and any("pidfd" in os.readlink(f) for f in (d / "fd").iterdir()):
                return True
        except OSError:
            continue
    return False


def wake(argv: list[str], env: dict[str, str], path: Path, sid_pattern: bytes, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with open(path, "ab") as f:  # a new turn (a repeated one is harmless)
            f.write(line("user_prompt_submit", prompt="go"))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 20
        while not blocked(sid_pattern):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the wait never blocked: {proc.communicate()}")
            time.sleep(0.005)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        t0 = now()
        os.write(fd, line("stop", bg_running=0))
        os.close(fd)
        proc.wait(30)
        samples.append((now() - t0) * 1000)
        out = proc.stdout.read() if proc.stdout else b""
        if proc.returncode != 0 or b'"stop"' not in out:
            raise RuntimeError(f"exit {proc.returncode}: {out!r} {proc.stderr.read() if proc.stderr else b''!r}")
    return samples


def timed(argv: list[str], env: dict[str, str], runs: int, expect: bytes) -> list[float]:
    samples = []
    for _ in range(runs):
        t0 = now()
        out = subprocess.run(argv, capture_output=True, env=env)
        samples.append((now() - t0) * 1000)
        if out.returncode != 0 or expect not in out.stdout:
            raise RuntimeError(f"{argv}: exit {out.returncode}: {out.stdout!r} {out.stderr!r}")
    return samples


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", default=str(BENCH / "results-remote.md"))
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="csd-rbench-"))
    sock_l, sock_r, ctl = short_dir("csd-bl"), short_dir("csd-br"), short_dir("csd-bc")
    sshd = make_sshd(root / "sshd")
    home = root / "home"
    (home / ".claude").mkdir(parents=True)
    (home / CONSENT_FILE).write_text("granted\n")
    local_w, far_w = WorkersDir(root / "local"), WorkersDir(root / "far")
    far_env = {"CSD_WORKERS_DIR": str(far_w.path), "CSD_TMUX_SOCKET": str(sock_r / "s"), "HOME": str(home)}
    hosts = root / "hosts.toml"
    env = {**os.environ, "HOME": str(home), "CSD_WORKERS_DIR": str(local_w.path), "CSD_TMUX_SOCKET": str(sock_l / "s"),
           "CSD_HOSTS_FILE": str(hosts), "CSD_SSH_CONTROL_DIR": str(ctl)}
    rows: list[tuple[str, list[float], str]] = []
    started = time.time()
    load_start = os.getloadavg()[0]
    try:
        sshd.start()
        table = "[hosts.far]\nssh = \"root@127.0.0.1\"\nssh_args = " + json.dumps(sshd.ssh_args()) + f"\ncsd = {json.dumps(CSD)}\n"
        table += "env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in far_env.items()) + " }\n"
        hosts.write_text(table)
        os.environ.update(CSD_HOSTS_FILE=str(hosts), CSD_SSH_CONTROL_DIR=str(ctl))
        host = remote.get_host("far")
        lpath = fake_worker(local_w, "near", str(sock_l / "s"), root)
        rpath = fake_worker(far_w, "away", str(sock_r / "s"), root)
        # the controller's record and shim of the remote worker, as launch --host writes them
        meta = far_w.metas()[0]
        write_record(local_w, remote.Record("away", "far", meta.session_id, meta.cwd, str(far_w.path), str(far_w.shim_path("away"))))
        shim_r = str(local_w.write_shim("away", host="far"))
        shim_l = str(WorkersDir(local_w.path).write_shim("near", socket=str(sock_l / "s")))
        subprocess.run([*remote.ssh_argv(host), "true"], check=True, env=env)  # opens the shared connection
        n = a.runs
        rows.append(("status, local worker (shim)", timed([shim_l, "status"], env, n, b"working"), ""))
        rows.append(("status, remote worker (shim, multiplexed connection)", timed([shim_r, "status"], env, n, b"working"), ""))
        plain = [*remote.ssh_argv(host, multiplex=False), host.command(["--workers-dir", str(far_w.path), "--worker", "away", "status"])]
        rows.append(("status, remote worker, a new SSH connection per call (reference)", timed(plain, env, max(5, n // 3), b"working"), "what multiplexing saves"))
        rows.append(("ssh true over the multiplexed connection (floor)", timed([*remote.ssh_argv(host), "true"], env, n, b""), ""))
        rows.append(("wait-for-turn wake, local worker: stop appended → exit",
                     wake([shim_l, "wait-for-turn", "30"], env, lpath, str(local_w.path).encode(), n), ""))
        rows.append(("wait-for-turn wake, remote worker (shim): stop appended → exit",
                     wake([shim_r, "wait-for-turn", "30"], env, rpath, b"stream\0", n), "one host stream, as --any"))
        rows.append(("wait-for-turn --any wake, remote worker (host stream): stop appended → exit",
                     wake([CSD, "wait-for-turn", "--any", "away", "30"], env, rpath, b"stream\0", n), ""))
    finally:
        try:
            remote.close(remote.get_host("far"))
        except Exception:
            pass
        if sshd.proc is not None:
            for pid in descendants(sshd.proc.pid):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        sshd.stop()
        for s in (sock_l, sock_r):
            subprocess.run(["tmux", "-S", str(s / "s"), "kill-server"], capture_output=True)
            shutil.rmtree(s, ignore_errors=True)
        shutil.rmtree(ctl, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    ssh_v = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    out = [
        "# csd over SSH: benchmark results", "",
        f"`python bench/remote.py` — {time.time() - started:.0f} s, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        "Times in ms (wall, per call); the remote host is this machine through a real sshd on 127.0.0.1 (no network latency).", "",
        f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}, CPython {platform.python_version()}, {ssh_v}, "
        f"load average at start / end {load_start:.2f} / {os.getloadavg()[0]:.2f}.", "",
        "| measurement | n | median | p90 | min | notes |", "|---|---:|---:|---:|---:|---|",
    ]
    for name, s, note in rows:
        p90 = sorted(s)[max(0, int(0.9 * len(s) + 0.5) - 1)]
        out.append(f"| {name} | {len(s)} | {statistics.median(s):.1f} | {p90:.1f} | {min(s):.1f} | {note} |")
    Path(a.out).write_text("\n".join(out) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
