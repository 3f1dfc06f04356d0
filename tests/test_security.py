"""Hostile neighbours and a hostile host: secrets never in process arguments, another user's or a planted
workers dir, planted FIFOs and links, two launches of one name, an inaccessible cwd, a launcher killed
with SIGKILL. Each test reproduces the attack over real tmux, real files and real processes.

Tests that need another local user create one (``stranger``) and are skipped with the reason when not root.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from csd import envfile
from csd.workers import CONSENT_FILE
from support import Env, csd, launch, leftovers, popen, status

ROOT = Path(__file__).resolve().parent.parent
HOOK = [sys.executable, "-I", "-S", str(ROOT / "csd" / "hook.py")]
PLUGIN_HOOK = str(ROOT / "hooks" / "csd-hook")
#: Bounds a command that the attack used to hang for good: far beyond what it takes when it works.
HANG = 20


@dataclass
class Stranger:
    """Another local user, made for one test: its uid/gid and a private dir of its own under /tmp."""

    name: str
    uid: int
    gid: int
    home: Path

    def csd_env(self) -> dict[str, str]:
        """What this user needs to run csd and the simulated worker from this checkout: an interpreter of
        the same version outside /root (which only root may enter) and this venv's packages on the path."""
        py = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
        if not os.access(py, os.X_OK):
            pytest.skip(f"no {py} that another user may run (this interpreter lives in {sys.prefix})")
        site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_relative_to(sys.prefix))
        sim = self.home / "simworker"
        sim.write_text(f"#!/bin/sh\nexec {py} -m csd.sim \"$@\"\n")
        sim.chmod(0o755)
        return {"PATH": os.environ["PATH"], "HOME": str(self.home), "PYTHONPATH": f"{ROOT}:{site}", "CSD_PY": str(py),
                "CSD_CLAUDE_BIN": str(sim), "CSD_SIM_IDLE_SECONDS": "3600"}

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        def drop() -> None:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)

        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=drop)


@pytest.fixture
def stranger() -> Iterator[Stranger]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create another local user (useradd) and act as them")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed: cannot create another local user")
    name = f"csdt{uuid.uuid4().hex[:8]}"
    home = Path(tempfile.mkdtemp(prefix="csd-stranger-"))
    subprocess.run(["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", name],
                   check=True, capture_output=True)
    pw = pwd.getpwnam(name)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    try:
        yield Stranger(name, pw.pw_uid, pw.pw_gid, home)
    finally:
        # userdel refuses while a process of the user is still exiting (the killed tmux server, its pane)
        deadline = time.monotonic() + 10
        while subprocess.run(["userdel", name], capture_output=True).returncode == 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        subprocess.run(["userdel", "--force", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def hook(payload: dict, env: dict[str, str], cmd: list[str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The hook as Claude Code runs it; a hang is a failure (TimeoutExpired), not a stuck test."""
    return subprocess.run(cmd or HOOK, input=json.dumps(payload).encode(), capture_output=True, timeout=HANG,
                          env={"PATH": os.environ["PATH"], "CSD_PYTHON": sys.executable, **env})


def prompt(sid: str) -> dict:
    return {"hook_event_name": "UserPromptSubmit", "session_id": sid, "prompt": "the victim's secret prompt"}


# ---------------------------------------------------------------- item 2: the environment, never in arguments


def all_args() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def test_no_secret_in_any_process_arguments_during_or_after_launch(env: Env) -> None:
    """Every local user can read ``ps -eo args``: the tmux server that launch starts keeps its arguments for life."""
    secret = f"sk-ant-test-{uuid.uuid4().hex}"
    proc = popen("launch", "sec", str(env.root), env={"ANTHROPIC_API_KEY": secret, "CSD_SIM_STARTUP_DELAY": "1"})
    seen = 0
    while proc.poll() is None:  # sampled throughout the launch, tmux server and client included
        assert secret not in all_args()
        seen += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert seen > 0
    assert secret not in all_args()
    assert [p.name for p in env.wdir.path.glob("*.env")] == []  # the hand-over file is gone
    # ... and the worker has it, with the pane's own TERM, not through tmux's environment
    shim = out.decode().strip()
    reply = subprocess.run([shim, "converse", "TOOL:Bash:echo K=[$ANTHROPIC_API_KEY] T=[$TERM]"],
                           capture_output=True, text=True, timeout=60).stdout
    assert f"K=[{secret}]" in reply and "T=[]" not in reply
    assert secret not in env.tmux("show-environment", "-g", check=False).stdout + env.tmux("show-environment", check=False).stdout


def test_the_hand_over_file_is_taken_only_when_private(tmp_path: Path) -> None:
    path = tmp_path / "w.env"
    envfile.write(str(path), {"K": "v"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        envfile.write(str(path), {"K": "other"})  # exclusive: never into a file someone prepared
    assert envfile.take(str(path)) == {"K": "v"} and not path.exists()
    envfile.write(str(path), {"K": "v"})
    path.chmod(0o644)
    with pytest.raises(OSError, match="not a private regular file"):
        envfile.take(str(path))
    assert not path.exists()  # removed either way


def test_a_cwd_the_pane_cannot_enter_fails_loudly_instead_of_falling_back(tmp_path: Path) -> None:
    """tmux starts the pane elsewhere when it cannot enter -c DIR; the pane's first process refuses instead."""
    path = tmp_path / "w.env"
    envfile.write(str(path), {"K": "v"})
    proc = subprocess.run([sys.executable, "-I", "-S", envfile.__file__, str(path), str(tmp_path / "gone"), "--", "/bin/pwd"],
                          capture_output=True, text=True)
    assert proc.returncode == envfile.BAD_CWD and proc.stdout == ""
    assert "cannot enter the working directory" in proc.stderr and str(tmp_path / "gone") in proc.stderr


# ---------------------------------------------------------------- item 4: another user's or a planted workers dir


def test_the_plugin_hook_never_writes_into_another_users_workers_dir(tmp_path: Path, stranger: Stranger) -> None:
    """The attacker owns the (default, shared /tmp) workers dir and plants a meta for the victim's session id."""
    wdir = stranger.home / "claude-workers"
    wdir.mkdir(mode=0o755)
    sid = str(uuid.uuid4())
    (wdir / f"{sid}.meta").write_text(json.dumps({"tmux_name": "x", "session_id": sid, "cwd": "/"}))
    for p in (wdir, wdir / f"{sid}.meta"):
        os.chown(p, stranger.uid, stranger.gid)
    for cmd in (HOOK, [PLUGIN_HOOK]):
        proc = hook(prompt(sid), {"CSD_WORKERS_DIR": str(wdir)}, cmd)
        assert proc.returncode == 0
        assert not (wdir / f"{sid}.events.jsonl").exists()
    # our own dir with their bin/ in it (csd refuses to read it): nothing either
    ours = tmp_path / "ours"
    (ours / "bin").mkdir(parents=True, mode=0o700)
    ours.chmod(0o700)
    os.chown(ours / "bin", stranger.uid, stranger.gid)
    (ours / f"{sid}.meta").write_text("{}")
    assert hook(prompt(sid), {"CSD_WORKERS_DIR": str(ours)}).returncode == 0
    assert not (ours / f"{sid}.events.jsonl").exists()
    # the launch route too: an events file in their dir, made writable for us, gets nothing
    events = wdir / f"{sid}.events.jsonl"
    events.touch(mode=0o666)
    events.chmod(0o666)
    os.chown(events, stranger.uid, stranger.gid)
    assert hook(prompt(sid), {"CSD_EVENTS_FILE": str(events)}).returncode == 0
    assert events.read_bytes() == b""


def test_the_hook_never_writes_into_a_dir_others_may_write(tmp_path: Path) -> None:
    wdir = tmp_path / "workers"
    wdir.mkdir()
    wdir.chmod(0o777)
    sid = str(uuid.uuid4())
    (wdir / f"{sid}.meta").write_text("{}")
    assert hook(prompt(sid), {"CSD_WORKERS_DIR": str(wdir)}).returncode == 0
    assert not (wdir / f"{sid}.events.jsonl").exists()
    wdir.chmod(0o700)  # the same dir, private: written
    assert hook(prompt(sid), {"CSD_WORKERS_DIR": str(wdir)}).returncode == 0
    assert "secret prompt" in (wdir / f"{sid}.events.jsonl").read_text()


@pytest.mark.parametrize("route", ["launch", "plugin"])
def test_a_fifo_as_the_events_file_never_blocks_the_hook(tmp_path: Path, route: str) -> None:
    wdir = tmp_path / "workers"
    wdir.mkdir(mode=0o700)
    sid = str(uuid.uuid4())
    (wdir / f"{sid}.meta").write_text("{}")
    fifo = wdir / f"{sid}.events.jsonl"
    os.mkfifo(fifo, 0o600)
    env = {"CSD_EVENTS_FILE": str(fifo)} if route == "launch" else {"CSD_WORKERS_DIR": str(wdir)}
    proc = hook(prompt(sid), env)
    assert proc.returncode == 0 and b"csd hook:" in proc.stderr  # said, and Claude Code goes on


def fifo_meta(env: Env) -> Path:
    fifo = env.wdir.meta_path(str(uuid.uuid4()))
    os.mkfifo(fifo, 0o600)
    return fifo


def test_a_fifo_meta_blocks_no_command(env: Env) -> None:
    """A FIFO named like a meta once blocked a fan-out wait for 11 minutes despite its timeout."""
    env.add_worker("a", [{"event": "session_start"}, {"event": "stop"}])
    env.add_worker("b", [{"event": "session_start"}, {"event": "stop"}])
    fifo = fifo_meta(env)
    for argv in (["list"], ["--worker", "a", "status"], ["wait-for-turn", "--all", "a", "b", "3"], ["--worker", "a", "wait-for-turn", "3"]):
        proc = csd(*argv, timeout=HANG)
        assert proc.returncode == 0, (argv, proc.stderr)
        if argv[0] != "wait-for-turn":
            assert f"skipping unreadable meta {fifo}: refusing" in proc.stderr.decode() and "a FIFO" in proc.stderr.decode()


def test_a_fifo_events_file_is_refused_in_one_line(env: Env) -> None:
    m = env.add_worker("a", [{"event": "session_start"}])
    path = env.wdir.events_path(m.session_id)
    path.unlink()
    os.mkfifo(path, 0o600)
    for argv in (["--worker", "a", "status"], ["--worker", "a", "read-events"]):
        proc = csd(*argv, timeout=HANG)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and err.count("\n") == 1 and "is a FIFO" in err and str(path) in err, err
    proc = csd("list", timeout=HANG)
    assert proc.returncode == 0 and "is a FIFO" in proc.stderr.decode()


def test_a_fan_out_wait_checks_whose_dir_it_is_before_reading_it(env: Env, stranger: Stranger) -> None:
    env.add_worker("a", [{"event": "session_start"}, {"event": "stop"}])
    env.add_worker("b", [{"event": "session_start"}, {"event": "stop"}])
    fifo_meta(env)
    os.chown(env.wdir.path, stranger.uid, stranger.gid)
    proc = csd("wait-for-turn", "--any", "a", "b", "3", timeout=HANG)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and f"owned by uid {stranger.uid}" in err, err


# ---------------------------------------------------------------- item 5: CSD_CONVERSE_DIAG_FILE


def converse_timeout(shim: Path, diag: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(shim), "converse", "HANG", "0.5"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CSD_CONVERSE_DIAG_FILE": str(diag)})


def test_the_diagnostic_is_created_private_and_never_through_a_planted_link(env: Env, tmp_path: Path) -> None:
    shim = launch(env, "dg")
    diag = tmp_path / "diag.md"
    proc = converse_timeout(shim, diag)
    assert proc.returncode == 1 and f"csd-diagnostic: {diag}" in proc.stderr
    assert stat.S_IMODE(diag.stat().st_mode) == 0o600  # it holds prompts and the screen

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "planted.md"
    link.symlink_to(victim)
    proc = converse_timeout(launch(env, "dg2"), link)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert victim.read_text() == "precious\n" and link.is_symlink()
    assert f"did not write the diagnostic to {str(link)!r}: it already exists" in proc.stderr
    assert proc.stderr.count("\n") == 2  # the warning and the timeout, one line each


def test_an_unwritable_diagnostic_path_is_one_line(env: Env, tmp_path: Path) -> None:
    shim = launch(env, "dg")
    proc = converse_timeout(shim, tmp_path / "no" / "such" / "dir" / "diag.md")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "could not write the diagnostic to" in proc.stderr and "No such file or directory" in proc.stderr
    assert proc.stderr.count("\n") == 2


# ---------------------------------------------------------------- item 7: one name, two launches at once


def test_launching_one_name_twice_at_once_has_exactly_one_winner(env: Env) -> None:
    """Once both failed in 4 rounds of 5: the second deleted the first's files and killed its session."""
    rounds, overlapped = 12, 0
    for i in range(rounds):
        name = f"twin{i}"
        with ThreadPoolExecutor(2) as pool:
            procs = list(pool.map(lambda _: csd("launch", name, str(env.root), env={"CSD_SIM_STARTUP_DELAY": "0.5"}), range(2)))
        won = [p for p in procs if p.returncode == 0]
        lost = [p for p in procs if p.returncode != 0]
        assert len(won) == 1 and len(lost) == 1, [p.stderr.decode() for p in procs]
        err = lost[0].stderr.decode()
        assert err.count("\n") == 1 and (f"worker {name!r} is being launched right now" in err or "already exists" in err), err
        overlapped += "being launched right now" in err  # else the loser started after the winner was done
        assert lost[0].stdout == b""
        shim = Path(won[0].stdout.decode().strip())
        assert status(shim) == "idle"  # the winner untouched
        metas = [m for m in env.wdir.metas() if m.tmux_name == name]
        assert len(metas) == 1 and not env.wdir.claim_path(name).exists()
        assert subprocess.run([str(shim), "stop"], capture_output=True).returncode == 0
    assert leftovers(env) == []
    assert overlapped >= rounds // 2, f"only {overlapped} of {rounds} rounds had both launches at once"


# ---------------------------------------------------------------- item 13: a cwd the user cannot enter


def test_a_cwd_the_user_cannot_enter_is_refused_not_replaced(stranger: Stranger) -> None:
    """As a non-root user (root enters any dir): tmux would start the worker in another dir and launch said ok."""
    h = stranger.home
    (h / ".claude").mkdir()
    (h / CONSENT_FILE).write_text("granted\n")
    locked = h / "locked"
    locked.mkdir(mode=0o000)
    for p in (h / ".claude", h / CONSENT_FILE, locked):
        os.chown(p, stranger.uid, stranger.gid)
    socket = str(h / "tmux.sock")
    env = {**stranger.csd_env(), "CSD_WORKERS_DIR": str(h / "workers"), "CSD_TMUX_SOCKET": socket}
    py = env.pop("CSD_PY")
    try:
        proc = stranger.run([py, "-m", "csd", "launch", "w", str(locked)], env)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert f"working directory {str(locked)!r} is not readable and searchable by you (uid {stranger.uid})" in proc.stderr
        assert proc.stderr.count("\n") == 1
        sessions = stranger.run(["tmux", "-S", socket, "list-sessions"], env)
        assert sessions.returncode != 0  # nothing started
        # the same user, a dir it may enter: the worker runs there (checked from /proc by launch itself)
        ok = h / "ok"
        ok.mkdir()
        os.chown(ok, stranger.uid, stranger.gid)
        proc = stranger.run([py, "-m", "csd", "launch", "w", str(ok)], env)
        assert proc.returncode == 0, proc.stderr
        pid = int(stranger.run(["tmux", "-S", socket, "list-panes", "-t", "=w:", "-F", "#{pane_pid}"], env).stdout)
        assert os.readlink(f"/proc/{pid}/cwd") == str(ok)
    finally:
        stranger.run(["tmux", "-S", socket, "kill-server"], env)


# ---------------------------------------------------------------- item 14: a launcher killed with SIGKILL


def wait_session(env: Env, name: str, launcher: subprocess.Popen[bytes]) -> None:
    """Until the launch has made its tmux session (no event exists before session_start: poll tmux)."""
    deadline = time.monotonic() + 15
    while env.tmux("has-session", "-t", f"={name}", check=False).returncode != 0:
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)


def test_what_a_killed_launcher_left_is_said_plainly_and_cleared_by_the_next_launch(env: Env) -> None:
    """No cleanup runs on SIGKILL: a worker without its shim is left; the next launch of the name said to run that missing shim."""
    proc = popen("launch", "half", str(env.root), env={"CSD_SIM_STARTUP_DELAY": "30"})
    wait_session(env, "half", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=15)
    (old,) = env.wdir.metas()
    assert not env.wdir.shim_path("half").exists()

    listed = csd("list")
    assert listed.returncode == 0
    note = listed.stderr.decode()
    assert f"'half' is what an interrupted launch left (its launcher, pid {proc.pid}, died" in note
    assert "launching 'half' again clears it" in note

    again = csd("launch", "half", str(env.root))
    assert again.returncode == 0, again.stderr.decode()
    assert f"clearing what an interrupted launch of 'half' left (its launcher, pid {proc.pid}" in again.stderr.decode()
    (new,) = env.wdir.metas()
    assert new.session_id != old.session_id and not env.wdir.meta_path(old.session_id).exists()
    assert status(Path(again.stdout.decode().strip())) == "idle"
    assert "interrupted" not in csd("list").stderr.decode()


def test_stop_also_clears_what_a_killed_launcher_left(env: Env) -> None:
    proc = popen("launch", "half", str(env.root), env={"CSD_SIM_STARTUP_DELAY": "30"})
    wait_session(env, "half", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=15)
    stopped = csd("--worker", "half", "stop")
    assert stopped.returncode == 0, stopped.stderr.decode()
    assert leftovers(env) == []  # its claim file included


def test_stop_clears_the_temporary_files_a_killed_writer_left(env: Env) -> None:
    """A launcher killed outright (SIGKILL) while it writes the meta or the shim leaves the atomic write's temporary
    file (the test above hits that window now and then); stop removes those of its worker, and only those."""
    shim = launch(env, "tw")
    sid = env.wdir.resolve("tw").session_id
    left = [env.wdir.path / f".{sid}.meta.0123456789ab.tmp", env.wdir.bin / ".tw.0123456789ab.tmp"]
    other = [env.wdir.path / ".another-worker.meta.0123456789ab.tmp", env.wdir.bin / ".tw2.0123456789ab.tmp"]
    for p in left + other:
        p.write_text("half")
    assert subprocess.run([str(shim), "stop"], capture_output=True).returncode == 0
    assert sorted(leftovers(env)) == sorted(p.name for p in other)


def test_a_live_launch_is_never_taken_for_a_dead_one(env: Env) -> None:
    """While the first launch runs, list says nothing of interruption and a second launch touches nothing."""
    first = popen("launch", "slow", str(env.root), env={"CSD_SIM_STARTUP_DELAY": "3"})
    wait_session(env, "slow", first)
    assert "interrupted" not in csd("list").stderr.decode()
    second = csd("launch", "slow", str(env.root))
    assert second.returncode == 1 and f"pid {first.pid}" in second.stderr.decode()
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err.decode()
    assert status(Path(out.decode().strip())) == "idle"


def test_what_a_killed_adopt_left_is_cleared_without_killing_a_session_adopt_did_not_make(env: Env) -> None:
    env.session("keep")
    shim = launch(env, "gone")
    assert subprocess.run([str(shim), "converse", "REPLY:a conversation to resume"], capture_output=True).returncode == 0
    sid = env.wdir.resolve("gone").session_id
    assert subprocess.run([str(shim), "stop"], capture_output=True).returncode == 0  # the transcript stays
    env.session("ad")  # tmux-resurrect brought a session back, with something in it
    before = env.tmux("list-panes", "-t", "=ad:", "-F", "#{pane_pid}").stdout
    proc = popen("adopt", "ad", str(env.root), sid, env={"CSD_SIM_STARTUP_DELAY": "30"})
    deadline = time.monotonic() + 15
    while env.tmux("list-panes", "-t", "=ad:", "-F", "#{pane_pid}").stdout == before:  # respawned
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=15)

    again = csd("adopt", "ad", str(env.root), sid)
    err = again.stderr.decode()
    assert again.returncode == 0, err
    assert "clearing what an interrupted launch of 'ad' left" in err and "respawned existing pane" in err
    assert status(Path(again.stdout.decode().strip())) == "idle"
    assert sorted(env.tmux("list-sessions", "-F", "#{session_name}").stdout.split()) == ["ad", "keep"]


def test_a_fifo_or_link_as_a_workers_lock_is_refused_in_one_line(env: Env, tmp_path: Path) -> None:
    shim = launch(env, "lk")
    lock = env.wdir.lock_path(env.wdir.resolve("lk").session_id)
    lock.unlink(missing_ok=True)
    os.mkfifo(lock, 0o600)
    proc = subprocess.run([str(shim), "send", "REPLY:hi"], capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "is a FIFO" in proc.stderr, proc.stderr
    lock.unlink()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    lock.symlink_to(victim)
    proc = subprocess.run([str(shim), "send", "REPLY:hi"], capture_output=True, text=True, timeout=HANG)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "is a symlink" in proc.stderr, proc.stderr
    assert victim.read_text() == "precious\n"
    assert status(shim) == "idle"  # nothing was typed
