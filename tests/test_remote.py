"""Workers on another host over SSH, against a real OpenSSH server on 127.0.0.1 (tests/sshd.py): the
"remote" host is this machine with its own workers dir, tmux server and HOME, reached only through ssh."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from csd import remote
from csd.prompt import clean_prompt
from csd.workers import CONSENT_FILE, WorkersDir
from sshd import SSHD, Sshd, descendants, make_sshd, short_dir
from support import SIMWORKER, Env, csd, kill_server, launch, leftovers, popen, signal_when

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

    def tmux(self, *args: str) -> None:
        subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, check=True)

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
            for pid in masters(str(ctl)):  # one a test left behind (its host entry rewritten, say)
                os.kill(pid, 9)
        finally:
            sshd.stop()
            kill_server(r.socket)
            for d in Path("/proc").iterdir():  # a server the remote csd started that kill-server missed
                try:
                    if d.name.isdigit() and r.socket.encode() in (d / "cmdline").read_bytes():
                        os.kill(int(d.name), 9)
                except OSError:
                    pass
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


def test_one_fleet_list_and_fan_out_over_a_local_and_a_remote_worker(env: Env, far: Remote) -> None:
    here = launch(env, "here")
    there = launch_far("there", env.root)
    listed = csd("list").stdout.decode().splitlines()
    assert listed[0].split("\t") == ["STATUS", "TMUX", "SESSION_ID", "SHIM", "CWD", "HOST", "COST"]
    rows = {r.split("\t")[1]: r.split("\t") for r in listed[1:]}
    assert rows["here"][0] == "idle" and rows["here"][5] == "-"
    assert rows["there"][0] == "idle" and rows["there"][5] == "box" and rows["there"][3] == str(there)
    js = {j["name"]: j for j in map(json.loads, csd("list", "--json").stdout.decode().splitlines())}
    assert js["here"]["host"] is None and js["there"]["host"] == "box"
    assert js["there"]["session_id"] == sh(there, "session-id").stdout.strip()

    # --any: the local worker never ends its turn, the remote one ends it in 3 s
    assert sh(here, "send", "HANG").returncode == 0
    assert sh(there, "send", "SLEEP:3").returncode == 0
    assert json.loads(csd("list", "--json").stdout.decode().splitlines()[1])["state"] == "working"
    anyw = csd("wait-for-turn", "--any", "here", "there", "30")
    assert anyw.returncode == 0, anyw.stderr.decode()
    name, line = anyw.stdout.decode().rstrip("\n").split("\t", 1)
    assert name == "there" and json.loads(line)["event"] == "stop"
    # and the other way round: the remote one hangs, the local one ends
    assert sh(here, "stop").returncode == 0
    here = launch(env, "here")
    assert sh(there, "send", "HANG").returncode == 0
    assert sh(here, "send", "SLEEP:0.5").returncode == 0
    anyw = csd("wait-for-turn", "--any", "there", "here", "30")
    assert anyw.stdout.decode().startswith("here\t"), anyw.stderr.decode()
    # --all waits for both; the hung remote one keeps it waiting until its timeout, naming it
    allw = csd("wait-for-turn", "--all", "here", "there", "1")
    assert allw.returncode == 1 and "still busy: there" in allw.stderr.decode()
    assert sh(there, "stop").returncode == 0
    there = launch_far("there", env.root)
    assert sh(there, "send", "SLEEP:0.3").returncode == 0
    allw = csd("wait-for-turn", "--all", "here", "there", "30")
    assert allw.returncode == 0, allw.stderr.decode()
    assert [ln.split("\t")[0] for ln in allw.stdout.decode().splitlines()] == ["here", "there"]
    # an unknown name among them is refused before any wait
    bad = csd("wait-for-turn", "--any", "there", "nosuch", "5")
    assert bad.returncode == 1 and "unknown worker 'nosuch'" in bad.stderr.decode()
    for shim in (here, there):
        assert sh(shim, "stop").returncode == 0
    assert far.sessions() == []


HOSTILE = "it's \"quoted\" $(touch /tmp/csd-pwned) `id` ; echo no && exit 7 | cat\nsecond line\t\\n $HOME *"


def test_a_hostile_prompt_and_cwd_cross_the_ssh_boundary_unchanged(env: Env, far: Remote) -> None:
    cwd = env.root / "dir with 'quotes' $(touch x); \"and\" `more`"
    cwd.mkdir()
    shim = launch_far("h", cwd)
    js = json.loads(sh(shim, "status", "--json").stdout)
    assert js["cwd"] == str(cwd)
    assert json.loads(csd("list", "--json").stdout)["cwd"] == str(cwd)
    # the simulated worker echoes the whole prompt as the model receives it (a tab is four spaces, as locally)
    received = clean_prompt(HOSTILE)
    assert "$(touch" in received and "\nsecond line" in received
    conv = sh(shim, "converse", HOSTILE)
    assert (conv.returncode, conv.stdout) == (0, "ECHO: " + received + "\n"), conv.stderr
    piped = sh(shim, "converse", "-", input=HOSTILE.encode())
    assert piped.stdout == "ECHO: " + received + "\n"
    prompts = [json.loads(ln)["prompt"] for ln in sh(shim, "read-events", "--type", "user_prompt_submit").stdout.splitlines()]
    assert prompts == [received] * 2
    assert not Path("/tmp/csd-pwned").exists() and not (cwd / "x").exists()
    assert sh(shim, "stop").returncode == 0


def test_faults_are_named_at_once_with_their_own_exit_code(env: Env, far: Remote, tmp_path: Path) -> None:
    other_key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    args = far.sshd.ssh_args()
    far.write_hosts(
        nocsd={"ssh": "root@127.0.0.1", "ssh_args": args, "csd": "/nonexistent/bin/csd"},
        notcsd={"ssh": "root@127.0.0.1", "ssh_args": args, "csd": "/bin/echo"},
        down={"ssh": "root@127.0.0.1", "ssh_args": ["-F", "/dev/null", "-p", str(far.sshd.port + 1 if far.sshd.port < 65535 else 1),
                                                    "-o", "ConnectTimeout=5"]},
        stranger={"ssh": "root@127.0.0.1", "ssh_args": [a if a != str(far.sshd.key) else str(other_key) for a in args]},
    )
    cases = [
        ("box2", 2, "unknown host 'box2'"),
        ("nocsd", 6, "csd not found there"),
        ("notcsd", 6, "not a compatible csd"),
        ("down", 5, "is unreachable"),
        ("stranger", 5, "authentication refused"),
    ]
    for host, code, text in cases:
        started = time.monotonic()
        proc = csd("launch", "--host", host, "x", str(env.root))
        stderr = proc.stderr.decode()
        assert proc.returncode == code, (host, stderr)
        assert text in stderr and stderr.count("\n") == 1, stderr
        assert proc.stdout == b""
        assert time.monotonic() - started < 10
    assert "known hosts: box, down, nocsd, notcsd, stranger" in csd("launch", "--host", "box2", "x", str(env.root)).stderr.decode()
    assert not env.wdir.shim_path("x").exists() and not env.wdir.remote_path("x").exists() and far.sessions() == []
    # a per-worker command on an unreachable host: the same exit code, the host named
    shim = launch_far("w", env.root)
    far.sshd.stop()
    for h in remote.load_hosts().values():
        remote.close(h)
    st = sh(shim, "status")
    assert st.returncode == 5 and "host 'box'" in st.stderr and "unreachable" in st.stderr
    # list shows its workers as unreachable, not gone
    rows = [ln.split("\t") for ln in csd("list").stdout.decode().splitlines()[1:]]
    assert rows == [["unreachable", "w", rows[0][2], str(shim), str(env.root), "box", "-"]]
    assert "unreachable" in json.loads(csd("list", "--json").stdout)["error"]
    assert csd("prune").stdout == b"" and shim.exists()  # unreachable is not gone
    far.sshd.start()
    assert sh(shim, "stop").returncode == 0


def remote_streams(far: Remote) -> list[int]:
    """The remote csd stream processes that far's sshd serves."""
    assert far.sshd.proc is not None
    out = []
    for pid in descendants(far.sshd.proc.pid):
        try:
            if b"stream" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                out.append(pid)
        except OSError:
            pass
    return out


def wchar(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def masters(ctl: str | None = None) -> list[int]:
    """The local ssh connection masters (ControlPersist renames them ``ssh: PATH [mux]``)."""
    ctl = ctl or os.environ["CSD_SSH_CONTROL_DIR"]
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and ctl.encode() in (d / "cmdline").read_bytes() and b"[mux]" in (d / "cmdline").read_bytes():
                out.append(int(d.name))
        except OSError:
            pass
    return out


def stream_delivered(far: Remote) -> None:
    """Until the remote stream's first lines have reached the controller: the remote csd has written
    them and, after that, the local connection master has written again (it forwards them into the
    waiting csd's pipe). Read from /proc: nothing in the protocol says so."""
    wait_for(lambda: any(wchar(p) for p in remote_streams(far)), "the remote stream never wrote")
    before = {p: wchar(p) for p in masters()}
    wait_for(lambda: any(wchar(p) > w for p, w in before.items()), "the connection master never forwarded it")


def wait_for(cond, what: str, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_wait_survives_sshd_going_down_and_coming_back_and_misses_no_turn_end(env: Env, far: Remote) -> None:
    shim = launch_far("r", env.root)
    assert sh(shim, "send", "SLEEP:4").returncode == 0  # long enough to cut the link before it ends, on a busy machine too
    waiter = popen("wait-for-turn", "--any", "r", "60")
    stream_delivered(far)
    far.sshd.stop()  # the connection drops under the wait
    assert waiter.poll() is None
    meta = far.wdir.metas()[0]
    events = far.wdir.events_path(meta.session_id)
    wait_for(lambda: b'"event": "stop"' in events.read_bytes() or b'"event":"stop"' in events.read_bytes(), "the turn never ended")
    # while the controller is cut off, the worker ends that turn and starts another (its owner sends one)
    assert far.csd("--worker", "r", "send", "HANG").returncode == 0
    assert waiter.poll() is None
    far.sshd.start()
    out, errs = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, errs.decode()
    name, line = out.decode().rstrip("\n").split("\t", 1)
    ended = json.loads(line)
    assert name == "r" and ended["event"] == "stop"  # the turn end of the dropped stretch, replayed from the log
    assert "reconnecting" in errs.decode()
    assert sh(shim, "stop").returncode == 0


def test_a_wait_whose_host_stays_down_fails_naming_it(env: Env, far: Remote) -> None:
    shim = launch_far("r", env.root)
    assert sh(shim, "send", "HANG").returncode == 0
    waiter = popen("wait-for-turn", "--all", "r", "120")
    wait_for(lambda: remote_streams(far), "the remote stream never started")
    far.sshd.stop()
    out, errs = waiter.communicate(timeout=90)
    assert waiter.returncode == 5 and out == b""
    last = errs.decode().strip().splitlines()[-1]
    assert "host 'box'" in last and "gave up" in last, errs.decode()
    far.sshd.start()
    assert sh(shim, "stop").returncode == 0


def test_a_shim_wait_survives_a_dropped_connection_and_after_line_replays_the_log(env: Env, far: Remote) -> None:
    shim = launch_far("r", env.root)
    assert sh(shim, "send", "SLEEP:4").returncode == 0
    mark = json.loads(sh(shim, "status", "--json").stdout)["last_event_line"]
    waiter = subprocess.Popen([str(shim), "wait-for-turn", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stream_delivered(far)
    far.sshd.stop()
    assert waiter.poll() is None
    meta = far.wdir.metas()[0]
    events = far.wdir.events_path(meta.session_id)
    wait_for(lambda: b'"event":"stop"' in events.read_bytes().replace(b'": "', b'":"'), "the turn never ended")
    assert far.csd("--worker", "r", "send", "HANG").returncode == 0
    far.sshd.start()
    out, errs = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, errs.decode()
    stop = json.loads(out)
    assert stop["event"] == "stop" and stop["last_assistant_message"] == "ECHO: SLEEP:4"
    # --after-line: the first turn end past that line, though the worker is working again now
    again = sh(shim, "wait-for-turn", "--after-line", str(mark), "10")
    assert again.returncode == 0 and json.loads(again.stdout) == stop
    assert sh(shim, "stop").returncode == 0
    # a wait on a worker that is gone: exit 3, as locally
    shim = launch_far("r2", env.root)
    far.tmux("kill-session", "-t", "=r2")
    gone = sh(shim, "wait-for-turn", "10")
    assert gone.returncode == 3 and "gone" in gone.stderr
    assert "r2" not in csd("list").stdout.decode()
    assert any(r.startswith("gone\tr2\t") and "\tbox\t" in r for r in csd("list", "--all").stdout.decode().splitlines())
    dry = csd("prune", "--dry-run").stdout.decode()
    assert dry.startswith("would remove r2 (") and "on host box" in dry and shim.exists()
    pruned = csd("prune")
    assert pruned.stdout.decode().startswith("removed r2 (") and not shim.exists() and not env.wdir.remote_path("r2").exists()


def test_watch_shows_a_remote_worker_beside_a_local_one(env: Env, far: Remote) -> None:
    launch(env, "here")
    there = launch_far("there", env.root)
    watcher = popen("watch")
    seen: list[list[str]] = []
    try:
        assert watcher.stdout is not None

        def until(pred) -> None:  # type: ignore[no-untyped-def]
            while not any(pred(row) for row in seen):
                line = watcher.stdout.readline().decode()
                assert line, watcher.stderr.read().decode() if watcher.stderr else ""
                seen.append(line.rstrip("\n").split("\t"))

        until(lambda r: r[1:3] == ["here", "idle"])
        until(lambda r: r[1:3] == ["there@box", "idle"])
        assert sh(there, "send", "SLEEP:0.3").returncode == 0  # the remote stream redraws the table
        until(lambda r: r[1:3] == ["there@box", "working"])
        until(lambda r: r[1:3] == ["there@box", "idle"] and "stop" in r[3])
    finally:
        watcher.terminate()
        watcher.communicate(timeout=20)
    for shim in (env.wdir.shim_path("here"), there):
        assert sh(shim, "stop").returncode == 0


def test_watch_shows_a_remote_worker_launched_after_it_started(env: Env, far: Remote) -> None:
    """The records' dir is followed (made by watch: this controller had no remote worker when watch began)."""
    launch(env, "here")
    watcher = popen("watch")
    seen: list[list[str]] = []
    try:
        assert watcher.stdout is not None

        def until(pred) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + 30
            while not any(pred(row) for row in seen):
                if not select.select([watcher.stdout], [], [], max(0, deadline - time.monotonic()))[0]:  # never a hang
                    watcher.terminate()
                    raise AssertionError(f"watch never showed it; rows: {seen[-6:]}; stderr: {watcher.communicate(timeout=20)[1].decode()[-2000:]}")
                line = watcher.stdout.readline().decode()
                assert line, watcher.stderr.read().decode() if watcher.stderr else ""
                seen.append(line.rstrip("\n").split("\t"))

        until(lambda r: r[1:3] == ["here", "idle"])
        assert env.wdir.remote_dir.is_dir() and not any(env.wdir.remote_dir.iterdir())
        late = launch_far("late", env.root)
        until(lambda r: r[1:3] == ["late@box", "idle"])
        other = launch_far("later", env.root)  # a second worker on the same host: its group's stream is replaced
        until(lambda r: r[1:3] == ["later@box", "idle"])
        assert sh(late, "send", "SLEEP:0.3").returncode == 0
        until(lambda r: r[1:3] == ["late@box", "working"])
    finally:
        watcher.terminate()
        watcher.communicate(timeout=20)
    for shim in (env.wdir.shim_path("here"), late, other):
        assert sh(shim, "stop").returncode == 0


def test_adopt_on_a_host_brings_a_worker_back_after_the_host_lost_it(env: Env, far: Remote) -> None:
    shim = launch_far("w", env.root)
    assert sh(shim, "converse", "REPLY:remember me").stdout == "remember me\n"
    sid = sh(shim, "session-id").stdout.strip()
    # the host reboots: its tmux server and workers dir are gone, the conversation is not
    far.tmux("kill-server")
    shutil.rmtree(far.wdir.path)
    lost = sh(shim, "status")
    assert lost.returncode == 1 and "unknown worker 'w'" in lost.stderr  # the host's csd answers, as it would there
    assert csd("list", "--all").stdout.decode().splitlines()[1].startswith("gone\tw\t")
    adopted = csd("adopt", "--host", "box", "w", str(env.root), sid)
    assert adopted.returncode == 0, adopted.stderr.decode()
    assert "clearing the record of gone remote worker 'w'" in adopted.stderr.decode()
    assert Path(adopted.stdout.decode().strip()) == shim
    assert sh(shim, "status").stdout == "idle\n" and sh(shim, "session-id").stdout.strip() == sid
    assert sh(shim, "converse", "REPLY:back").stdout == "back\n"
    assert sh(shim, "stop").returncode == 0


def test_a_remote_turn_that_failed_exits_4_through_the_shim_and_the_fan_out(env: Env, far: Remote) -> None:
    shim = launch_far("f", env.root)
    assert sh(shim, "send", "FAIL:rate_limit").returncode == 0
    one = sh(shim, "wait-for-turn", "30")
    assert one.returncode == 4 and json.loads(one.stdout)["event"] == "stop_failure" and "rate_limit" in one.stderr
    fan = csd("wait-for-turn", "--any", "f", "30")
    assert fan.returncode == 4 and fan.stdout.decode().startswith("f\t") and "rate_limit" in fan.stderr.decode()
    conv = sh(shim, "converse", "FAIL:server_error")
    assert conv.returncode == 4 and "server_error" in conv.stderr
    assert sh(shim, "stop").returncode == 0


def test_a_failed_turn_of_an_older_release_on_a_host_exits_4_through_the_shim_and_the_fan_out(env: Env, far: Remote) -> None:
    """Before StopFailure (2.1.78) a failed turn fires Stop, and only the transcript says it failed. The host's
    csd reads it there and its stream says so: the waits that go through the stream exit 4 as a local one does."""
    far.env["CSD_SIM_RELEASE"] = "2.1.60"
    far.write_hosts()
    shim = launch_far("o", env.root)
    assert sh(shim, "send", "FAIL:rate_limit").returncode == 0
    one = sh(shim, "wait-for-turn", "30")
    assert one.returncode == 4, one.stderr
    assert json.loads(one.stdout)["event"] == "stop" and "the turn ended in an API error (rate_limit: " in one.stderr
    fan = csd("wait-for-turn", "--any", "o", "30")
    assert fan.returncode == 4 and "the turn ended in an API error (rate_limit: " in fan.stderr.decode()
    assert sh(shim, "converse", "REPLY:fine again").stdout == "fine again\n"
    assert sh(shim, "wait-for-turn", "30").returncode == 0  # the next turn went well: no stale failure
    assert sh(shim, "stop").returncode == 0


def far_leftovers(far: Remote) -> list[str]:
    """What a launch can leave on the host: tmux sessions and workers-dir files (metas, events, shims, claims)."""
    d = far.wdir.path
    files = sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) if d.exists() else []
    return far.sessions() + files


@pytest.mark.parametrize(("sig", "code", "group"),
                         [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
                         ids=["SIGINT", "SIGTERM", "Ctrl-C-at-a-terminal"])
def test_an_interrupted_launch_on_a_host_leaves_nothing_there(env: Env, far: Remote, sig: int, code: int, group: bool) -> None:
    """The remote launch is tied to its SSH channel: a controller interrupted while the host makes the worker
    closes its stdin, and the host's csd undoes the launch as it would on a signal of its own. The controller
    waits for that and then exits 130 / 143: nothing is left there, and nothing here. A Ctrl-C at a terminal goes
    to the whole foreground process group: ssh, in a group of its own, stays up while the host undoes."""
    far.env["CSD_SIM_STARTUP_DELAY"] = "3"  # it would start then, and a launch that went on would keep it
    far.write_hosts()
    proc = subprocess.Popen([sys.executable, "-m", "csd", "launch", "--host", "box", "half", str(env.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=group)
    deadline = time.monotonic() + 30
    while "half" not in far.sessions():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert far_leftovers(far) == [], err
    assert leftovers(env) == [], err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_launch_on_a_host_interrupted_after_the_host_reported_exits_0_with_its_shim(env: Env, far: Remote, sig: int) -> None:
    """The host's report is the point of no return: a signal as the controller writes its record (the worker runs
    there) comes after the launch, which writes its shim, prints it and exits 0, never 130 / 143 with a worker
    nobody was told of."""
    signalled = 0
    for i in range(12):
        name = f"n{i}"
        proc = popen("launch", "--host", "box", name, str(env.root))
        sent, out, err = signal_when(proc, env.wdir.remote_path(name), sig)
        signalled += sent  # else it ended between two looks: no signal could be sent, try again
        assert proc.returncode == 0, err
        shim = Path(out.decode().strip())
        assert shim == env.wdir.shim_path(name)
        assert sh(shim, "status").stdout == "idle\n"
        assert sh(shim, "stop").returncode == 0
        if signalled == 4:
            break
    assert signalled == 4
    assert far_leftovers(far) == [] and leftovers(env) == []


def test_a_second_interrupt_stops_waiting_for_a_host_that_does_not_answer(env: Env, far: Remote, tmp_path: Path) -> None:
    """A host whose csd sees the tie cut (its stdin ends) and then hangs: a second Ctrl-C ends the wait at once
    (UNTIE_SECONDS is 15 s) and says where to look."""
    hung, pid, cut = tmp_path / "hung-csd", tmp_path / "hung.pid", tmp_path / "cut"
    hung.write_text(f"#!/bin/sh\n[ \"$1\" = --version ] && exec {CSD} --version\necho $$ > {pid}.new\n"
                    f"mv {pid}.new {pid}\ncat >/dev/null\ntouch {cut}\nexec sleep 600 </dev/null\n")
    hung.chmod(0o755)
    far.write_hosts(hung={"ssh": "root@127.0.0.1", "ssh_args": far.sshd.ssh_args(), "csd": str(hung), "env": far.env})
    proc = popen("launch", "--host", "hung", "h", str(env.root))
    deadline = time.monotonic() + 30
    while not pid.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    try:
        proc.send_signal(signal.SIGINT)
        while not cut.exists():  # the host saw its stdin end: the first interrupt cut the tie
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)  # a second one: stop waiting
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err
        assert b"host 'hung' did not say within 15s whether it undid the launch" in err and b"list" in err
        assert leftovers(env) == []
    finally:
        os.kill(int(pid.read_text()), signal.SIGKILL)


def test_a_launch_whose_link_drops_while_the_host_makes_the_worker_leaves_nothing_there(env: Env, far: Remote) -> None:
    """The link drops (every sshd process of the host goes, the launching csd under them stays): the host's csd
    sees its stdin end and undoes its launch; the controller says the host is lost (exit 5)."""
    far.env["CSD_SIM_STARTUP_DELAY"] = "3"  # it would start then, and a launch that went on would keep it
    far.write_hosts()
    proc = popen("launch", "--host", "box", "cut", str(env.root))
    deadline = time.monotonic() + 30
    while "cut" not in far.sessions():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    assert far.sshd.proc is not None
    for pid in [far.sshd.proc.pid, *descendants(far.sshd.proc.pid)]:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 5 and b"while launching 'cut'" in err, err
    deadline = time.monotonic() + 15
    while far_leftovers(far):  # the host's csd undoes by itself, after the controller has heard the drop
        assert time.monotonic() < deadline, far_leftovers(far)
        time.sleep(0.05)
    assert leftovers(env) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_launch_on_a_host_interrupted_as_the_host_reports_is_whole_or_gone(env: Env, far: Remote, sig: int) -> None:
    """A signal the moment the host has written its shim, a few lines before its report: the host sees the tie cut
    just before or just after its point of no return. Either way the two sides agree: exit 0 with the shim printed,
    the record written and the worker idle there; or exit 130 / 143 with nothing left on either side. (On this
    machine the host has always reported first, the cut taking an SSH hop: the path where the controller cut the
    tie and the host's answer says the worker was made.)"""
    code = 130 if sig == signal.SIGINT else 143
    outcomes = set()
    for i in range(6):
        name = f"r{i}"
        proc = popen("launch", "--host", "box", name, str(env.root))
        _, out, err = signal_when(proc, far.wdir.shim_path(name), sig)  # not sent: it ended first (exit 0 below)
        outcomes.add(proc.returncode)
        if proc.returncode == 0:
            shim = Path(out.decode().strip())
            assert shim == env.wdir.shim_path(name) and env.wdir.remote_path(name).exists()
            assert sh(shim, "status").stdout == "idle\n"
            assert sh(shim, "stop").returncode == 0
        else:
            assert proc.returncode == code, err
        assert far_leftovers(far) == [] and leftovers(env) == [], (proc.returncode, err)
    assert outcomes <= {0, code}
