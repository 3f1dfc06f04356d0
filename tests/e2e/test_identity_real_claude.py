"""A worker stays itself, against the real Claude Code (offline, the mock Messages API): a shim from an
empty environment, the current conversation followed across /clear and a lost tmux server, adopt onto a
pane that survived its workers dir, and the SessionEnd a respawned pane's claude records (which the
simulated worker copies). Driven only through csd's command line and the printed shims."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from csd.proc import is_zombie


def bare(real, *argv: str) -> subprocess.CompletedProcess[str]:
    """As from cron or a controller's next tool call: `env -i` with only PATH and HOME."""
    env = {"PATH": real.env["PATH"], "HOME": real.env["HOME"]}
    return subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv], capture_output=True,
                          text=True, timeout=90)


def request_for(real, prompt: str) -> str:
    """The whole conversation the model was sent with ``prompt`` as its last user text."""
    request = [r for r in real.api.messages() if r.get("last_user_text") == prompt][-1]
    return json.dumps(request["body"]["messages"])


def running(pid: int) -> bool:
    return not is_zombie(pid)  # an exited process tmux has yet to reap is not running


def test_a_shim_works_from_env_i_with_only_path_and_home(real) -> None:
    shim = real.launch("i1")
    assert bare(real, str(shim), "status").stdout == "idle\n"
    conv = bare(real, str(shim), "converse", "hello from nowhere", "60")
    assert (conv.returncode, conv.stdout) == (0, "ECHO: hello from nowhere\n"), conv.stderr
    sid = real.shim("i1", "session-id").stdout.strip()
    stop = bare(real, str(shim), "stop")
    assert (stop.returncode, stop.stdout) == (0, f"Worker i1 ({sid}) stopped. Shim removed.\n"), stop.stderr
    assert real.tmux("has-session", "-t", "=i1").returncode != 0


def test_respawning_the_pane_makes_claude_record_session_end(real) -> None:
    """What the simulated worker copies (tests/test_identity.py): respawn-pane -k hangs up the terminal and
    Claude Code records SessionEnd with reason other before it exits."""
    real.launch("i2")
    events_file = Path(real.shim("i2", "events-file").stdout.strip())
    pid = real.pane_pid("i2")
    real.tmux("respawn-pane", "-k", "-t", "=i2:", "--", "sleep", "100000")
    deadline = time.monotonic() + 20
    ends: list[dict] = []
    while not ends and time.monotonic() < deadline:
        ends = [e for e in map(json.loads, events_file.read_text().splitlines()) if e["event"] == "session_end"]
        time.sleep(0.05)
    assert [e["reason"] for e in ends] == ["other"]
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(pid)
    assert real.shim("i2", "status").stdout == "gone\n"  # the pane runs something else now
    assert real.shim("i2", "stop").returncode == 0
    assert real.tmux("has-session", "-t", "=i2").returncode == 0  # sleep's session left alone
    real.tmux("kill-session", "-t", "=i2")


def test_clear_then_a_lost_server_then_adopt_continues_the_current_conversation(real) -> None:
    real.launch("i3")
    first = real.shim("i3", "session-id").stdout.strip()
    assert real.shim("i3", "converse", "said before clear", "60").returncode == 0
    assert real.shim("i3", "send", "/clear").returncode == 0
    assert real.shim("i3", "wait-for-turn", "30").returncode == 0
    after = real.shim("i3", "converse", "said after clear", "60")
    assert (after.returncode, after.stdout) == (0, "ECHO: said after clear\n"), after.stderr
    now = real.shim("i3", "session-id").stdout.strip()
    assert now != first
    js = json.loads(real.shim("i3", "status", "--json").stdout)
    assert (js["session_id"], js["first_session_id"]) == (now, first)
    assert real.csd("--worker", now, "status").stdout == "idle\n"

    real.tmux("kill-server")
    listed = [row.split("\t") for row in real.csd("list", "--all").stdout.splitlines()[1:]]
    assert [(r[1], r[2]) for r in listed] == [("i3", now)]
    real.started("i3", real.csd("adopt", "i3", str(real.proj), now))
    conv = real.shim("i3", "converse", "said after adopt", "60")
    assert (conv.returncode, conv.stdout) == (0, "ECHO: said after adopt\n"), conv.stderr
    sent = request_for(real, "said after adopt")
    assert "said after clear" in sent and "said before clear" not in sent
    real.shim("i3", "stop")


def test_adopt_onto_a_surviving_pane_after_the_workers_dir_was_removed(real) -> None:
    real.launch("keep")  # another worker on the same tmux server
    real.launch("i4")
    assert real.shim("i4", "converse", "said before the wipe", "60").returncode == 0
    assert real.shim("keep", "converse", "keep this", "60").returncode == 0
    sid = real.shim("i4", "session-id").stdout.strip()
    keep_sid = real.shim("keep", "session-id").stdout.strip()
    old = real.pane_pid("i4")
    shutil.rmtree(real.workers)
    proc = real.csd("adopt", "i4", str(real.proj), sid)
    assert proc.returncode == 0, proc.stderr
    assert "respawned existing pane" in proc.stderr
    real.started("i4", proc)
    real.started("keep", real.csd("adopt", "keep", str(real.proj), keep_sid))
    assert not running(old)
    assert [e["event"] for e in real.events("i4")] == ["session_start"]  # no SessionEnd of the old claude
    conv = real.shim("i4", "converse", "said after adopt", "60")
    assert (conv.returncode, conv.stdout) == (0, "ECHO: said after adopt\n"), conv.stderr
    assert "said before the wipe" in request_for(real, "said after adopt")
    for name in ("i4", "keep"):
        assert real.shim(name, "stop").returncode == 0

