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

Run: ``python bench/scale.py [--workers 200] [--seconds 30] [--period 3] [--runs 3] [--against REV]``
(``--against``: the same measurements of csd as of git REV, alternating with this code's run by run).
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
        self.in_flight: list[str] = []  # workers whose turn drive() left running
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

    def settle(self) -> None:
        """End the turns in flight, once the measured process is gone: the next measurement starts from idle
        workers, so that its first turns change every row (a turn started on a row that shows one already
        would print no new row)."""
        for name in self.in_flight:
            self.append(name, "stop", last_assistant_message="done")
        self.in_flight = []

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
    w.in_flight = [w.names[i] for _, i, event in plan if event == "stop"]
    return count


def code_env(w: World, tree: Path) -> dict[str, str]:
    """The environment that runs the csd package under ``tree`` (with the process started in ``tree``)."""
    return {**w.env, "PYTHONPATH": str(tree)}


def watch_plain(w: World, seconds: float, period: float, tree: Path = BENCH.parent) -> dict[str, float]:
    proc = subprocess.Popen([sys.executable, "-m", "csd", "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=code_env(w, tree), cwd=tree, text=True)
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
    w.settle()
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


def watch_terminal(w: World, seconds: float, period: float, tree: Path = BENCH.parent) -> dict[str, float]:
    """csd watch in a real terminal (a pane of its own tmux server, 200x60)."""
    sock = w.socket + "-term"
    env_args = [f"{k}={v}" for k, v in (("CSD_WORKERS_DIR", str(w.wdir)), ("CSD_TMUX_SOCKET", w.socket),
                                        ("PYTHONPATH", str(tree)))]
    subprocess.run(["tmux", "-S", sock, "new-session", "-d", "-s", "watch", "-x", "200", "-y", "60", "-c", str(tree),
                    "--", "env", *env_args, sys.executable, "-m", "csd", "watch"], check=True)
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
        w.settle()
    return {"events": events, "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss}


#: What csd watch runs beneath its rows: a Supervisor following every worker's events, liveness and (while
#: working) transcript, and the workers dir's changes; nothing drawn. Its CPU is the floor under watch's.
PIPELINE = """
import asyncio, signal
from csd import render
from csd.render import watched_suffixes
from csd.supervisor import Supervisor
# as watch opens it (WATCH_GATHER: from 2026-11-30; a commit before it has none)
GATHER = {"gather": render.WATCH_GATHER} if hasattr(render, "WATCH_GATHER") else {}
API_GATHER = (render.WATCH_API_GATHER,) if hasattr(render, "WATCH_API_GATHER") else ()
async def main():
    async with Supervisor(machine=False, **GATHER) as sup:
        sup.follow_api(*API_GATHER)
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


def pipeline(w: World, seconds: float, period: float, tree: Path = BENCH.parent) -> dict[str, float]:
    """The CPU of watch's event pipeline alone (PIPELINE), under the same load."""
    proc = subprocess.Popen([sys.executable, "-c", PIPELINE], stdout=subprocess.PIPE, env=code_env(w, tree), cwd=tree,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    drive(w, seconds, period, {})
    cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
    proc.send_signal(2)
    proc.wait(30)
    w.settle()
    return {"cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0)}


def list_json(w: World, runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "csd", "list", "--json"], capture_output=True, env=w.env)
        times.append(1000 * (time.monotonic() - t))
        assert proc.returncode == 0 and proc.stdout.count(b"\n") == len(w.names), proc.stderr
    return times


def code_at(rev: str, into: Path) -> Path:
    """The csd package as of git ``rev``, unpacked under ``into`` (for --against)."""
    tree = into / f"csd-{rev}"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(BENCH.parent), "archive", rev, "csd"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def measure(w: World, args: argparse.Namespace, trees: dict[str, Path]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Each watch measurement ``args.runs`` times per code tree, the trees alternating run by run (the machine is
    shared: its load moves between runs minutes apart, so old and new are taken side by side)."""
    got: dict[str, dict[str, list[dict[str, float]]]] = {label: {"plain": [], "term": [], "base": []} for label in trees}
    for _ in range(args.runs):
        for what, run in (("plain", watch_plain), ("term", watch_terminal), ("base", pipeline)):
            for label, tree in trees.items():
                got[label][what].append(run(w, args.seconds, args.period, tree))
                print(f"{label} {what}: {got[label][what][-1]['cpu_pct']:.1f} % CPU, load {os.getloadavg()[0]:.2f}",
                      file=sys.stderr)
    return got


def _runs(results: list[dict[str, float]], key: str) -> str:
    return " / ".join(f"{r[key]:.1f}" for r in results)


def table(res: dict[str, list[dict[str, float]]], lst: list[float]) -> str:
    """The figures of one code tree: medians over its runs (latency: the median run's median and p90, the
    highest max; events never shown: summed; RSS: the highest)."""
    plain, term, base = res["plain"], res["term"], res["base"]
    med = statistics.median

    def cpu(results: list[dict[str, float]]) -> str:
        return f"{med(r['cpu_pct'] for r in results):.1f} % ({_runs(results, 'cpu_pct')})"

    return f"""| measurement | figure | budget |
|---|---:|---|
| watch (plain rows): append → row on the pipe, median | {med(r['lat_median_ms'] for r in plain):.1f} ms | |
| watch (plain rows): append → row, p90 | {med(r['lat_p90_ms'] for r in plain):.1f} ms | |
| watch (plain rows): append → row, max (the highest of the runs) | {max(r['lat_max_ms'] for r in plain):.1f} ms | ≤ 100 ms |
| watch (plain rows): events never shown | {sum(int(r['missed']) for r in plain)} of {sum(int(r['events']) for r in plain)} | 0 |
| watch (plain rows): CPU, share of one core, median (runs) | {cpu(plain)} | < 5 % |
| watch (plain rows): peak RSS | {max(r['rss_mb'] for r in plain):.1f} MB | < 60 MB |
| watch (live table in a terminal): CPU, share of one core, median (runs) | {cpu(term)} | < 5 % |
| watch (live table in a terminal): peak RSS | {max(r['rss_mb'] for r in term):.1f} MB | < 60 MB |
| list --json, median of {len(lst)} | {statistics.median(lst):.0f} ms | ≤ 200 ms |
| watch's event pipeline alone (supervisor, transcripts, dir changes; no rows): CPU, median (runs) | {cpu(base)} | |
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--period", type=float, default=3.0, help="seconds between a worker's turns")
    ap.add_argument("--runs", type=int, default=3, help="runs of each watch measurement (medians are reported)")
    ap.add_argument("--against", metavar="REV", help="also measure csd as of git REV, alternating with this code run by run")
    ap.add_argument("--no-transcripts", dest="transcripts", action="store_false",
                    help="append no transcript lines (the driver's events still name the transcript files)")
    ap.add_argument("--out", default=str(BENCH / "scale.md"))
    args = ap.parse_args()
    started = time.time()
    load_start = os.getloadavg()[0]
    git = subprocess.run(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    w = World(args.workers, args.transcripts)
    trees = {git: BENCH.parent}
    try:
        if args.against:
            trees = {args.against: code_at(args.against, w.root), **trees}
        lst = list_json(w)
        got = measure(w, args, trees)
    finally:
        w.close()
    load = os.getloadavg()[0]
    rate = statistics.median(r["events_per_s"] for r in got[git]["plain"])
    against = ""
    if args.against:
        against = f"""
The same load and runs on git {args.against}, each run taken just before this code's (alternating):

{table(got[args.against], lst).replace(f"| list --json, median of {len(lst)} | {statistics.median(lst):.0f} ms | ≤ 200 ms |{chr(10)}", "")}"""
    md = f"""# csd at scale

`python bench/scale.py --workers {args.workers} --seconds {args.seconds:g} --period {args.period:g} --runs {args.runs}\
{f" --against {args.against}" if args.against else ""}` —
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, git {git}, {platform.processor() or platform.machine()},
{os.cpu_count()} cores, Python {platform.python_version()}, load average {load_start:.2f} at the start and {load:.2f} at the end (the machine is shared).

{args.workers} workers (real tmux sessions, metas, events files, transcripts; the driver plays Claude Code, their
hooks and statusLine command, see the script's docstring), each starting a turn every {args.period:g} s and ending
it 1 s later: {rate:.0f} events/s, {rate / 2:.0f} cost-file replacements/s and \
{rate if args.transcripts else 0:.0f} transcript lines/s (one directory). Each watch figure is the median of
{args.runs} runs of {args.seconds:g} s (the runs in brackets).

{table(got[git], lst)}{against}"""
    Path(args.out).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
