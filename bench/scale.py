"""csd watch and csd list --json with many workers (issue 15's scale budgets), written to bench/scale.md.

Each worker is a real tmux session (its pane runs ``sleep``), a meta, an events file and a transcript; one
driver process plays all of them the way Claude Code, their hooks and statusLine command would: every worker
starts a turn every PERIOD seconds (a user line in its transcript, then a ``user_prompt_submit`` line), ends it
a second later (an assistant line, a ``stop`` line) and its cost file is replaced (rename into place, as
``hook.py --statusline`` does). Every event names its cwd and transcript, as the hook's do; all workers share
one cwd, so their transcripts share one directory (``--no-transcripts``: no transcript lines). 200 csd-simworker processes finishing turns
every few seconds would need ~10 hook and statusLine interpreters per turn — far more than this 2-core machine
has — so the hook's writes are played by the driver; what is measured is csd's side.

Measured: ``csd watch`` without a terminal (plain rows on a pipe) — the time from a line's append to its row
on the pipe (median, p90, max), its CPU (share of one core over the run) and peak RSS; ``csd watch`` in a real
terminal (a tmux pane, the live table redrawn per burst and by its clock) — CPU and peak RSS; ``csd list
--json`` at that many workers (median of 5); and the CPU of what watch runs beneath its rows (PIPELINE: the
supervisor following every worker, nothing drawn), the floor under both watch figures.

Run: ``python bench/scale.py [--workers 200] [--seconds 30] [--period 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
CLK = os.sysconf("SC_CLK_TCK")


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class World:
    def __init__(self, n: int, transcripts: bool = True) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="csd-scale-"))
        self.wdir = self.root / "w"
        self.wdir.mkdir(mode=0o700)
        self.socket = f"/tmp/csd-scale-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "CSD_WORKERS_DIR": str(self.wdir), "CSD_TMUX_SOCKET": self.socket}
        self.names = [f"w{i:03d}" for i in range(n)]
        self.sids = {name: str(uuid.uuid4()) for name in self.names}
        self.fds: dict[str, int] = {}
        self.cost: dict[str, float] = {}
        # where Claude Code keeps the transcripts of a project (one cwd for all: one directory, the heaviest case)
        self.projects = self.root / "projects"
        self.projects.mkdir()
        self.transcripts = transcripts
        for name in self.names:
            subprocess.run(["tmux", "-S", self.socket, "new-session", "-d", "-s", name, "--", "sleep", "100000"],
                           check=True)
            sid = self.sids[name]
            meta = {"tmux_name": name, "session_id": sid, "cwd": str(self.root), "started_at": now_iso()}
            (self.wdir / f"{sid}.meta").write_text(json.dumps(meta))
            self.fds[name] = os.open(self.wdir / f"{sid}.events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self.transcript(name).touch()
            self.append(name, "session_start", source="startup")

    def transcript(self, name: str) -> Path:
        return self.projects / f"{self.sids[name]}.jsonl"

    def append(self, name: str, event: str, **data: object) -> float:
        # as the hook writes them: every event names the cwd and the transcript (FACTS.md)
        ids = {"session_id": self.sids[name], "cwd": str(self.root), "transcript_path": str(self.transcript(name))}
        line = json.dumps({"ts": now_iso(), "event": event, **ids, **data}) + "\n"
        t = time.monotonic()
        os.write(self.fds[name], line.encode())
        return t

    def write_transcript(self, name: str, line: dict[str, object]) -> None:
        """What Claude Code appends to the transcript: the prompt as the turn starts, the reply as it ends."""
        if self.transcripts:
            with open(self.transcript(name), "a") as f:
                f.write(json.dumps({"timestamp": now_iso(), "sessionId": self.sids[name], **line}) + "\n")

    def write_cost(self, name: str) -> None:
        sid = self.sids[name]
        self.cost[name] = self.cost.get(name, 0.0) + 0.0121
        tmp = self.wdir / f"{sid}.cost.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"sessions": {sid: {"cost_usd": self.cost[name], "tokens": {"input": 3000, "output": 12}}}}))
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.wdir / f"{sid}.cost.json")

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        with_socket = Path(self.socket)
        with_socket.unlink(missing_ok=True)


def drive(w: World, seconds: float, period: float, sent: dict[tuple[str, str], list[float]]) -> int:
    """Play the workers' turns for ``seconds``; return how many events were appended."""
    n = len(w.names)
    start = time.monotonic()
    count = 0
    # worker i starts its turns at offset i*period/n: the load is spread evenly
    plan = sorted((start + 0.5 + i * period / n, i, "user_prompt_submit") for i in range(n))
    while plan and time.monotonic() - start < seconds:
        at, i, event = plan.pop(0)
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        name = w.names[i]
        if event == "user_prompt_submit":
            w.write_transcript(name, {"type": "user", "promptId": f"p{count}",
                                      "message": {"role": "user", "content": "run the tests"}})
            t = w.append(name, event, prompt="run the tests", prompt_id=f"p{count}")
            sent.setdefault((name, "working"), []).append(t)
            nxt = (at + 1.0, i, "stop")
        else:
            w.write_transcript(name, {"type": "assistant", "message": {
                "role": "assistant", "content": [{"type": "text", "text": "done"}],
                "usage": {"input_tokens": 3000, "output_tokens": 12}}})
            t = w.append(name, event, last_assistant_message="done")
            sent.setdefault((name, "idle"), []).append(t)
            w.write_cost(name)
            nxt = (at + period - 1.0, i, "user_prompt_submit")
        count += 1
        plan.append(nxt)
        plan.sort()
    return count


def watch_plain(w: World, seconds: float, period: float) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-m", "csd", "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=w.env, text=True)
    assert proc.stdout is not None
    arrivals: dict[tuple[str, str], list[float]] = {}
    ready = threading.Event()
    seen_names: set[str] = set()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.monotonic()
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                arrivals.setdefault((parts[1], parts[2]), []).append(t)
                seen_names.add(parts[1])
                if len(seen_names) == len(w.names):
                    ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert ready.wait(120), "watch never showed every worker"
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    sent: dict[tuple[str, str], list[float]] = {}
    events = drive(w, seconds, period, sent)
    time.sleep(1.0)  # the last rows reach the pipe
    cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
    rss = peak_rss_mb(proc.pid)
    proc.send_signal(2)
    proc.wait(30)
    latencies = []
    missed = 0
    for key, times in sent.items():
        got = sorted(arrivals.get(key, []))
        for t in times:
            later = [a for a in got if a >= t]
            if later:
                latencies.append(later[0] - t)
            else:
                missed += 1
    latencies.sort()
    return {"events": events, "events_per_s": events / seconds, "lat_median_ms": 1000 * statistics.median(latencies),
            "lat_p90_ms": 1000 * latencies[int(0.9 * (len(latencies) - 1))], "lat_max_ms": 1000 * latencies[-1],
            "missed": missed, "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss}


def watch_terminal(w: World, seconds: float, period: float) -> dict[str, float]:
    """csd watch in a real terminal (a pane of its own tmux server, 200x60)."""
    sock = w.socket + "-term"
    env_args = [f"{k}={v}" for k, v in (("CSD_WORKERS_DIR", str(w.wdir)), ("CSD_TMUX_SOCKET", w.socket))]
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-s", "watch", "-x", "200", "-y", "60", "--", "env",
                    *env_args, sys.executable, "-m", "csd", "watch"], check=True)
    try:
        pid = int(subprocess.run(["tmux", "-S", sock, "list-panes", "-t", "=watch:", "-F", "#{pane_pid}"],
                                 capture_output=True, text=True).stdout.split()[0])
        deadline = time.monotonic() + 120
        while f"csd workers ({len(w.names)})" not in subprocess.run(
                ["tmux", "-S", sock, "capture-pane", "-p", "-t", "=watch:"], capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the table never showed every worker"
            time.sleep(0.2)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        events = drive(w, seconds, period, {})
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        rss = peak_rss_mb(pid)
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
        Path(sock).unlink(missing_ok=True)
    return {"events": events, "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss}


#: What csd watch runs beneath its rows: a Supervisor following every worker's events, liveness and (while
#: working) transcript, and the workers dir's changes; nothing drawn. Its CPU is the floor under watch's.
PIPELINE = """
import asyncio, signal
from csd.render import watched_suffixes
from csd.supervisor import Supervisor
async def main():
    async with Supervisor(machine=False) as sup:
        sup.follow_api()
        changes = sup.watcher.changes(suffixes=watched_suffixes(costs=True))
        async with sup.one_pane_listing():
            for meta in sup.wdir.metas():
                await sup.track(meta)
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, changes.close)
        print("ready", flush=True)
        async for _ in changes:
            pass
asyncio.run(main())
"""


def pipeline(w: World, seconds: float, period: float) -> dict[str, float]:
    """The CPU of watch's event pipeline alone (PIPELINE), under the same load."""
    proc = subprocess.Popen([sys.executable, "-c", PIPELINE], stdout=subprocess.PIPE, env=w.env, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    drive(w, seconds, period, {})
    cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
    proc.send_signal(2)
    proc.wait(30)
    return {"cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0)}


def list_json(w: World, runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "csd", "list", "--json"], capture_output=True, env=w.env)
        times.append(1000 * (time.monotonic() - t))
        assert proc.returncode == 0 and proc.stdout.count(b"\n") == len(w.names), proc.stderr
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--period", type=float, default=3.0, help="seconds between a worker's turns")
    ap.add_argument("--no-transcripts", dest="transcripts", action="store_false",
                    help="append no transcript lines (the driver's events still name the transcript files)")
    ap.add_argument("--out", default=str(BENCH / "scale.md"))
    args = ap.parse_args()
    started = time.time()
    load_start = os.getloadavg()[0]
    w = World(args.workers, args.transcripts)
    try:
        lst = list_json(w)
        plain = watch_plain(w, args.seconds, args.period)
        term = watch_terminal(w, args.seconds, args.period)
        base = pipeline(w, args.seconds, args.period)
    finally:
        w.close()
    load = os.getloadavg()[0]
    git = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md = f"""# csd at scale

`python bench/scale.py --workers {args.workers} --seconds {args.seconds:g} --period {args.period:g}` —
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, git {git}, {platform.processor() or platform.machine()},
{os.cpu_count()} cores, Python {platform.python_version()}, load average {load_start:.2f} at the start and {load:.2f} at the end (the machine is shared).

{args.workers} workers (real tmux sessions, metas, events files, transcripts; the driver plays Claude Code, their
hooks and statusLine command, see the script's docstring), each starting a turn every {args.period:g} s and ending
it 1 s later: {plain['events_per_s']:.0f} events/s, {plain['events_per_s'] / 2:.0f} cost-file replacements/s and \
{plain['events_per_s'] if args.transcripts else 0:.0f} transcript lines/s (one directory).

| measurement | figure | budget |
|---|---:|---|
| watch (plain rows): append → row on the pipe, median | {plain['lat_median_ms']:.1f} ms | |
| watch (plain rows): append → row, p90 | {plain['lat_p90_ms']:.1f} ms | |
| watch (plain rows): append → row, max | {plain['lat_max_ms']:.1f} ms | ≤ 100 ms |
| watch (plain rows): events never shown | {plain['missed']} of {plain['events']} | 0 |
| watch (plain rows): CPU, share of one core | {plain['cpu_pct']:.1f} % | < 5 % |
| watch (plain rows): peak RSS | {plain['rss_mb']:.1f} MB | < 60 MB |
| watch (live table in a terminal): CPU, share of one core | {term['cpu_pct']:.1f} % | < 5 % |
| watch (live table in a terminal): peak RSS | {term['rss_mb']:.1f} MB | < 60 MB |
| list --json, median of {len(lst)} | {statistics.median(lst):.0f} ms | ≤ 200 ms |
| watch's event pipeline alone (supervisor, transcripts, dir changes; no rows): CPU | {base['cpu_pct']:.1f} % | |
"""
    Path(args.out).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
