"""What csd survives: signals mid-command, tmux or files vanishing mid-wait, hostile input, and load."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import Env, csd, events, launch, leftovers, popen, signal_when, status, wait_blocked


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def wait_lock_held(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while not (path.exists() and not lock_is_free(path)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_send_releases_the_lock(env: Env, sig: int, code: int) -> None:
    shim = launch(env, "s")
    lock = env.wdir.lock_path(env.wdir.resolve("s").session_id)
    sender = popen("--worker", "s", "send", "SWALLOW-ENTER hi", env={"CSD_SUBMIT_RETRY_INTERVAL": "30", "CSD_SUBMIT_TIMEOUT": "60"})
    wait_lock_held(lock, sender)
    sender.send_signal(sig)
    _, err = sender.communicate(timeout=10)
    assert sender.returncode == code, err
    assert lock_is_free(lock)
    assert status(shim) == "idle"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_launch_leaves_no_half_made_worker(env: Env, sig: int, code: int) -> None:
    proc = popen("launch", "half", str(env.root), env={"CSD_SIM_STARTUP_DELAY": "30"})
    deadline = time.monotonic() + 15
    while env.tmux("has-session", "-t", "=half", check=False).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == code, err
    assert leftovers(env) == []


def running_child(pid: int, word: bytes) -> bool:
    """Whether a child of ``pid`` runs a command line that has ``word`` in it."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = f.read().split()
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                if word in f.read().split(b"\0"):
                    return True
        except (FileNotFoundError, ProcessLookupError):  # it has exited meanwhile
            pass
    return False


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_as_the_name_is_claimed_leaves_nothing(env: Env, sig: int, code: int) -> None:
    """The claim on the name (NAME.launching) is the first file a launch makes; a signal the moment it appears comes
    once the claim is known to the undo, which removes it: nothing is left, ten times over."""
    for i in range(10):
        proc = popen("launch", f"c{i}", str(env.root))
        sent, _, err = signal_when(proc, env.wdir.claim_path(f"c{i}"), sig)
        assert sent, "the launch ended while its claim was there"
        assert proc.returncode == code, err
        assert leftovers(env) == [], err


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_as_the_pane_is_made_leaves_nothing(env: Env, sig: int, code: int) -> None:
    """A signal the moment launch's tmux client that makes the worker's session runs. The server makes the session
    whether or not the client lives, so the signal is held until the client has ended; the undo then finds the
    session and ends it: none is left behind, five times over."""
    for i in range(5):
        proc = popen("launch", f"p{i}", str(env.root), env={"CSD_SIM_STARTUP_DELAY": "30"})
        deadline = time.monotonic() + 30
        while not running_child(proc.pid, b"new-session"):
            assert proc.poll() is None and time.monotonic() < deadline, ("no new-session client seen", proc.communicate())
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code, err
        assert leftovers(env) == [], err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_as_the_worker_is_made_comes_after_the_launch(env: Env, sig: int) -> None:
    """The shim is the last thing launch makes; a signal as it appears lands in the launch's last steps (the claim
    released, the supervisor closed, the report). The report is the point of no return: the launch exits 0 with
    the shim printed and the worker running, never 130 / 143 with a worker nobody was told of."""
    signalled = 0
    for i in range(15):
        proc = popen("launch", f"m{i}", str(env.root))
        sent, out, err = signal_when(proc, env.wdir.shim_path(f"m{i}"), sig)
        signalled += sent  # else the launch had ended before the signal could be sent: another one
        assert proc.returncode == 0, err
        shim = Path(out.decode().strip())
        assert shim == env.wdir.shim_path(f"m{i}") and status(shim) == "idle"
        assert subprocess.run([str(shim), "stop"], capture_output=True).returncode == 0
        if signalled == 5:
            break
    assert signalled == 5
    assert leftovers(env) == []


HELD = """
import os, signal
from csd.errors import Terminated
from csd.proc import signals_held, sigterm_raises
signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python sets it, even where SIGINT came in ignored
seen = []
with sigterm_raises():
    for sig, kind in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)):
        try:
            with signals_held():
                os.kill(os.getpid(), sig)
                seen.append("went on")
        except kind:
            seen.append("then raised")
        try:
            with signals_held():
                os.kill(os.getpid(), sig)
                os.kill(os.getpid(), sig)
                seen.append("not reached")
        except kind:
            seen.append("a second at once")
    seen.append(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    seen.append(signal.getsignal(signal.SIGTERM).__qualname__)
print(*seen, sep=",")
"""


def test_a_held_signal_comes_after_the_lines_it_waited_for_and_a_second_at_once() -> None:
    out = subprocess.run([sys.executable, "-c", HELD], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == ["went on", "then raised", "a second at once"] * 2 + [
        "True", "sigterm_raises.__enter__.<locals>.terminated"]


UNSTARTED = """
import gc, sys
from csd.commands import run_async
class Interrupt:  # Ctrl-C while run_async imports asyncio (~40 ms of it), before the loop runs anything
    def find_spec(self, name, path=None, target=None):
        if name == "asyncio":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
async def command():
    return 0
try:
    run_async(command())
except KeyboardInterrupt:
    gc.collect()
    print("interrupted")
"""


def test_a_command_interrupted_before_its_loop_ran_says_so_in_one_line() -> None:
    """A Ctrl-C between a handler's return and its coroutine's first step (e.g. a stop interrupted 50 ms in, seen
    with the real Claude Code) used to add Python's "coroutine was never awaited" warning to the one line."""
    out = subprocess.run([sys.executable, "-c", UNSTARTED], capture_output=True, text=True, timeout=30)
    assert (out.stdout, out.stderr) == ("interrupted\n", "")


IMPORTING = """
import runpy, sys
class Interrupt:  # Ctrl-C while a shim's csd imports its command line, before csd.cli could take it
    def find_spec(self, name, path=None, target=None):
        if name == "csd.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupt())
sys.argv = [sys.argv[1], "status"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_shim_interrupted_while_csd_imports_says_so_in_one_line() -> None:
    """Seen with the real Claude Code: a stop interrupted 30 ms in printed a traceback from csd/run_cli.py."""
    import csd

    run_cli = str(Path(csd.__file__).with_name("run_cli.py"))
    out = subprocess.run([sys.executable, "-S", "-P", "-c", IMPORTING, run_cli], capture_output=True, text=True, timeout=30)
    assert (out.returncode, out.stdout, out.stderr) == (130, "", "csd: interrupted\n")


CONSOLE = """
import sys
from importlib.metadata import entry_points
class Interrupt:  # Ctrl-C while the console script imports csd's command line
    def find_spec(self, name, path=None, target=None):
        if name == "csd.cli":
            raise KeyboardInterrupt
(script,) = entry_points(group="console_scripts", name="csd")
run = script.load()
sys.meta_path.insert(0, Interrupt())
sys.argv = ["csd", "status"]
run()
"""


@pytest.mark.parametrize("how", ["console-script", "python-m"])
def test_the_console_script_interrupted_while_csd_imports_says_so_in_one_line(how: str, tmp_path: Path) -> None:
    """The ``csd`` that pip installs (its entry point as installed: run away from the checkout, whose egg-info
    a build may leave) and ``python -m csd`` give the one line too."""
    code = CONSOLE if how == "console-script" else CONSOLE.replace(
        "run = script.load()", "import runpy; run = lambda: runpy.run_module('csd', run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert (out.returncode, out.stdout, out.stderr) == (130, "", "csd: interrupted\n")


TERMINATED_WRITES = """
import os, random, signal, sys, threading
from csd.errors import Terminated
from csd.proc import sigterm_raises
from csd.workers import WorkersDir
wdir = WorkersDir(sys.argv[1]).ensure()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # outside a write, a SIGTERM is nothing
sys.setswitchinterval(1e-6)  # the threads take turns at every chance
go, sent = threading.Semaphore(0), threading.Semaphore(0)
def terminate():
    while True:  # one SIGTERM per write, at a random point of it
        go.acquire()
        for _ in range(random.randrange(6000)):
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        sent.release()
threading.Thread(target=terminate, daemon=True).start()
cut = 0
for _ in range(6000):
    go.release()
    try:
        with sigterm_raises():
            wdir.write_shim("w", socket="")
    except Terminated:
        cut += 1
    sent.acquire()
print(cut, *sorted(os.listdir(wdir.bin)))
"""


def test_sigterm_at_any_point_of_a_file_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """Launch writes its files while SIGTERM raises (proc.sigterm_raises: the undo runs); wherever in an atomic
    write one signal lands, its temporary file goes too. A process writes a shim 6000 times, each with one SIGTERM
    at a random point (nearly all land inside it), so the window between the temporary file's creation and its
    name's return is hit too."""
    out = subprocess.run([sys.executable, "-c", TERMINATED_WRITES, str(tmp_path / "w")], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cut, *left = out.stdout.split()
    assert int(cut) > 300 and left in ([], [b"w"]), out.stdout


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_converse_exits_and_the_worker_lives_on(env: Env, sig: int, code: int) -> None:
    shim = launch(env, "c")
    follow = popen("--worker", "c", "read-events", "--follow", "--type", "user_prompt_submit")
    conv = popen("--worker", "c", "converse", "SLEEP:3 REPLY:late")
    assert follow.stdout is not None and b"user_prompt_submit" in follow.stdout.readline()  # submitted
    follow.send_signal(signal.SIGINT)
    follow.wait(10)
    wait_blocked(conv)
    conv.send_signal(sig)
    assert conv.wait(10) == code
    assert subprocess.run([str(shim), "wait-for-turn", "30"], capture_output=True).returncode == 0
    assert status(shim) == "idle"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_stop_waits_for_the_worker_ends_it_at_once(env: Env, sig: int, code: int) -> None:
    """stop types /exit and waits for the worker to go; a worker whose TUI takes no Enter yet keeps it waiting (up to
    CSD_STOP_TIMEOUT). An interrupt then kills the tmux session at once and removes the files, saying so: never the
    files gone and the session left running, a worker csd no longer knows. (Not SIGSTOP: tmux continues a stopped
    pane process at once, so a stopped worker answers /exit all the same.)"""
    proc = csd("launch", "st", str(env.root), env={"CSD_SIM_NOT_READY_SECONDS": "60"})
    assert proc.returncode == 0, proc.stderr
    stopper = popen("--worker", "st", "stop")
    wait_blocked(stopper)  # tracking the worker: it has looked at the pane, and waits for /exit to end it
    stopper.send_signal(sig)
    _, err = stopper.communicate(timeout=30)
    assert stopper.returncode == code, err
    assert b"stop interrupted: tmux session 'st' killed without waiting for the worker to exit" in err
    assert leftovers(env) == []


def test_tmux_server_killed_under_wait_for_turn(env: Env) -> None:
    shim = launch(env, "k")
    assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    waiter = popen("--worker", "k", "wait-for-turn", "60")
    wait_blocked(waiter)
    env.tmux("kill-server")
    out, err = waiter.communicate(timeout=10)
    # the worker gets SIGHUP and records session_end on its way out; whichever csd sees first,
    # the session_end line (exit 0) or the process gone (exit 3), the wait ends at once
    if waiter.returncode == 0:
        assert json.loads(out)["event"] == "session_end"
    else:
        assert waiter.returncode == 3 and b"gone" in err
    assert status(shim) == "gone"
    # nothing lost from the events file: the hook recorded the session_end the worker sent on SIGHUP
    names = [e["event"] for e in events(shim)]
    assert names[:2] == ["session_start", "user_prompt_submit"]


def test_tmux_server_killed_under_send(env: Env) -> None:
    launch(env, "ks")
    lock = env.wdir.lock_path(env.wdir.resolve("ks").session_id)
    sender = popen("--worker", "ks", "send", "SWALLOW-ENTER x", env={"CSD_SUBMIT_RETRY_INTERVAL": "30", "CSD_SUBMIT_TIMEOUT": "60"})
    wait_lock_held(lock, sender)
    env.tmux("kill-server")
    _, err = sender.communicate(timeout=10)
    assert sender.returncode == 3 and b"while the prompt was being sent" in err, err
    assert lock_is_free(lock)


def test_tmux_server_killed_under_watch(env: Env) -> None:
    """The live table shows the worker gone, keeps running, and still exits 0 on Ctrl-C."""
    launch(env, "kw")
    watcher = popen("watch")
    assert watcher.stdout is not None
    first = watcher.stdout.readline().decode()
    assert "\tkw\tidle" in first
    env.tmux("kill-server")
    seen = [first]
    while "\tkw\tgone" not in seen[-1]:
        line = watcher.stdout.readline().decode()
        assert line, watcher.communicate(timeout=5)
        seen.append(line)
    watcher.send_signal(signal.SIGINT)
    assert watcher.wait(10) == 0


def test_events_file_deleted_mid_wait(env: Env) -> None:
    shim = launch(env, "d")
    assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    waiter = popen("--worker", "d", "wait-for-turn", "60")
    wait_blocked(waiter)
    env.wdir.events_path(env.wdir.resolve("d").session_id).unlink()
    _, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 3 and b"was stopped" in err


def test_events_file_truncated_mid_wait_then_a_stop_arrives(env: Env) -> None:
    shim = launch(env, "t")
    assert subprocess.run([str(shim), "send", "SLEEP:2 REPLY:after truncation"], capture_output=True).returncode == 0
    waiter = popen("--worker", "t", "wait-for-turn", "60")
    wait_blocked(waiter)
    os.truncate(env.wdir.events_path(env.wdir.resolve("t").session_id), 0)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert json.loads(out)["last_assistant_message"] == "after truncation"


def test_workers_dir_removed_under_a_running_wait(env: Env) -> None:
    shim = launch(env, "w")
    assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    waiter = popen("--worker", "w", "wait-for-turn", "60")
    wait_blocked(waiter)
    shutil.rmtree(env.wdir.path)
    _, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 3 and b"was stopped" in err


def test_a_planted_shim_symlink_is_replaced_not_followed(env: Env, tmp_path: Path) -> None:
    env.wdir.ensure()
    target = tmp_path / "victim"
    target.write_text("precious\n")
    env.wdir.shim_path("pl").symlink_to(target)
    launch(env, "pl")
    assert target.read_text() == "precious\n"
    assert not env.wdir.shim_path("pl").is_symlink()


def test_a_bin_dir_planted_by_another_user_is_refused(env: Env) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a dir to another user")
    env.wdir.ensure()
    os.chown(env.wdir.bin, 65534, 65534)
    proc = subprocess.run([sys.executable, "-m", "csd", "launch", "x", str(env.root)], capture_output=True, text=True)
    assert proc.returncode == 1 and "owned by uid 65534" in proc.stderr and str(env.wdir.bin) in proc.stderr
    assert env.tmux("list-sessions", check=False).returncode != 0  # nothing started


@pytest.mark.parametrize("name", ["a\x00b", "a\nb", "$(touch /tmp/pwned)", "a;b", "\x1b[2J"])
def test_hostile_names_are_refused(env: Env, name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "csd", "launch", name, str(env.root)] if "\x00" not in name else
                          [sys.executable, "-c", "import sys; from csd.cli import main; sys.exit(main(['launch', sys.argv[1].replace('@', chr(0)), sys.argv[2]]))", name.replace("\x00", "@"), str(env.root)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid worker name" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert leftovers(env) == []


def test_fifty_workers_launched_conversed_watched_and_stopped(env: Env) -> None:
    """Load: 50 simulated workers through the Python API, conversed with concurrently, then stopped."""
    from csd.fleet import Fleet

    names = [f"load{i:02d}" for i in range(50)]

    watcher = popen("watch")  # the live table, in its plain form (stdout is not a terminal)

    async def scenario() -> list[str]:
        async with Fleet() as sup:
            gate = asyncio.Semaphore(8)

            async def up(name: str) -> None:
                async with gate:
                    await sup.launch(name, str(env.root))

            await asyncio.gather(*(up(n) for n in names))
            replies = await asyncio.gather(*(sup.converse(n, f"REPLY:hi {n}") for n in names))
            texts = [r.text() for r in replies]
            async with asyncio.timeout(60):
                done = await sup.wait_all(names)
            assert len(done) == 50
            listed = subprocess.run([sys.executable, "-m", "csd", "list"], capture_output=True, text=True).stdout
            assert sum(1 for line in listed.splitlines() if line.startswith("idle")) == 50
            await asyncio.gather(*(sup.stop(n) for n in names))
            return texts

    try:
        texts = asyncio.run(scenario())
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    assert texts == [f"hi {n}" for n in names]
    assert leftovers(env) == []
    assert watcher.returncode == 0, err
    rows = [line.split("\t") for line in out.decode().splitlines()]
    for n in names:
        states = [r[2] for r in rows if r[1] == n]
        assert "idle" in states and states[-1] == "removed", (n, states)
