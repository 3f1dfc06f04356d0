"""launch, adopt and stop against real tmux and the simulated worker: happy paths, refusals, clean-up."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import Env, leftovers


def csd(*argv: str, env: dict[str, str] | None = None, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "csd", *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, input=input.decode() if input else None)


def test_launch_converse_stop_through_the_printed_shim(env: Env) -> None:
    proc = csd("launch", "w1", str(env.root), "--", "--model", "sonnet")
    assert proc.returncode == 0, proc.stderr
    shim = proc.stdout.strip()
    assert proc.stdout == f"{env.wdir.shim_path('w1')}\n"  # stdout is the shim path only
    assert "reproduce: " in proc.stderr and "session id:" in proc.stderr and str(env.root) in proc.stderr
    conv = subprocess.run([shim, "converse", "REPLY:hello controller"], capture_output=True, text=True, timeout=60)
    assert (conv.returncode, conv.stdout) == (0, "hello controller\n"), conv.stderr
    meta = env.wdir.resolve("w1")
    assert meta.invocation[-2:] == ("--model", "sonnet") and meta.cwd == str(env.root.resolve())
    stop = subprocess.run([shim, "stop"], capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and stop.stdout == f"Worker w1 ({meta.session_id}) stopped. Shim removed.\n"
    assert leftovers(env) == []
    # the reproduce line, run after stop, launches an equivalent worker
    reproduce = proc.stderr.split("reproduce: ", 1)[1].splitlines()[0]
    again = subprocess.run(reproduce, shell=True, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    meta2 = env.wdir.resolve("w1")
    assert meta2.invocation == meta.invocation and meta2.cwd == meta.cwd and meta2.session_id != meta.session_id
    assert subprocess.run([again.stdout.strip(), "status"], capture_output=True, text=True).stdout == "idle\n"


@pytest.mark.parametrize("name", ["a.b", "a:b", "", "x" * 200])
def test_bad_names_are_refused_leaving_nothing(env: Env, name: str) -> None:
    proc = csd("launch", name, str(env.root))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "invalid worker name" in proc.stderr
    assert leftovers(env) == []


def test_missing_cwd_is_refused(env: Env) -> None:
    proc = csd("launch", "w", str(env.root / "nope"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and str(env.root / "nope") in proc.stderr
    assert leftovers(env) == []


def test_no_consent_is_refused_and_says_how_to_grant(env: Env) -> None:
    (env.home / ".claude" / ".claude-session-driver-consent").unlink()
    proc = csd("launch", "w", str(env.root))
    assert proc.returncode == 1 and "csd grant-consent" in proc.stderr
    assert leftovers(env) == []
    assert csd("grant-consent", input=b"no\n").returncode == 1
    granted = csd("grant-consent", input=b"yes\n")
    assert granted.returncode == 0 and "recorded" in granted.stderr
    assert "already granted" in csd("grant-consent").stderr


def test_a_live_worker_or_session_of_that_name_is_refused(env: Env) -> None:
    assert csd("launch", "dup", str(env.root)).returncode == 0

    def made() -> list[str]:
        # the live worker's cost file comes when its statusLine command first runs, which may be after launch
        return [f for f in leftovers(env) if not f.endswith(".cost.json")]

    before = made()
    proc = csd("launch", "dup", str(env.root))
    assert proc.returncode == 1 and "already exists" in proc.stderr and "stop" in proc.stderr
    assert made() == before
    env.session("plain")
    proc = csd("launch", "plain", str(env.root))
    assert proc.returncode == 1 and "tmux session named 'plain' already exists" in proc.stderr


def test_a_worker_that_exits_during_startup_fails_fast_with_its_last_lines(env: Env) -> None:
    t0 = time.monotonic()
    proc = csd("launch", "root", str(env.root), env={"IS_SANDBOX": ""})
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1
    assert "exited during start-up" in proc.stderr and "IS_SANDBOX=1" in proc.stderr
    assert "cannot be used with root/sudo privileges" in proc.stderr  # the pane's last lines
    assert elapsed < 10, elapsed  # well under CSD_LAUNCH_TIMEOUT (30 s)
    assert leftovers(env) == []


def test_launch_timeout_cleans_up(env: Env) -> None:
    proc = csd("launch", "slow", str(env.root), env={"CSD_SIM_STARTUP_DELAY": "30", "CSD_LAUNCH_TIMEOUT": "1"})
    assert proc.returncode == 1 and "did not start within 1s" in proc.stderr
    assert leftovers(env) == []


def test_trust_dialog_is_passed_by_choosing_yes(env: Env) -> None:
    """The dialog defaults to 'No, exit': a bare Enter would kill the worker, so passing it proves Down was chosen."""
    proc = csd("launch", "tr", str(env.root), env={"CSD_SIM_TRUST_DIALOG": "1"})
    assert proc.returncode == 0, proc.stderr
    shim = proc.stdout.strip()
    assert subprocess.run([shim, "status"], capture_output=True, text=True).stdout == "idle\n"
    screen = env.tmux("capture-pane", "-p", "-t", "=tr:").stdout
    assert "Yes, I trust this folder" not in screen


def test_provider_environment_is_pinned(env: Env) -> None:
    env.session("keep")  # the server exists first, with a stale global value
    env.tmux("set-environment", "-g", "CLAUDE_CODE_USE_BEDROCK", "1")
    env.tmux("set-environment", "-g", "CLAUDE_CODE_SSE_PORT", "12345")
    probe = 'TOOL:Bash:echo "B=[$CLAUDE_CODE_USE_BEDROCK] V=[$CLAUDE_CODE_USE_VERTEX] S=[$CLAUDE_CODE_SSE_PORT] P=[$TERM_PROGRAM] T=[$TERM]"'
    # a controller agent's shell: no real terminal, an IDE's terminal program
    shim = csd("launch", "p1", str(env.root), env={"TERM": "dumb", "TERM_PROGRAM": "vscode"}).stdout.strip()
    out = subprocess.run([shim, "converse", probe], capture_output=True, text=True, timeout=60).stdout
    assert "B=[] V=[] S=[]" in out and "vscode" not in out and "T=[dumb]" not in out  # tmux sets its own
    shim2 = csd("launch", "p2", str(env.root), env={"CLAUDE_CODE_USE_VERTEX": "1", "CLAUDE_CODE_SSE_PORT": "999"}).stdout.strip()
    out = subprocess.run([shim2, "converse", probe], capture_output=True, text=True, timeout=60).stdout
    assert "B=[] V=[1] S=[]" in out


@pytest.mark.parametrize("in_place", [False, True], ids=["new-pane", "existing-pane"])
def test_adopt_after_the_workers_dir_was_wiped_resumes_the_same_session(env: Env, in_place: bool) -> None:
    env.session("keep")  # other sessions keep the tmux server up across the kill below
    shim = csd("launch", "ad", str(env.root)).stdout.strip()
    assert subprocess.run([shim, "converse", "REPLY:before reboot"], capture_output=True).returncode == 0
    sid = env.wdir.resolve("ad").session_id
    if in_place:
        # tmux-resurrect brings back a session of that name with a plain shell in it
        env.tmux("kill-session", "-t", "=ad")
        env.session("ad")
    else:
        env.tmux("kill-session", "-t", "=ad")
    shutil.rmtree(env.wdir.path)
    proc = csd("adopt", "ad", str(env.root), sid)
    assert proc.returncode == 0, proc.stderr
    assert ("respawned existing pane" if in_place else "opened new pane") in proc.stderr
    assert env.wdir.resolve("ad").session_id == sid
    new_shim = proc.stdout.strip()
    ev = [json.loads(x) for x in subprocess.run([new_shim, "read-events"], capture_output=True, text=True).stdout.splitlines()]
    assert ev[0]["event"] == "session_start" and ev[0]["source"] == "resume" and ev[0]["session_id"] == sid
    conv = subprocess.run([new_shim, "converse", "REPLY:after reboot"], capture_output=True, text=True, timeout=60)
    assert conv.stdout == "after reboot\n"


def test_adopt_rejects_a_non_uuid(env: Env) -> None:
    proc = csd("adopt", "x", str(env.root), "not-a-uuid")
    assert proc.returncode == 2 and "invalid session id 'not-a-uuid'" in proc.stderr
    assert leftovers(env) == []


def test_stop_removes_everything_and_is_idempotent(env: Env) -> None:
    shim = csd("launch", "st", str(env.root)).stdout.strip()
    assert subprocess.run([shim, "send", "REPLY:x"], capture_output=True).returncode == 0  # creates the lock file
    sid = env.wdir.resolve("st").session_id
    assert env.wdir.lock_path(sid).exists()
    assert subprocess.run([shim, "stop"], capture_output=True).returncode == 0
    assert leftovers(env) == []
    again = csd("--worker", "st", "stop")
    assert again.returncode == 0 and "already stopped" in again.stderr


def test_stop_after_the_worker_died_cleans_up(env: Env) -> None:
    shim = csd("launch", "dead", str(env.root)).stdout.strip()
    assert subprocess.run([shim, "converse", "CRASH"], capture_output=True).returncode == 3
    assert subprocess.run([shim, "status"], capture_output=True, text=True).stdout == "gone\n"
    proc = subprocess.run([shim, "stop"], capture_output=True, text=True)
    assert proc.returncode == 0 and "stopped" in proc.stdout
    assert leftovers(env) == []


def test_stop_of_a_working_worker(env: Env) -> None:
    shim = csd("launch", "busy", str(env.root)).stdout.strip()
    assert subprocess.run([shim, "send", "HANG"], capture_output=True).returncode == 0
    proc = subprocess.run([shim, "stop"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert leftovers(env) == []


def test_stop_with_a_typo_is_not_silently_ok(env: Env) -> None:
    csd("launch", "alpha", str(env.root))
    proc = csd("--worker", "alpah", "stop")
    assert proc.returncode == 1 and "did you mean 'alpha'" in proc.stderr


def test_each_event_is_recorded_once_when_the_plugin_is_also_loaded(env: Env) -> None:
    """Claude Code fires a plugin's hooks and --settings hooks both: the worker must still log each event once."""
    from csd.bundled import PLUGIN_DIR

    # csd on PATH, as an installed csd is: the plugin route can then find csd's interpreter and would record
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    shim = csd("launch", "both", str(env.root), "--", "--plugin-dir", str(PLUGIN_DIR), env={"PATH": path}).stdout.strip()
    assert subprocess.run([shim, "converse", "TOOL:Bash:echo once"], capture_output=True).returncode == 0
    names = [json.loads(x)["event"] for x in subprocess.run([shim, "read-events"], capture_output=True, text=True).stdout.splitlines()]
    assert names == ["session_start", "user_prompt_submit", "pre_tool_use", "post_tool_use", "stop"]


def test_adopt_refuses_a_live_worker_of_that_name_and_clears_a_gone_one(env: Env) -> None:
    shim = csd("launch", "ad2", str(env.root)).stdout.strip()
    sid = env.wdir.resolve("ad2").session_id
    proc = csd("adopt", "ad2", str(env.root), sid)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert subprocess.run([shim, "converse", "CRASH"], capture_output=True).returncode == 3  # now gone, files stay
    proc = csd("adopt", "ad2", str(env.root), sid)
    assert proc.returncode == 0, proc.stderr
    assert "clearing the files of gone worker 'ad2'" in proc.stderr
    assert [m.session_id for m in env.wdir.metas()] == [sid]


def test_launch_starts_the_pane_before_it_imports_the_engine(env: Env) -> None:
    """The worker starts up while csd imports the engine (csd/startpane.py): when launch runs tmux new-session,
    none of the engine's modules is loaded yet (bench/: launch overhead beyond the worker's own start-up)."""
    engine = ("csd.supervisor", "csd.lifecycle", "csd.watch", "csd.inotify", "csd.reply")
    code = ("import sys\n"
            "def seen(event, args):\n"
            "    if event == 'subprocess.Popen' and 'new-session' in list(args[1]):\n"
            f"        print('LOADED', sorted(m for m in {engine!r} if m in sys.modules), flush=True)\n"
            "sys.addaudithook(seen)\n"
            "from csd.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code, "launch", "early", str(env.root)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED")] == ["LOADED []"]
    assert proc.stdout.splitlines()[-1] == str(env.wdir.shim_path("early"))
