"""A worker stays itself: shims that work from anywhere, identity across /clear, adopt onto a live pane, a
worker is its process, one session id per worker, prune, and the lock's holder. Real tmux, the simulated
worker, csd run as a controller runs it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csd.errors import UnknownWorker
from csd.proc import is_zombie
from support import Env, events, launch, leftovers, status


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A shim (a path) or csd (anything else), as a subprocess."""
    cmd = list(argv) if argv[0].startswith("/") else [sys.executable, "-m", "csd", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def bare(*argv: str, home: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run as from cron or a controller's fresh shell: `env -i` with only PATH and HOME (plus ``extra``)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), **(extra or {})}
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv], capture_output=True, text=True, timeout=60)


def wait_for_line(path: Path, pred, timeout: float = 15) -> dict:
    """The first line of an events file that satisfies ``pred`` (the file is appended by a real hook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines() if path.exists() else []:
            obj = json.loads(line)
            if pred(obj):
                return obj
        time.sleep(0.02)
    raise AssertionError(f"no such line in {path}: {path.read_text() if path.exists() else '(missing)'}")


def pane_pid(env: Env, name: str) -> int:
    return int(env.tmux("list-panes", "-t", f"={name}:", "-F", "#{pane_pid}").stdout.strip())


def running(pid: int) -> bool:
    return not is_zombie(pid)  # an exited process tmux has yet to reap is not running


# ------------------------------------------------------------------ the simulated worker matches the real one


def test_the_simulated_worker_fires_session_end_when_its_pane_is_respawned(env: Env) -> None:
    """respawn-pane -k hangs up the pane's terminal: Claude Code records SessionEnd (reason other, FACTS §5)
    on SIGHUP, and so does the simulated worker (tests/e2e/test_identity.py checks the real one)."""
    launch(env, "hup")
    path = env.wdir.events_path(env.wdir.resolve("hup").session_id)
    env.tmux("respawn-pane", "-k", "-t", "=hup:", "--", "sleep", "100000")
    end = wait_for_line(path, lambda e: e["event"] == "session_end")
    assert end["reason"] == "other"


# ------------------------------------------------------------------ a worker is its process


def test_launch_records_the_worker_process(env: Env) -> None:
    launch(env, "pid")
    meta = env.wdir.resolve("pid")
    assert meta.pid == pane_pid(env, "pid") and meta.proc_start > 0
    assert meta.tmux_socket == env.socket


def test_a_pane_that_runs_something_else_is_gone_and_send_types_nothing(env: Env) -> None:
    """The worker dies, its dead pane stays (remain-on-exit), someone respawns it with a shell: that shell
    is not the worker. status says gone, send refuses (exit 3) and types nothing, stop leaves it alone."""
    shim = launch(env, "sh1")
    env.tmux("set-option", "-p", "-t", "=sh1:", "remain-on-exit", "on")
    pid = env.wdir.resolve("sh1").pid
    os.kill(pid, 9)  # no hook at all
    # respawn-pane refuses a pane tmux has yet to see die: wait for tmux to reap it, not only for the kill
    deadline = time.monotonic() + 10
    while env.tmux("display-message", "-p", "-t", "=sh1:", "#{pane_dead}").stdout.strip() != "1":
        assert time.monotonic() < deadline, "tmux never saw the killed worker's pane die"
        time.sleep(0.01)
    env.tmux("respawn-pane", "-t", "=sh1:", "--", "sh")
    assert pane_pid(env, "sh1") != pid
    assert status(shim) == "gone"
    assert "gone\tsh1\t" in run("list", "--all").stdout
    marker = env.root / "typed-into-the-shell"
    sent = run(str(shim), "send", f"touch {marker}")
    assert sent.returncode == 3 and "gone" in sent.stderr, sent.stderr
    # the shell would have run it at once; give it a chance to show it did not
    env.tmux("send-keys", "-t", "=sh1:", f"touch {marker}.probe", "Enter")
    deadline = time.monotonic() + 10
    while not Path(f"{marker}.probe").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not marker.exists()
    stop = run(str(shim), "stop")
    assert stop.returncode == 0 and "now runs another process" in stop.stderr, stop.stderr
    assert env.tmux("has-session", "-t", "=sh1", check=False).returncode == 0  # the shell's session is left alone
    assert leftovers(env) == ["sh1"]


def test_metas_of_older_releases_are_still_read(env: Env) -> None:
    """A bash v3 meta (four fields) and a meta of the previous csd release (no pid): identity by pane."""
    env.add_worker("v3", [{"event": "session_start", "cwd": str(env.root)}])
    env.add_worker("prev", [{"event": "session_start"}], meta_extra={"tmux_socket": env.socket, "csd_version": "0.1.0",
                                                                     "invocation": ["csd", "launch", "prev", "."]})
    for name in ("v3", "prev"):
        assert run("--worker", name, "status").stdout == "idle\n"
    rows = run("list").stdout.splitlines()[1:]
    assert sorted(r.split("\t")[:2] for r in rows) == [["idle", "prev"], ["idle", "v3"]]
    assert run("prune").stdout == ""


# ------------------------------------------------------------------ shims


def test_a_shim_works_from_an_empty_environment(env: Env) -> None:
    shim = launch(env, "anywhere")
    text = shim.read_text()
    assert str(env.wdir.path) in text and env.socket in text and text.startswith("#!/bin/sh\nexec /")
    assert bare(str(shim), "status", home=env.home).stdout == "idle\n"
    conv = bare(str(shim), "converse", "REPLY:from nowhere", home=env.home)
    assert (conv.returncode, conv.stdout) == (0, "from nowhere\n"), conv.stderr
    sid = env.wdir.resolve("anywhere").session_id
    stop = bare(str(shim), "stop", home=env.home)
    assert (stop.returncode, stop.stdout) == (0, f"Worker anywhere ({sid}) stopped. Shim removed.\n"), stop.stderr
    assert leftovers(env) == []


def test_a_shim_refuses_a_contradicting_environment(env: Env, tmp_path: Path) -> None:
    shim = launch(env, "mine")
    other = str(tmp_path / "elsewhere")
    proc = bare(str(shim), "stop", home=env.home, extra={"CSD_WORKERS_DIR": other})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and other in proc.stderr and str(env.wdir.path) in proc.stderr
    proc = bare(str(shim), "status", home=env.home, extra={"CSD_TMUX_SOCKET": "other-server"})
    assert proc.returncode == 2 and "'other-server'" in proc.stderr and env.socket in proc.stderr
    # the same values, spelt differently, are no contradiction
    same = bare(str(shim), "status", home=env.home, extra={"CSD_WORKERS_DIR": f"{env.wdir.path}/", "CSD_TMUX_SOCKET": env.socket})
    assert same.stdout == "idle\n", same.stderr
    assert status(shim) == "idle"  # nothing was stopped


def test_stop_says_already_stopped_only_when_the_worker_is_provably_gone(env: Env) -> None:
    shim = launch(env, "st")
    meta = env.wdir.resolve("st")
    env.wdir.meta_path(meta.session_id).unlink()  # removed by something other than stop
    # through the shim: its own workers dir has no such worker, yet its session lives
    proc = run(str(shim), "stop")
    assert proc.returncode == 1 and "nothing stopped" in proc.stderr and "alive" in proc.stderr, proc.stderr
    proc = run("--worker", "st", "stop")
    assert proc.returncode == 1 and "tmux session 'st' is alive" in proc.stderr, proc.stderr
    assert env.tmux("has-session", "-t", "=st", check=False).returncode == 0
    env.tmux("kill-session", "-t", "=st")
    # no meta and no session: provably gone without a shim; a shim's own dir still says something is off
    proc = run(str(shim), "stop")
    assert proc.returncode == 1 and "this shim's workers dir" in proc.stderr
    proc = run("--worker", "st", "stop")
    assert proc.returncode == 0 and "already stopped" in proc.stderr


# ------------------------------------------------------------------ identity across /clear


def test_clear_keeps_the_worker_and_csd_follows_its_current_session_id(env: Env) -> None:
    env.session("keep")  # keeps the tmux server up when the worker's session is killed below
    shim = launch(env, "cl")
    first = env.wdir.resolve("cl").session_id
    assert run(str(shim), "converse", "REPLY:before clear").returncode == 0
    assert run(str(shim), "send", "/clear").returncode == 0
    assert run(str(shim), "wait-for-turn", "30").returncode == 0
    now = run(str(shim), "session-id").stdout.strip()
    assert now != first and now == events(shim, "session_start")[-1]["session_id"]
    (row,) = run("list").stdout.splitlines()[1:]
    assert row.split("\t")[1:3] == ["cl", now]
    js = json.loads(run(str(shim), "status", "--json").stdout)
    assert (js["session_id"], js["first_session_id"]) == (now, first)
    for handle in (first, now, now.upper()):
        assert run("--worker", handle, "status").stdout == "idle\n", handle
    assert run(str(shim), "converse", "REPLY:after clear").stdout == "after clear\n"

    # the server goes (a reboot); adopt with the id list printed resumes the current conversation
    env.tmux("kill-session", "-t", "=cl")
    assert status(shim) == "gone"
    (row,) = run("list", "--all").stdout.splitlines()[1:]
    listed = row.split("\t")[2]
    proc = run("adopt", "cl", str(env.root), listed)
    assert proc.returncode == 0, proc.stderr
    shim = Path(proc.stdout.strip())
    (start,) = events(shim)
    assert (start["source"], start["session_id"]) == ("resume", now)
    assert run(str(shim), "converse", "REPLY:after adopt").stdout == "after adopt\n"
    transcript = Path(events(shim, "stop")[-1]["transcript_path"])
    assert transcript.stem == now
    text = transcript.read_text()
    assert "after clear" in text and "after adopt" in text and "before clear" not in text


# ------------------------------------------------------------------ adopt onto a live pane


def test_adopt_onto_a_surviving_pane_after_the_workers_dir_was_wiped(env: Env) -> None:
    env.session("keep")
    shim = launch(env, "ad")
    assert run(str(shim), "converse", "REPLY:before wipe").returncode == 0
    sid = env.wdir.resolve("ad").session_id
    old = pane_pid(env, "ad")
    shutil.rmtree(env.wdir.path)  # a tmp cleaner; the worker itself runs on
    assert running(old)
    proc = run("adopt", "ad", str(env.root), sid)
    assert proc.returncode == 0, proc.stderr
    assert "respawned existing pane" in proc.stderr
    assert not running(old)  # ended before the respawn
    shim = Path(proc.stdout.strip())
    # the old process's SessionEnd never reached the new worker's events file
    assert [e["event"] for e in events(shim)] == ["session_start"] and events(shim)[0]["source"] == "resume"
    assert run(str(shim), "converse", "REPLY:after adopt").stdout == "after adopt\n"
    text = Path(events(shim, "stop")[-1]["transcript_path"]).read_text()
    assert "before wipe" in text and "after adopt" in text
    assert env.tmux("has-session", "-t", "=keep", check=False).returncode == 0


def test_adopt_onto_a_session_with_a_person_s_window_takes_the_pane_it_respawns(env: Env) -> None:
    """A restored session with two windows, the second current: adopt respawns the active pane there, and that pane
    (not the first window's) is the worker from then on: it converses, and stop ends it and leaves no process."""
    shim = launch(env, "aw")
    assert run(str(shim), "converse", "REPLY:before").returncode == 0
    sid = env.wdir.resolve("aw").session_id
    assert run(str(shim), "stop").returncode == 0
    env.session("aw")  # restored: a first window with a long sleep...
    env.tmux("new-window", "-t", "=aw:", "--", "sleep", "100001")  # ...and a second, current one
    first = int(env.tmux("list-panes", "-t", "=aw:0", "-F", "#{pane_pid}").stdout)
    proc = run("adopt", "aw", str(env.root), sid)
    assert proc.returncode == 0, proc.stderr
    shim = Path(proc.stdout.strip())
    assert run(str(shim), "status").stdout == "idle\n"
    assert run(str(shim), "converse", "REPLY:after").stdout == "after\n"
    worker = env.wdir.resolve("aw").pid
    assert worker != first and running(first)
    assert run(str(shim), "stop").returncode == 0
    assert not running(worker)


def test_a_failed_adopt_onto_a_pane_leaves_its_session_and_the_server(env: Env) -> None:
    env.session("keep")
    shim = launch(env, "gone")
    assert run(str(shim), "converse", "REPLY:a conversation to resume").returncode == 0
    sid = env.wdir.resolve("gone").session_id
    assert run(str(shim), "stop").returncode == 0  # the transcript stays
    env.session("ad")  # tmux-resurrect brought a session back, with something in it
    proc = run("adopt", "ad", str(env.root), sid, env={"CSD_SIM_EXIT_AT_START": "1"})
    assert proc.returncode == 1 and "exited during start-up" in proc.stderr
    assert "left in place" in proc.stderr
    sessions = env.tmux("list-sessions", "-F", "#{session_name}").stdout.split()
    assert sorted(sessions) == ["ad", "keep"]
    assert [p.name for p in env.wdir.path.iterdir() if p.is_file()] == [] and list(env.wdir.bin.iterdir()) == []


def test_adopt_of_a_conversation_that_does_not_exist_leaves_the_pane_untouched(env: Env) -> None:
    """Claude Code writes a transcript only after a first prompt: --resume of anything else exits at once.
    adopt says so before it ends what runs in the pane."""
    env.session("ad")
    pid = pane_pid(env, "ad")
    proc = run("adopt", "ad", str(env.root), "0f8fad5b-d9cb-469f-a165-70867728950e")
    assert proc.returncode == 1 and "no conversation 0f8fad5b" in proc.stderr and "left as it is" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert running(pid) and pane_pid(env, "ad") == pid
    assert [p.name for p in env.wdir.path.iterdir() if p.is_file()] == []


# ------------------------------------------------------------------ one session id, one worker


def test_adopt_refuses_a_session_id_a_live_worker_uses(env: Env) -> None:
    shim = launch(env, "orig")
    sid = env.wdir.resolve("orig").session_id
    before = env.wdir.meta_path(sid).read_text()
    proc = run("adopt", "copy", str(env.root), sid)
    assert proc.returncode == 1 and "in use by live worker 'orig'" in proc.stderr, proc.stderr
    assert env.wdir.meta_path(sid).read_text() == before and status(shim) == "idle"
    assert env.tmux("has-session", "-t", "=copy", check=False).returncode != 0
    # after /clear the current id is refused too
    assert run(str(shim), "send", "/clear").returncode == 0 and run(str(shim), "wait-for-turn", "30").returncode == 0
    now = run(str(shim), "session-id").stdout.strip()
    proc = run("adopt", "copy", str(env.root), now)
    assert proc.returncode == 1 and "in use by live worker 'orig'" in proc.stderr
    # a gone worker's session can be adopted under another name: its files are cleared, one meta remains
    assert run(str(shim), "converse", "CRASH").returncode == 3
    proc = run("adopt", "copy", str(env.root), now)
    assert proc.returncode == 0, proc.stderr
    assert "clearing the files of gone worker 'orig'" in proc.stderr
    assert [(m.tmux_name, m.session_id) for m in env.wdir.metas()] == [("copy", now)]
    assert not shim.exists()


# ------------------------------------------------------------------ prune


def test_prune_removes_only_gone_workers_and_dry_run_shows_them_first(env: Env) -> None:
    live = launch(env, "live")
    gone = env.add_worker("gone", [{"event": "session_start"}], live=False)
    env.wdir.write_shim("gone")
    env.add_worker("starting", live=False)  # a launch under way: meta, empty events file, no session yet
    crashed = launch(env, "crashed")
    csid = env.wdir.resolve("crashed").session_id
    assert run(str(crashed), "converse", "CRASH").returncode == 3
    before = leftovers(env)

    dry = run("prune", "--dry-run")
    assert dry.returncode == 0
    lines = dry.stdout.splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["would remove crashed", "would remove gone"]
    assert str(env.wdir.events_path(gone.session_id)) in lines[1] and str(env.wdir.shim_path("gone")) in lines[1]
    assert leftovers(env) == before

    done = run("prune")
    assert done.returncode == 0
    assert done.stdout == dry.stdout.replace("would remove ", "removed ")
    assert f"removed crashed ({csid})" in done.stdout
    assert {m.tmux_name for m in env.wdir.metas()} == {"live", "starting"}
    assert not env.wdir.shim_path("gone").exists() and not crashed.exists() and live.exists()
    assert status(live) == "idle"
    again = run("prune")
    assert again.stdout == "" and "nothing to prune" in again.stderr


# ------------------------------------------------------------------ small things


def test_the_loser_of_a_lock_race_is_told_the_holder_even_before_it_wrote_its_line(env: Env) -> None:
    """The holder takes the lock, then writes who it is: a loser that reads in between must still name it."""
    shim = launch(env, "lk")
    lock = env.wdir.lock_path(env.wdir.resolve("lk").session_id)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, nothing written yet
        loser = subprocess.Popen([str(shim), "send", "REPLY:x"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # until the loser has the lock file open (it has found the lock taken)
        deadline = time.monotonic() + 15
        while loser.poll() is None and time.monotonic() < deadline:
            try:
                if any(os.readlink(f) == str(lock) for f in Path(f"/proc/{loser.pid}/fd").iterdir()):
                    break
            except OSError:
                pass
            time.sleep(0.002)
        os.pwrite(fd, b"pid 4242 (the test holder)", 0)
        out, err = loser.communicate(timeout=30)
        assert loser.returncode == 1 and "pid 4242 (the test holder) holds its lock" in err, err
        # a holder that never writes its line is named from /proc/locks
        os.ftruncate(fd, 0)
        silent = run(str(shim), "send", "REPLY:y")
        assert silent.returncode == 1 and f"pid {os.getpid()} holds its lock" in silent.stderr, silent.stderr
    finally:
        os.close(fd)
    assert events(shim, "user_prompt_submit") == []


def test_unknown_worker_message_separates_its_parts(env: Env) -> None:
    env.add_worker("alpha", live=False)
    with pytest.raises(UnknownWorker) as exc:
        env.wdir.resolve("zeta")
    assert str(exc.value) == f"unknown worker 'zeta' in {env.wdir.path}; known workers: alpha"
    with pytest.raises(UnknownWorker) as exc:
        env.wdir.resolve("alpah")
    assert str(exc.value) == f"unknown worker 'alpah' in {env.wdir.path} (did you mean 'alpha'?); known workers: alpha"


def test_worker_alive_is_the_recorded_process_not_the_pane() -> None:
    from csd.proc import proc_start
    from csd.tmux import Pane, worker_alive

    me = os.getpid()
    start = proc_start(me)
    pane = Pane("w", "%1", me, dead=False)
    assert start > 0 and worker_alive(pane, me, start)
    assert worker_alive(pane)  # a meta with no pid (bash v3, previous release): the pane is all there is
    assert not worker_alive(pane, me + 1, start)  # the pane runs another process
    assert not worker_alive(pane, me, start + 1)  # the same pid, reused by a later process
    assert not worker_alive(Pane("w", "%1", me, dead=True), me, start) and not worker_alive(None, me, start)
