"""csd against the real Claude Code CLI (the pinned release), offline against the mock Messages API.

Every step is what a controller does: ``csd launch``/``adopt``/``wait-for-turn`` and the printed shim, as
subprocesses. Workers are shared across the tests of this module (``real`` in conftest.py) and the tests
run in file order; each one still launches what it needs if an earlier one did not leave it.

The mock scripts the model: ``ECHO: <prompt>``, ``TOOL:Bash:<cmd>`` (then ``DONE: <output>``),
``TOOL:<Name>:<json>``, ``SLEEP:<s>`` (see mockapi.py).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from support import wait_blocked  # tests/support.py

AGENT_PROMPT = 'TOOL:Agent:{"description":"probe","prompt":"sub task hello","subagent_type":"general-purpose"}'


def leftovers(real, name: str) -> list[str]:
    """What a worker of that name could leave: its tmux session, meta, events file, lock, shim."""
    found = [f"tmux session {name}"] if real.tmux("has-session", "-t", f"={name}").returncode == 0 else []
    for p in real.workers.glob("*.meta"):
        try:
            if json.loads(p.read_text()).get("tmux_name") == name:
                found += [q.name for q in real.workers.glob(p.name.removesuffix(".meta") + ".*")]
        except (OSError, ValueError):
            pass
    return found + ([f"shim {name}"] if (real.workers / "bin" / name).exists() else [])


def test_launch_converse_and_a_bash_turn(real) -> None:
    shim = real.launch("a")
    assert real.shim("a", "status").stdout == "idle\n"

    plain = real.shim("a", "converse", "hello plain", "60")
    assert (plain.returncode, plain.stdout) == (0, "ECHO: hello plain\n"), plain.stderr

    tool = real.shim("a", "converse", "--with-turn", "TOOL:Bash:echo tool-ok", "60")
    assert tool.returncode == 0, tool.stderr
    md = tool.stdout
    assert "**Prompt:** TOOL:Bash:echo tool-ok" in md
    assert "**Tool: Bash**" in md and '"command": "echo tool-ok"' in md
    # the tool result and the final text reach the transcript after the Stop hook: converse waits for them
    assert "**Result:**" in md and "tool-ok\n" in md
    assert md.rstrip().endswith("DONE: tool-ok"), md

    (pre,) = real.events("a", "pre_tool_use")
    assert pre["tool"] == "Bash" and pre["tool_input"]["command"] == "echo tool-ok"
    post = real.events("a", "post_tool_use")[-1]
    assert post["tool_use_id"] == pre["tool_use_id"] and post["tool_response"]["stdout"] == "tool-ok"
    stop = real.events("a", "stop")[-1]
    assert stop["prompt_id"] == pre["prompt_id"] and stop["last_assistant_message"] == "DONE: tool-ok"

    turn = real.shim("a", "read-turn")
    assert turn.returncode == 0, turn.stderr
    assert turn.stdout.strip() == md.strip()
    # the Bash call really ran: its output went back to the (mock) model
    assert any(r.get("reply", {}).get("text") == "DONE: tool-ok" for r in real.api.messages())
    assert shim.exists()


def test_fan_out_wait_any_then_all(real) -> None:
    real.worker("a")
    real.worker("b")
    assert real.shim("a", "send", "SLEEP:4 slow one").returncode == 0
    assert real.shim("b", "send", "SLEEP:1 fast one").returncode == 0

    first = real.csd("wait-for-turn", "--any", "a", "b", "60")
    assert first.returncode == 0, first.stderr
    name, line = first.stdout.strip().split("\t", 1)
    assert name == "b" and json.loads(line)["last_assistant_message"] == "ECHO: SLEEP:1 fast one"
    assert real.shim("a", "status").stdout == "working\n"  # --any did not wait for the slow one

    both = real.csd("wait-for-turn", "--all", "a", "b", "60")
    assert both.returncode == 0, both.stderr
    rows = dict(row.split("\t", 1) for row in both.stdout.splitlines())
    assert {n: json.loads(v)["last_assistant_message"] for n, v in rows.items()} == {
        "a": "ECHO: SLEEP:4 slow one",
        "b": "ECHO: SLEEP:1 fast one",
    }
    assert [real.shim(n, "status").stdout for n in ("a", "b")] == ["idle\n", "idle\n"]


def test_settled_waits_out_a_background_agent(real) -> None:
    """The Agent tool returns at once (background by default); its result comes back as a synthetic
    <task-notification> prompt. The real CLI orders this three ways, depending on when the sub-agent
    finishes: the turn's Stop lists the agent as running and the notification gets a turn of its own;
    the Stop lists nothing (the agent already finished) and the notification's turn follows; or the
    notification is absorbed into the running turn (one Stop). --settled must wait it out in each."""
    real.worker("a")
    before = len(real.events("a"))
    assert real.shim("a", "send", AGENT_PROMPT).returncode == 0
    proc = real.shim("a", "wait-for-turn", "60", "--settled")
    assert proc.returncode == 0, proc.stderr
    settled = json.loads(proc.stdout)
    assert settled["event"] == "stop" and settled["bg_running"] == 0

    new = real.events("a")[before:]
    first = new[0]
    assert first["event"] == "user_prompt_submit" and first["prompt"] == AGENT_PROMPT
    (post,) = [e for e in new if e["event"] == "post_tool_use"]
    assert post["tool"] == "Agent" and post["tool_response"]["isAsync"] is True
    agent_id = post["tool_response"]["agentId"]
    (sub,) = [e for e in new if e["event"] == "subagent_stop"]
    assert sub["agent_type"] == "general-purpose" and sub["agent_id"] == agent_id
    (note,) = [e for e in new if e["event"] == "user_prompt_submit" and e["prompt"].startswith("<task-notification>")]
    assert f"<task-id>{agent_id}</task-id>" in note["prompt"]
    # what --settled returned is the last stop, and it ended the turn that took the notification
    stops = [e for e in new if e["event"] == "stop"]
    assert stops[-1] == settled and new.index(note) < new.index(settled)
    assert settled["prompt_id"] == note["prompt_id"]
    for stop in stops[:-1]:  # an earlier stop: the Agent prompt's own turn
        assert stop["prompt_id"] == first["prompt_id"]
        if stop["bg_running"]:
            assert stop["background_tasks"][0]["description"] == "probe"
    js = json.loads(real.shim("a", "status", "--json").stdout)
    assert js["settled"] is True and js["state"] == "idle"
    assert any(r.get("subagent") and r.get("last_user_text") == "sub task hello" for r in real.api.messages())


def test_kill_9_mid_turn_reads_gone_and_ends_a_running_wait(real) -> None:
    real.worker("a")
    assert real.shim("a", "send", "SLEEP:30 kill me").returncode == 0
    waiter = real.popen_shim("a", "wait-for-turn", "60")
    try:
        wait_blocked(waiter)
        # the model request must be in flight before the kill (under load Claude Code sends it a while after
        # its user_prompt_submit), so that its abort can be checked below
        real.api.wait_for(lambda r: r.get("last_user_text") == "SLEEP:30 kill me", timeout=30)
        pid = real.pane_pid("a")
        assert pid > 0
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        out, err = waiter.communicate(timeout=15)
        elapsed = time.monotonic() - t0
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 3, err
    assert "gone" in err and "kill me" in err and out == ""
    assert elapsed < 3, elapsed
    assert real.shim("a", "status").stdout == "gone\n"
    assert not any(e["event"] == "session_end" for e in real.events("a"))  # kill -9: no SessionEnd
    # the model request in flight was cut off with the process
    real.api.wait_for(lambda r: r.get("aborted") and r.get("last_user_text") == "SLEEP:30 kill me", timeout=10)

    sid = real.shim("a", "session-id").stdout.strip()
    stop = real.shim("a", "stop")
    assert (stop.returncode, stop.stdout) == (0, f"Worker a ({sid}) stopped. Shim removed.\n"), stop.stderr
    assert leftovers(real, "a") == []


def test_stop_then_adopt_resumes_the_session(real) -> None:
    real.worker("b")
    before = real.shim("b", "converse", "remember before stop", "60")
    assert before.stdout == "ECHO: remember before stop\n", before.stderr
    sid = real.shim("b", "session-id").stdout.strip()
    transcript = Path(real.events("b", "stop")[-1]["transcript_path"])

    stop = real.shim("b", "stop")
    assert (stop.returncode, stop.stdout) == (0, f"Worker b ({sid}) stopped. Shim removed.\n"), stop.stderr
    assert leftovers(real, "b") == []
    assert transcript.is_file() and str(transcript).startswith(str(real.home))  # stop keeps the transcript

    proc = real.csd("adopt", "b", str(real.proj), sid)
    real.started("b", proc)
    (start,) = real.events("b")
    assert start["event"] == "session_start" and start["source"] == "resume" and start["session_id"] == sid
    assert real.shim("b", "status").stdout == "idle\n"

    after = real.shim("b", "converse", "after adopt", "60")
    assert (after.returncode, after.stdout) == (0, "ECHO: after adopt\n"), after.stderr
    # the resumed conversation went to the model with what came before the stop
    request = [r for r in real.api.messages() if r.get("last_user_text") == "after adopt"][-1]
    assert "remember before stop" in json.dumps(request["body"]["messages"])


def test_untrusted_directory_passes_the_real_trust_dialog(real) -> None:
    cwd = str(real.untrusted.resolve())
    assert not real.claude_json().get("projects", {}).get(cwd, {}).get("hasTrustDialogAccepted")
    # the dialog defaults to "No, exit": a launch that succeeds and answers chose "Yes, I trust this folder"
    real.launch("c", real.untrusted)
    conv = real.shim("c", "converse", "hello from an untrusted dir", "60")
    assert (conv.returncode, conv.stdout) == (0, "ECHO: hello from an untrusted dir\n"), conv.stderr
    assert real.claude_json()["projects"][cwd]["hasTrustDialogAccepted"] is True
    screen = real.tmux("capture-pane", "-p", "-t", "=c:").stdout
    assert "Yes, I trust this folder" not in screen


@pytest.mark.skipif(os.geteuid() != 0, reason="Claude Code refuses bypass mode without IS_SANDBOX only as root")
def test_root_without_is_sandbox_fails_fast_and_says_why(real) -> None:
    # with other workers alive on the same tmux server, whose global environment has IS_SANDBOX=1 (csd
    # never hands a tmux server the controller's environment, but a server started otherwise holds it)
    real.worker("b")
    real.tmux("set-environment", "-g", "IS_SANDBOX", "1")
    env = {k: v for k, v in real.env.items() if k != "IS_SANDBOX"}
    t0 = time.monotonic()
    proc = real.csd("launch", "noroot", str(real.proj), env=env)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert "IS_SANDBOX=1" in proc.stderr and "exited during start-up" in proc.stderr
    assert "cannot be used with root/sudo privileges" in proc.stderr  # the pane's own last line
    assert elapsed < 10, elapsed  # well under CSD_LAUNCH_TIMEOUT (30 s)
    assert leftovers(real, "noroot") == []
    assert real.shim("b", "status").stdout == "idle\n"


def test_compact_and_clear_sent_as_prompts(real) -> None:
    """/compact is a turn without user_prompt_submit or stop; /clear gives a new session id. The worker stays observable."""
    real.worker("s")
    assert real.shim("s", "converse", "hello before compact", "60").returncode == 0
    assert real.shim("s", "send", "/compact").returncode == 0
    end = real.shim("s", "wait-for-turn", "60")
    assert end.returncode == 0, end.stderr
    line = json.loads(end.stdout)
    assert (line["event"], line.get("source")) == ("session_start", "compact"), line
    assert real.shim("s", "status").stdout == "idle\n"
    assert real.shim("s", "send", "/clear").returncode == 0
    assert real.shim("s", "wait-for-turn", "30").returncode == 0
    conv = real.shim("s", "converse", "hello after clear", "60")
    assert (conv.returncode, conv.stdout) == (0, "ECHO: hello after clear\n"), conv.stderr
    starts = real.events("s", "session_start")
    assert [e["source"] for e in starts][-2:] == ["compact", "clear"]
    assert starts[-1]["session_id"] != starts[0]["session_id"]
    assert real.shim("s", "status").stdout == "idle\n"


def test_plugin_and_settings_hooks_record_each_event_once(real) -> None:
    """The real Claude Code runs a plugin's hooks and --settings hooks both: each event must land once."""
    repo = Path(__file__).resolve().parents[2]
    # csd on PATH, as an installed csd is, so the plugin route could find csd's interpreter and record
    env = {**real.env, "PATH": f"{Path(sys.executable).parent}:{real.env['PATH']}"}
    real.started("p", real.csd("launch", "p", str(real.proj), "--", "--plugin-dir", str(repo), env=env))
    conv = real.shim("p", "converse", "TOOL:Bash:echo once", "60")
    assert conv.returncode == 0, conv.stderr
    names = [e["event"] for e in real.events("p")]
    assert names == ["session_start", "user_prompt_submit", "pre_tool_use", "post_tool_use", "stop"], names


def test_stopping_every_worker_leaves_nothing(real) -> None:
    for name in list(real.shims):
        if real.shims[name].exists():
            assert real.shim(name, "stop").returncode == 0
        assert leftovers(real, name) == []
    assert [p.name for p in real.workers.iterdir() if p.is_file()] == []  # no meta, events file or lock
    assert list((real.workers / "bin").iterdir()) == []
    assert real.tmux("list-sessions").returncode != 0  # the last session closed: no server left
