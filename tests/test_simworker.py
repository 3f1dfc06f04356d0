"""Tests of csd-simworker: the simulated worker runs as a real program in real tmux panes, running a real logging hook."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from csd.sim.agents import TASK_NOTIFICATION_NOTE
from csd.sim.directives import parse_directives
from csd.sim.files import record_trust, workspace_trusted
from csd.sim.hooks import HOOK_EVENTS
from csd.sim.keys import Key, KeyParser
from csd.sim.options import SIM_CLAUDE_VERSION, SimUsageError, parse_args
from csd.sim.runtime import Runtime
from csd.sim.screen import model_display_name
from csd.transcript import encode_cwd as encode_project_dir

SIM_SCRIPT = Path(sys.executable).with_name("csd-simworker")
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

# The logging hook: appends {tag, ts, env, cwd, tail, input} as one line with one O_APPEND write. `tail` is the
# transcript's last line at the moment the hook ran, to check that lines are on disk before their hook fires.
HOOK_SOURCE = """\
import json, os, sys, time
payload = json.loads(sys.stdin.read())
tail = None
try:
    with open(payload["transcript_path"], encoding="utf-8") as f:
        tail = json.loads(f.read().splitlines()[-1])
except (OSError, IndexError, ValueError):
    pass
env = {k: os.environ.get(k) for k in
       ("CLAUDE_PROJECT_DIR", "CLAUDE_CODE_SESSION_ID", "CLAUDE_PID", "CLAUDECODE", "CLAUDE_PLUGIN_ROOT")}
rec = {"tag": sys.argv[1], "ts": time.time(), "env": env, "cwd": os.getcwd(), "tail": tail, "input": payload}
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (json.dumps(rec) + "\\n").encode())
"""


T = TypeVar("T")

# The events csd's own plugin registers; the newer ones (SubagentStart, PostToolBatch, PostCompact) fire only
# when a hook asks for them, so a test opts in with settings(events=HOOK_EVENTS).
CSD_EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification", "Stop",
              "SubagentStop", "PreCompact", "SessionEnd")


def wait_until(what: str | Callable[[], str], check: Callable[[], T | None], timeout: float = 10.0,
               every: Callable[[], None] | None = None) -> T:
    """Poll check() until it returns something truthy; `every` runs between polls (e.g. to re-press a key)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        if every is not None:
            every()
        time.sleep(0.02)


class SimHarness:
    """A private tmux server plus a HOME, a project dir and a hook log for simulated workers."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.proj = tmp / "my.proj dir"
        self.log = tmp / "hooks.jsonl"
        self.sock = tmp / "tmux.sock"
        self.home.mkdir()
        self.proj.mkdir()
        self.proj = self.proj.resolve()
        self.tmpdir = tmp / "cctmp"  # CLAUDE_CODE_TMPDIR: agents' output files
        self.hook_script = tmp / "loghook.py"
        self.hook_script.write_text(HOOK_SOURCE)
        conf = tmp / "tmux.conf"
        # Dead panes stay, so a test can read the exit status of the simulated worker.
        conf.write_text("set -g remain-on-exit on\n")
        self.conf = conf

    def hook_command(self, tag: str) -> str:
        return f"{sys.executable} -I -S {self.hook_script} {tag} {self.log}"

    def settings(self, tag: str = "settings", events: tuple[str, ...] = CSD_EVENTS, **extra: Any) -> str:
        hooks = {event: [{"matcher": "*", "hooks": [{"type": "command", "command": self.hook_command(tag)}]}]
                 for event in events}
        return json.dumps({"skipDangerousModePermissionPrompt": True, "hooks": hooks, **extra})

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", str(self.sock), "-f", str(self.conf), *args],
                              capture_output=True, text=True, check=check, timeout=10)

    def start(self, *args: str, name: str = "w", env: dict[str, str] | None = None,
              settings: bool = True, skip_permissions: bool = True, events: tuple[str, ...] = CSD_EVENTS) -> None:
        # Fast by default: no start-up delay and no model time (tests of the real timings set them back).
        full_env = {"HOME": str(self.home), "IS_SANDBOX": "1", "TERM": "xterm-256color",
                    "CSD_SIM_NOT_READY_SECONDS": "0", "CSD_SIM_STARTUP_DELAY": "0", "CSD_SIM_TURN_SECONDS": "0",
                    "CLAUDE_CODE_TMPDIR": str(self.tmpdir), **(env or {})}
        argv = [str(SIM_SCRIPT)]
        if settings:
            argv += ["--settings", self.settings(events=events)]
        if skip_permissions:
            argv += ["--dangerously-skip-permissions"]
        argv += ["--disallowed-tools", "AskUserQuestion", *args]
        self.tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "50", "-c", str(self.proj), "--",
                  "env", *(f"{k}={v}" for k, v in full_env.items()), *argv)

    def paste(self, text: str, name: str = "w") -> None:
        self.tmux("send-keys", "-t", f"={name}:", "-l", f"\x1b[200~{text}\x1b[201~")

    def keys(self, *keys: str, name: str = "w") -> None:
        self.tmux("send-keys", "-t", f"={name}:", *keys)

    def submit(self, text: str, name: str = "w") -> dict[str, Any]:
        """Paste, press Enter, and return the UserPromptSubmit payload it produced."""
        before = len(self.events("UserPromptSubmit"))
        self.paste(text, name)
        self.keys("Enter", name=name)
        return self.wait_event("UserPromptSubmit", before + 1)

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        # a hook may be writing its line right now: a read can see part of it, so only whole lines count
        lines = text.split("\n")[:-1]
        return [json.loads(line) for line in lines if line.strip()]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r["input"] for r in self.records() if name is None or r["input"]["hook_event_name"] == name]

    def names(self) -> list[str]:
        return [e["hook_event_name"] for e in self.events()]

    def wait_event(self, name: str, count: int = 1, timeout: float = 10.0) -> dict[str, Any]:
        def enough() -> list[dict[str, Any]] | None:
            found = self.events(name)
            return found if len(found) >= count else None

        return wait_until(lambda: f"{count} x {name}; hook log has {self.names()}", enough, timeout)[count - 1]

    def pane(self, name: str = "w") -> dict[str, str]:
        out = self.tmux("list-panes", "-a", "-F",
                        "#{session_name}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{pane_pid}").stdout
        for line in out.splitlines():
            session, dead, status, sig, pid = line.split("\t")
            if session == name:
                return {"dead": dead, "status": status, "signal": sig, "pid": pid}
        raise AssertionError(f"no pane for session {name}")

    def wait_dead(self, name: str = "w", timeout: float = 10.0, every: Callable[[], None] | None = None) -> dict[str, str]:
        def dead_with_status() -> dict[str, str] | None:
            pane = self.pane(name)
            if pane["dead"] != "1":
                return None
            if not (pane["status"] or pane["signal"]):
                # tmux 3.3a leaves an exited pane process a zombie until its server gets another SIGCHLD
                # (FACTS gotcha 6): a run-shell child provides one, and the status appears.
                self.tmux("run-shell", "true")
                return None
            return pane

        return wait_until(f"pane {name} to die", dead_with_status, timeout, every)

    def screen(self, name: str = "w") -> str:
        return self.tmux("capture-pane", "-p", "-t", f"={name}:").stdout

    def wait_screen(self, text: str, name: str = "w", every: Callable[[], None] | None = None) -> str:
        def shown() -> str | None:
            screen = self.screen(name)
            return screen if text in screen else None

        return wait_until(f"{text!r} on the screen", shown, every=every)

    def input_line(self, name: str = "w") -> str:
        """The text of the input box's first row (the `❯` row between the two rules)."""
        rows = self.screen(name).splitlines()
        rules = [i for i, r in enumerate(rows) if r.startswith("──")]
        return rows[rules[-2] + 1] if len(rules) >= 2 else ""

    def transcript(self, session_id: str) -> list[dict[str, Any]]:
        path = self.home / ".claude" / "projects" / encode_project_dir(str(self.proj)) / f"{session_id}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def close(self) -> None:
        try:
            subprocess.run(["tmux", "-S", str(self.sock), "kill-server"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        try:
            self.sock.unlink()
        except OSError:
            pass


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimHarness]:
    harness = SimHarness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def started(sim: SimHarness, *args: str, **kwargs: Any) -> dict[str, Any]:
    sim.start(*args, **kwargs)
    return sim.wait_event("SessionStart")


# ---------------------------------------------------------------------------------------------- pure parts


def test_encode_project_dir_follows_claude_code() -> None:
    """Every char outside [a-zA-Z0-9] becomes one dash per UTF-16 unit; long results get a hash suffix."""
    assert encode_project_dir("/tmp/ccx/my.proj_dir with space") == "-tmp-ccx-my-proj-dir-with-space"
    assert encode_project_dir("/tmp/é😀") == "-tmp----"
    long = "/" + "a" * 250
    enc = encode_project_dir(long)
    assert enc.startswith("-" + "a" * 199 + "-")
    assert len(enc) > 201 and enc[201:].isalnum() and enc[201:] == enc[201:].lower()


def test_the_command_line_is_read_permissively_like_claudes() -> None:
    """Known options act (``--name value`` or ``--name=value``); unknown ones take the words up to the next option;
    a boolean flag takes none, so the word after it is the prompt; ``--`` ends the options."""
    opts = parse_args(["--disallowed-tools", "A", "B", "--settings", "s1", "--settings={}", "--model=m",
                       "--dangerously-skip-permissions", "hello", "--plugin-dir", "p", "-c", "ignored"])
    assert (opts.settings, opts.model, opts.plugin_dirs, opts.prompt) == (["s1", "{}"], "m", ["p"], "hello")
    assert opts.skip_permissions and opts.continue_last and not opts.print_mode
    assert parse_args(["--", "-v"]).prompt == "-v" and not parse_args(["--", "-v"]).show_version
    assert parse_args(["-r", "abc"]).resume == "abc" and parse_args(["--resume=abc"]).resume == "abc"
    for bad, message in ((["--resume"], "session picker"), (["--resume", "-c"], "session picker"),
                         (["--model"], "option '--model' needs a value"), (["--session-id", "--x"], "needs a value")):
        with pytest.raises(SimUsageError, match=message):
            parse_args(bad)


def test_the_sims_tasks_belong_to_one_group_whose_failure_is_seen() -> None:
    """No task of the simulator is fire-and-forget: one that fails fails the task group (the program then exits
    70 with its traceback), and cancel_all() leaves nothing running when the program ends."""
    async def fail() -> None:
        raise RuntimeError("a bug in the simulator")

    async def scenario(failing: bool) -> list[bool]:
        runtime = Runtime()
        async with asyncio.TaskGroup() as group:
            runtime.attach(group)
            sleepers = [runtime.spawn(asyncio.sleep(3600)) for _ in range(3)]
            if failing:
                runtime.spawn(fail())
                await asyncio.sleep(3600)  # cancelled by the failure
            runtime.cancel_all()
        return [t.cancelled() for t in sleepers]

    assert asyncio.run(scenario(False)) == [True, True, True]
    with pytest.raises(ExceptionGroup) as caught:
        asyncio.run(scenario(True))
    assert [str(e) for e in caught.value.exceptions] == ["a bug in the simulator"]


def test_directives_are_found_in_order_and_rest_of_line_ones_swallow_the_line() -> None:
    found = parse_directives("x TOOL:Bash:echo CRASH\nSLEEP:1.5 CHANGE HANG BG:2\nREPLY: hi there")
    assert [(d.kind, d.name, d.arg, d.seconds) for d in found] == [
        ("tool", "Bash", "echo CRASH", 0.0), ("sleep", "", "", 1.5), ("hang", "", "", 0.0),
        ("bg", "", "", 2.0), ("reply", "", "hi there", 0.0)]
    assert parse_directives("plain hello") == []


def test_key_parser_keeps_a_paste_split_across_reads_whole() -> None:
    p = KeyParser()
    keys = p.feed("ab\x1b[200~line1\rline2\x1b[20") + p.feed("1~\r\x1b[B\x7f\x15")
    assert keys == [Key("text", "ab"), Key("paste", "line1\nline2"), Key("enter"), Key("down"),
                    Key("backspace"), Key("ctrl_u")]
    assert p.feed("\x1b") == [] and p.pending_escape
    assert p.flush_escape() == [Key("esc")]


def test_version_and_help_from_both_entry_points() -> None:
    for argv in ([str(SIM_SCRIPT)], [sys.executable, "-m", "csd.sim"]):
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0 and out.stdout == f"{SIM_CLAUDE_VERSION} (Claude Code simulated)\n"
    out = subprocess.run([str(SIM_SCRIPT), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "TOOL:Bash:<cmd>" in out.stdout and "CSD_SIM_IDLE_SECONDS" in out.stdout
    for new in ("TOOL:Agent:<json>", "BG:0", "CSD_SIM_TRUST_DIALOG=auto", "CSD_SIM_TURN_SECONDS",
                "CSD_SIM_AGENT_SECONDS", "CSD_SIM_TRANSCRIPT_LAG_SECONDS", "CLAUDE_CODE_TMPDIR"):
        assert new in out.stdout


def test_workspace_trust_is_read_like_claude_code_and_recorded_atomically_by_merging(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    config = tmp_path / ".claude.json"
    assert not workspace_trusted(env, "/srv/proj/sub")  # no file
    config.write_text(json.dumps({"hasCompletedOnboarding": True, "userID": "u1",
                                  "projects": {"/srv": {"hasTrustDialogAccepted": True},
                                               "/other": {"hasTrustDialogAccepted": False}}}))
    assert workspace_trusted(env, "/srv/proj/sub") and workspace_trusted(env, "/srv")  # a parent covers it
    assert not workspace_trusted(env, "/other/x") and not workspace_trusted(env, "/srvx")
    os.chmod(config, 0o640)
    assert record_trust(env, "/other/x")
    data = json.loads(config.read_text())
    assert (data["hasCompletedOnboarding"], data["userID"]) == (True, "u1")  # merged, not clobbered
    assert data["projects"]["/srv"] == {"hasTrustDialogAccepted": True}
    assert data["projects"]["/other/x"]["hasTrustDialogAccepted"] is True
    assert data["projects"]["/other/x"]["allowedTools"] == []
    assert workspace_trusted(env, "/other/x")
    assert (config.stat().st_mode & 0o777) == 0o640 and sorted(p.name for p in tmp_path.iterdir()) == [".claude.json"]
    # A missing file is created; an unreadable one is left alone.
    fresh = tmp_path / "fresh"
    assert record_trust({"HOME": str(fresh)}, "/p") and workspace_trusted({"HOME": str(fresh)}, "/p")
    config.write_text("{not json")
    assert not record_trust(env, "/p") and config.read_text() == "{not json"
    # CLAUDE_CONFIG_DIR moves the file, as in Claude Code.
    moved = {"HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path / "cfg")}
    assert record_trust(moved, "/q") and (tmp_path / "cfg" / ".claude.json").exists()


def test_model_display_name_like_the_header() -> None:
    assert model_display_name("claude-opus-5-5") == "Opus 5.5"
    assert model_display_name("claude-sonnet-4-5-20250929") == "Sonnet 4.5"
    assert model_display_name("my-model") == "my-model"


def test_session_id_in_use_is_refused(tmp_path: Path) -> None:
    sid = str(uuid.uuid4())
    proj = tmp_path / "proj"
    proj.mkdir()
    path = tmp_path / ".claude" / "projects" / encode_project_dir(str(proj.resolve())) / f"{sid}.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    out = subprocess.run([str(SIM_SCRIPT), "--session-id", sid], cwd=proj, capture_output=True, text=True,
                         env={**os.environ, "HOME": str(tmp_path)}, timeout=10)
    assert (out.returncode, out.stderr) == (1, f"Error: Session ID {sid} is already in use.\n")


def test_exit_at_start_exits_with_the_code_before_anything(tmp_path: Path) -> None:
    out = subprocess.run([str(SIM_SCRIPT)], capture_output=True, text=True, timeout=10,
                         env={**os.environ, "HOME": str(tmp_path), "CSD_SIM_EXIT_AT_START": "3"})
    assert out.returncode == 3 and "CSD_SIM_EXIT_AT_START" in out.stderr
    assert not (tmp_path / ".claude").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the refusal only happens as root")
def test_root_without_is_sandbox_refuses_to_skip_permissions(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "IS_SANDBOX"}
    out = subprocess.run([str(SIM_SCRIPT), "--dangerously-skip-permissions"], capture_output=True, text=True,
                         env={**env, "HOME": str(tmp_path)}, timeout=10)
    assert out.returncode == 1
    assert out.stderr == "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n"


# ---------------------------------------------------------------------------------------------- in tmux


@needs_tmux
def test_start_fires_session_start_with_claude_payload_and_env(sim: SimHarness) -> None:
    sid = str(uuid.uuid4())
    ev = started(sim, "--session-id", sid)
    expected_path = sim.home / ".claude" / "projects" / encode_project_dir(str(sim.proj)) / f"{sid}.jsonl"
    assert ev == {"session_id": sid, "transcript_path": str(expected_path), "cwd": str(sim.proj),
                  "hook_event_name": "SessionStart", "source": "startup", "model": "claude-opus-5-5"}
    rec = sim.records()[0]
    assert rec["cwd"] == str(sim.proj)
    assert rec["env"] == {"CLAUDE_PROJECT_DIR": str(sim.proj), "CLAUDE_CODE_SESSION_ID": sid,
                          "CLAUDE_PID": sim.pane()["pid"], "CLAUDECODE": "1", "CLAUDE_PLUGIN_ROOT": None}
    assert "❯" in sim.screen()


@needs_tmux
def test_pasted_prompt_gets_echo_reply_transcript_and_idle_notification(sim: SimHarness) -> None:
    sid = str(uuid.uuid4())
    started(sim, "--session-id", sid, env={"CSD_SIM_IDLE_SECONDS": "0.3"})
    ups = sim.submit("hello from paste\nsecond line")
    assert ups["prompt"] == "hello from paste\nsecond line"
    assert ups["permission_mode"] == "bypassPermissions"
    stop = sim.wait_event("Stop")
    assert stop["prompt_id"] == ups["prompt_id"]
    assert stop["last_assistant_message"] == "ECHO: hello from paste\nsecond line"
    assert (stop["stop_hook_active"], stop["background_tasks"], stop["session_crons"]) == (False, [], [])
    assert stop["effort"] == {"level": "medium"}
    note = sim.wait_event("Notification")
    assert (note["notification_type"], note["message"]) == ("idle_prompt", "Claude is waiting for your input")
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "Stop", "Notification"]

    # Like the real CLI, the Stop hook runs before the final assistant line reaches the transcript: the
    # request's api-request line (after the user line) was on disk when the hooks ran, the answer and
    # stop_hook_summary land ~50 ms later.
    recs = {r["input"]["hook_event_name"]: r for r in sim.records()}
    assert recs["UserPromptSubmit"]["tail"]["promptId"] == ups["prompt_id"]
    assert recs["Stop"]["tail"]["type"] == "api-request"
    tail_kinds = [(x["type"], x.get("subtype")) for x in sim.transcript(sid)][-3:]
    assert tail_kinds == [("assistant", None), ("system", "stop_hook_summary"), ("system", "turn_duration")]

    kinds = [x["type"] for x in sim.transcript(sid)]
    assert kinds.index("user") < kinds.index("api-request") < kinds.index("assistant")
    lines = [x for x in sim.transcript(sid) if "uuid" in x]
    user, assistant = lines[0], lines[1]
    assert user["type"] == "user" and user["message"] == {"role": "user", "content": ups["prompt"]}
    assert (user["promptId"], user["origin"], user["promptSource"]) == (ups["prompt_id"], {"kind": "human"}, "typed")
    assert (user["sessionId"], user["cwd"], user["isSidechain"], user["parentUuid"]) == (sid, str(sim.proj), False, None)
    assert assistant["parentUuid"] == user["uuid"] and assistant["message"]["stop_reason"] == "end_turn"
    assert any(x.get("subtype") == "turn_duration" for x in lines)
    assert all(b["parentUuid"] == a["uuid"] for a, b in zip(lines, lines[1:]))


@needs_tmux
def test_tool_bash_runs_the_command_between_pre_and_post_tool_use(sim: SimHarness) -> None:
    sid = str(uuid.uuid4())
    started(sim, "--session-id", sid)
    ups = sim.submit("please run TOOL:Bash:echo tool-ok; pwd")
    stop = sim.wait_event("Stop")
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop"]
    pre, post = sim.events("PreToolUse")[0], sim.events("PostToolUse")[0]
    assert (pre["tool_name"], pre["tool_input"]["command"], pre["prompt_id"]) == ("Bash", "echo tool-ok; pwd", ups["prompt_id"])
    assert post["tool_use_id"] == pre["tool_use_id"] and isinstance(post["duration_ms"], int)
    assert post["tool_response"] == {"stdout": f"tool-ok\n{sim.proj}", "stderr": "", "interrupted": False,
                                     "isImage": False, "noOutputExpected": False}
    assert stop["last_assistant_message"] == f"DONE: tool-ok\n{sim.proj}"
    # The tool_use line is on disk before PreToolUse; the tool result and the final text land after the Stop
    # hooks ran, as with the real CLI.
    recs = {r["input"]["hook_event_name"]: r for r in sim.records()}
    for event in ("PreToolUse", "PostToolUse", "Stop"):
        tail = recs[event]["tail"]
        assert tail["type"] == "assistant" and tail["message"]["content"][0]["id"] == pre["tool_use_id"], event
    lines = wait_until("the turn's last lines in the transcript",
                       lambda: [x for x in sim.transcript(sid) if x.get("subtype") == "turn_duration"] and sim.transcript(sid))
    tool_use = [x for x in lines if x.get("type") == "assistant" and x["message"]["content"][0]["type"] == "tool_use"]
    assert tool_use[0]["message"]["content"][0]["id"] == pre["tool_use_id"]
    result = [x for x in lines if x.get("toolUseResult")]
    assert result[0]["message"]["content"][0]["tool_use_id"] == pre["tool_use_id"]
    assert result[0]["message"]["content"][0]["content"] == f"tool-ok\n{sim.proj}"


@needs_tmux
def test_background_agent_brings_a_task_notification_turn_and_a_second_stop(sim: SimHarness) -> None:
    sid = str(uuid.uuid4())
    started(sim, "--session-id", sid)
    ups = sim.submit("BG:0.5 start background work")
    sim.wait_event("Stop", 2)
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop",
                           "SubagentStop", "UserPromptSubmit", "Stop"]
    post = sim.events("PostToolUse")[0]
    assert post["tool_name"] == "Agent"
    assert (post["tool_response"]["isAsync"], post["tool_response"]["status"]) == (True, "async_launched")
    first, second = sim.events("Stop")
    running = first["background_tasks"]
    assert [(t["type"], t["status"], t["agent_type"]) for t in running] == [("subagent", "running", "general-purpose")]
    assert first["prompt_id"] == ups["prompt_id"]
    sub = sim.events("SubagentStop")[0]
    assert (sub["agent_type"], sub["agent_id"]) == ("general-purpose", running[0]["id"])
    assert sub["background_tasks"] == running  # still "running" in its own SubagentStop, as observed
    synthetic = sim.events("UserPromptSubmit")[1]
    assert synthetic["prompt"].startswith("<task-notification>")
    assert f"<task-id>{sub['agent_id']}</task-id>" in synthetic["prompt"]
    assert second["background_tasks"] == [] and second["prompt_id"] == synthetic["prompt_id"]
    line = next(x for x in sim.transcript(sid) if x.get("promptId") == synthetic["prompt_id"] and x.get("origin"))
    assert (line["origin"]["kind"], line["promptSource"]) == ("task-notification", "system")


@needs_tmux
def test_crash_kills_the_worker_without_stop_or_session_end(sim: SimHarness) -> None:
    started(sim)
    sim.submit("CRASH now")
    pane = sim.wait_dead()
    assert pane["signal"] == "9"
    assert sim.names() == ["SessionStart", "UserPromptSubmit"]


@needs_tmux
def test_esc_interrupts_the_turn_without_stop_and_restores_the_prompt(sim: SimHarness) -> None:
    sid = str(uuid.uuid4())
    started(sim, "--session-id", sid)
    interrupted = sim.submit("SLEEP:30 interrupt me")
    sim.keys("Escape")
    wait_until("the prompt back in the input box", lambda: "SLEEP:30 interrupt me" in sim.input_line())
    sim.keys("Escape", "Escape")  # a double Esc clears the box, as in the real TUI
    wait_until("an empty input box", lambda: sim.input_line().strip() == "❯")
    after = sim.submit("after the interrupt")
    stop = sim.wait_event("Stop")
    assert stop["prompt_id"] == after["prompt_id"]
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "UserPromptSubmit", "Stop"]
    lines = [x for x in sim.transcript(sid) if "uuid" in x]
    i = next(n for n, x in enumerate(lines) if x.get("promptId") == interrupted["prompt_id"])
    assert lines[i]["type"] == "user" and lines[i + 1]["promptId"] == after["prompt_id"]


@needs_tmux
def test_prompt_sent_while_busy_fires_user_prompt_submit_at_once_and_runs_after(sim: SimHarness) -> None:
    started(sim)
    first = sim.submit("SLEEP:2 first")
    second = sim.submit("second REPLY: a custom answer")
    assert "Stop" not in sim.names()
    sim.wait_event("Stop", 2)
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "UserPromptSubmit", "Stop", "Stop"]
    stops = sim.events("Stop")
    assert [s["prompt_id"] for s in stops] == [first["prompt_id"], second["prompt_id"]]
    assert [s["last_assistant_message"] for s in stops] == ["ECHO: SLEEP:2 first", "a custom answer"]


@needs_tmux
def test_slash_exit_ends_the_session_and_the_process(sim: SimHarness) -> None:
    started(sim)
    sim.paste("/exit")
    sim.keys("Enter")
    end = sim.wait_event("SessionEnd")
    assert end["reason"] == "prompt_input_exit" and "prompt_id" in end
    assert sim.wait_dead()["status"] == "0"
    assert sim.names() == ["SessionStart", "SessionEnd"]


@needs_tmux
def test_compact_fires_pre_compact_subagent_stop_and_session_start_but_no_stop(sim: SimHarness) -> None:
    started(sim)
    sim.paste("/compact")
    sim.keys("Enter")
    start = sim.wait_event("SessionStart", 2)
    assert start["source"] == "compact"
    assert sim.names() == ["SessionStart", "PreCompact", "SubagentStop", "SessionStart"]
    assert sim.events("PreCompact")[0]["trigger"] == "manual"
    assert sim.events("SubagentStop")[0]["agent_type"] == ""


@needs_tmux
def test_other_tools_get_their_json_input_and_an_ok_result(sim: SimHarness) -> None:
    started(sim)
    sim.submit('TOOL:Read:{"file_path": "/etc/hostname"}')
    stop = sim.wait_event("Stop")
    pre, post = sim.events("PreToolUse")[0], sim.events("PostToolUse")[0]
    assert (pre["tool_name"], pre["tool_input"]) == ("Read", {"file_path": "/etc/hostname"})
    assert (post["tool_input"], post["tool_response"]) == (pre["tool_input"], "ok")
    assert stop["last_assistant_message"] == "DONE: ok"


@needs_tmux
def test_sigterm_during_a_hanging_turn_fires_session_end_other_and_exits_143(sim: SimHarness) -> None:
    started(sim)
    sim.submit("HANG forever")
    os.kill(int(sim.pane()["pid"]), 15)
    assert sim.wait_event("SessionEnd")["reason"] == "other"
    assert sim.wait_dead()["status"] == "143"
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "SessionEnd"]


@needs_tmux
def test_clear_ends_the_session_and_starts_a_new_one(sim: SimHarness) -> None:
    first = started(sim)
    sim.paste("/clear")
    sim.keys("Enter")
    start = sim.wait_event("SessionStart", 2)
    end = sim.events("SessionEnd")[0]
    assert (end["reason"], end["session_id"]) == ("clear", first["session_id"])
    assert start["source"] == "clear" and start["session_id"] != first["session_id"]
    assert "prompt_id" not in start and "model" not in start
    rec = sim.records()[-1]
    assert rec["env"]["CLAUDE_CODE_SESSION_ID"] == start["session_id"]


@needs_tmux
def test_enter_right_after_start_and_swallow_enter_keep_the_text(sim: SimHarness) -> None:
    sim.start(env={"CSD_SIM_NOT_READY_SECONDS": "1.5"})
    start = sim.wait_event("SessionStart")
    # Enter then a marker key in one stream: the marker lands after the text only if the Enter was swallowed.
    sim.paste("early prompt")
    sim.keys("Enter", "Z")
    wait_until("the early text kept in the box", lambda: "early promptZ" in sim.input_line())
    sim.keys("BSpace")
    ups = wait_until("a later Enter to submit", lambda: sim.events("UserPromptSubmit"), every=lambda: sim.keys("Enter"))
    assert ups[0]["prompt"] == "early prompt" and start["source"] == "startup"

    sim.wait_event("Stop")
    sim.paste("SWALLOW-ENTER please")
    sim.keys("Enter", "Z")
    wait_until("the text kept after the first Enter", lambda: "SWALLOW-ENTER pleaseZ" in sim.input_line())
    sim.keys("BSpace", "Enter")
    assert sim.wait_event("UserPromptSubmit", 2)["prompt"] == "SWALLOW-ENTER please"


@needs_tmux
def test_trust_dialog_default_choice_exits_without_session_start(sim: SimHarness) -> None:
    sim.start(env={"CSD_SIM_TRUST_DIALOG": "1"})
    screen = sim.wait_screen("Yes, I trust this folder")
    assert " ❯ No, exit" in screen and "Accessing workspace:" in screen and str(sim.proj) in screen
    # The dialog ignores keys for its first 0.3 s: press Enter until it takes one.
    pane = sim.wait_dead(every=lambda: sim.keys("Enter"))
    assert pane["status"] == "1"
    assert sim.records() == []


@needs_tmux
def test_trust_dialog_down_enter_proceeds(sim: SimHarness) -> None:
    sim.start(env={"CSD_SIM_TRUST_DIALOG": "1"})
    sim.wait_screen(" ❯ Yes, I trust this folder", every=lambda: sim.keys("Down"))
    sim.keys("Enter")
    assert sim.wait_event("SessionStart")["source"] == "startup"
    # Like the real CLI, "Yes" is remembered for the cwd in ~/.claude.json (created here).
    config = json.loads((sim.home / ".claude.json").read_text())
    assert config["projects"][str(sim.proj)]["hasTrustDialogAccepted"] is True


@needs_tmux
def test_bypass_permissions_dialog_without_the_setting(sim: SimHarness) -> None:
    sim.start(settings=False)
    screen = sim.wait_screen("  ❯ Yes, I accept", every=lambda: sim.keys("Down"))
    assert "WARNING: Claude Code running in Bypass Permissions mode" in screen
    sim.keys("Enter")
    # No hooks are configured in this run: seeing the main input box means the dialog was accepted.
    sim.wait_screen("bypass permissions on")
    assert sim.pane()["dead"] == "0"


@needs_tmux
def test_resume_continues_the_transcript_with_a_resume_session_start(sim: SimHarness) -> None:
    sid = str(uuid.uuid4())
    started(sim, "--session-id", sid, name="first")
    sim.submit("first prompt", name="first")
    sim.wait_event("Stop")
    sim.paste("/exit", name="first")
    sim.keys("Enter", name="first")
    sim.wait_dead("first")
    last_uuid = [x for x in sim.transcript(sid) if "uuid" in x][-1]["uuid"]

    sim.start("--resume", sid, name="second")
    start = sim.wait_event("SessionStart", 2)
    assert (start["source"], start["session_id"]) == ("resume", sid) and "prompt_id" not in start
    # Observed with 2.1.330: no model, but the resumed context's size and cache state.
    assert "model" not in start
    assert list(start)[-5:] == ["source", "seconds_since_last_response", "context_tokens",
                                "prompt_cache_likely_expired", "estimated_cache_write_usd"]
    assert isinstance(start["seconds_since_last_response"], int) and 0 <= start["seconds_since_last_response"] < 60
    assert isinstance(start["context_tokens"], int) and start["context_tokens"] > 1000
    assert start["prompt_cache_likely_expired"] is False
    assert start["estimated_cache_write_usd"] == round(start["context_tokens"] * 5e-6, 4)
    ups = sim.submit("second prompt", name="second")
    sim.wait_event("Stop", 2)
    line = next(x for x in sim.transcript(sid) if x.get("promptId") == ups["prompt_id"] and x["type"] == "user")
    assert line["parentUuid"] == last_uuid


@needs_tmux
def test_settings_file_and_plugin_dir_hooks_both_fire(sim: SimHarness) -> None:
    plugin = sim.tmp / "plugin"
    (plugin / "hooks").mkdir(parents=True)
    (plugin / ".claude-plugin").mkdir()
    (plugin / ".claude-plugin" / "plugin.json").write_text('{"name": "probe", "version": "0.0.1"}')
    shutil.copy(sim.hook_script, plugin / "hooks" / "log.py")
    command = f"{sys.executable} -I -S ${{CLAUDE_PLUGIN_ROOT}}/hooks/log.py plugin {sim.log}"
    (plugin / "hooks" / "hooks.json").write_text(json.dumps(
        {"hooks": {"SessionStart": [{"matcher": "*", "hooks": [{"type": "command", "command": command}]}]}}))
    settings_file = sim.tmp / "settings.json"
    settings_file.write_text(sim.settings())
    sim.start("--settings", str(settings_file), "--plugin-dir", str(plugin), settings=False)
    sim.wait_event("SessionStart", 2)
    by_tag = {r["tag"]: r for r in sim.records()}
    assert set(by_tag) == {"settings", "plugin"}
    assert by_tag["plugin"]["env"]["CLAUDE_PLUGIN_ROOT"] == str(plugin)
    assert by_tag["settings"]["env"]["CLAUDE_PLUGIN_ROOT"] is None
    assert by_tag["plugin"]["input"] == by_tag["settings"]["input"]


def agent_prompt(**fields: Any) -> str:
    return "TOOL:Agent:" + json.dumps({"description": "probe", "prompt": "sub task hello",
                                       "subagent_type": "general-purpose", **fields})


@needs_tmux
def test_tool_agent_runs_in_the_background_with_the_real_payloads(sim: SimHarness) -> None:
    """TOOL:Agent like 2.1.330: background even with run_in_background false; SubagentStart/PostToolBatch fire."""
    sid = str(uuid.uuid4())
    started(sim, "--session-id", sid, events=HOOK_EVENTS)
    ups = sim.submit(agent_prompt(prompt="SLEEP:0.5 sub task hello", run_in_background=False))
    sim.wait_event("Stop", 2)
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "PreToolUse", "SubagentStart", "PostToolUse",
                           "PostToolBatch", "Stop", "SubagentStop", "UserPromptSubmit", "Stop"]
    pre, post, batch = sim.events("PreToolUse")[0], sim.events("PostToolUse")[0], sim.events("PostToolBatch")[0]
    # The hooks see the input without run_in_background; PostToolBatch keeps the model's input.
    assert pre["tool_input"] == {"description": "probe", "prompt": "SLEEP:0.5 sub task hello",
                                 "subagent_type": "general-purpose"}
    assert post["tool_input"] == pre["tool_input"]
    resp = post["tool_response"]
    agent_id = resp["agentId"]
    output_file = sim.tmpdir / f"claude-{os.getuid()}" / encode_project_dir(str(sim.proj)) / sid / "tasks" / f"{agent_id}.output"
    assert resp == {"isAsync": True, "status": "async_launched", "agentId": agent_id, "description": "probe",
                    "resolvedModel": "claude-opus-5-5", "prompt": "SLEEP:0.5 sub task hello",
                    "outputFile": str(output_file), "canReadOutputFile": True, "canContinueAgent": True}
    assert agent_id.startswith("a") and len(agent_id) == 17
    start = sim.events("SubagentStart")[0]
    assert start == {"session_id": sid, "transcript_path": pre["transcript_path"], "cwd": str(sim.proj),
                     "prompt_id": ups["prompt_id"], "agent_id": agent_id, "agent_type": "general-purpose",
                     "hook_event_name": "SubagentStart"}
    [call] = batch["tool_calls"]
    assert (call["tool_name"], call["tool_use_id"], call["tool_input"]["run_in_background"]) == ("Agent", pre["tool_use_id"], False)
    assert call["tool_response"][0]["type"] == "text" and f"agentId: {agent_id}" in call["tool_response"][0]["text"]

    first, second = sim.events("Stop")
    assert first["last_assistant_message"].startswith("DONE: Async agent launched successfully.")
    assert [t["id"] for t in first["background_tasks"]] == [agent_id]
    sub = sim.events("SubagentStop")[0]
    subagent_path = Path(pre["transcript_path"]).parent / sid / "subagents" / f"agent-{agent_id}.jsonl"
    assert (sub["agent_id"], sub["agent_transcript_path"]) == (agent_id, str(subagent_path))
    assert sub["prompt_id"] == ups["prompt_id"] and sub["last_assistant_message"] == "ECHO: SLEEP:0.5 sub task hello"
    assert sub["background_tasks"] == [{"id": agent_id, "type": "subagent", "status": "running",
                                        "description": "probe", "agent_type": "general-purpose"}]
    note = sim.events("UserPromptSubmit")[1]["prompt"]
    assert note.startswith("<task-notification>\n") and note.endswith("\n</task-notification>")
    for part in (f"<task-id>{agent_id}</task-id>", f"<tool-use-id>{pre['tool_use_id']}</tool-use-id>",
                 f"<output-file>{output_file}</output-file>", "<status>completed</status>",
                 '<summary>Agent "probe" finished</summary>', f"<note>{TASK_NOTIFICATION_NOTE}</note>",
                 "<result>ECHO: SLEEP:0.5 sub task hello</result>", "<usage><subagent_tokens>"):
        assert part in note
    assert second["background_tasks"] == []
    # The output file links to the sub-agent's transcript, which holds its prompt and answer.
    assert output_file.is_symlink() and output_file.resolve() == subagent_path.resolve()
    sub_lines = [json.loads(x) for x in output_file.read_text().splitlines()]
    assert [x["type"] for x in sub_lines] == ["user", "assistant"] and all(x["isSidechain"] for x in sub_lines)
    assert subagent_path.with_name(f"agent-{agent_id}.meta.json").exists()


@needs_tmux
def test_bg_zero_finishes_before_the_turns_stop(sim: SimHarness) -> None:
    """The quick order: SubagentStop, then a Stop with no background task, then the notification's turn."""
    started(sim)
    ups = sim.submit("BG:0 quick agent")
    sim.wait_event("Stop", 2)
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "SubagentStop",
                           "Stop", "UserPromptSubmit", "Stop"]
    sub = sim.events("SubagentStop")[0]
    assert [t["status"] for t in sub["background_tasks"]] == ["running"]
    first, second = sim.events("Stop")
    assert first["prompt_id"] == ups["prompt_id"] and first["background_tasks"] == []
    note = sim.events("UserPromptSubmit")[1]
    assert f"<task-id>{sub['agent_id']}</task-id>" in note["prompt"] and second["prompt_id"] == note["prompt_id"]


@needs_tmux
def test_post_tool_batch_and_post_compact_fire_when_configured(sim: SimHarness) -> None:
    started(sim, events=HOOK_EVENTS)
    sim.submit("TOOL:Bash:echo batch-ok")
    sim.wait_event("Stop")
    assert sim.names() == ["SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolBatch", "Stop"]
    pre, batch = sim.events("PreToolUse")[0], sim.events("PostToolBatch")[0]
    assert (batch["prompt_id"], batch["permission_mode"], batch["effort"]) == (pre["prompt_id"], "bypassPermissions", {"level": "medium"})
    assert batch["tool_calls"] == [{"tool_name": "Bash", "tool_input": pre["tool_input"],
                                    "tool_use_id": pre["tool_use_id"], "tool_response": "batch-ok"}]
    sim.paste("/compact keep it short")
    sim.keys("Enter")
    post = sim.wait_event("PostCompact")
    assert sim.names()[-4:] == ["PreCompact", "SubagentStop", "SessionStart", "PostCompact"]
    assert post["trigger"] == "manual" and post["compact_summary"].startswith("<summary>")
    assert sim.events("PreCompact")[0]["custom_instructions"] == "keep it short"


@needs_tmux
def test_trust_dialog_auto_follows_claude_json_like_the_real_cli(sim: SimHarness) -> None:
    auto = {"CSD_SIM_TRUST_DIALOG": "auto"}
    config = sim.home / ".claude.json"
    config.write_text(json.dumps({"hasCompletedOnboarding": True, "projects": {"/elsewhere": {"hasTrustDialogAccepted": True}}}))
    sim.start(env=auto, name="first")
    sim.wait_screen(" ❯ Yes, I trust this folder", name="first", every=lambda: sim.keys("Down", name="first"))
    assert sim.records() == []  # no hook while the dialog is up
    sim.keys("Enter", name="first")
    sim.wait_event("SessionStart")
    data = json.loads(config.read_text())
    assert data["hasCompletedOnboarding"] is True and data["projects"]["/elsewhere"] == {"hasTrustDialogAccepted": True}
    assert data["projects"][str(sim.proj)]["hasTrustDialogAccepted"] is True
    assert not list(sim.home.glob(".claude.json.*"))  # the temp file was renamed into place

    # Trusted now: the next start goes straight to SessionStart; so does a subdirectory of a trusted dir.
    sim.start(env=auto, name="second")
    sim.wait_event("SessionStart", 2)
    assert "Accessing workspace:" not in sim.screen("second")
    sub = sim.proj / "sub"
    sub.mkdir()
    sim.tmux("new-session", "-d", "-s", "third", "-x", "160", "-y", "50", "-c", str(sub), "--", "env",
             f"HOME={sim.home}", "IS_SANDBOX=1", "CSD_SIM_STARTUP_DELAY=0", "CSD_SIM_TRUST_DIALOG=auto",
             str(SIM_SCRIPT), "--settings", sim.settings(), "--dangerously-skip-permissions")
    assert sim.wait_event("SessionStart", 3)["cwd"] == str(sub)


@needs_tmux
def test_screen_input_line_busy_footer_header_and_queue(sim: SimHarness) -> None:
    started(sim)
    screen = sim.screen()
    assert "Claude Code v2.1.330" in screen and "Opus 5.5 · API Usage Billing" in screen
    assert sim.input_line() == "❯\u00a0"  # the real input line: ❯ and a no-break space
    assert "esc to interrupt" not in screen
    sim.submit("SLEEP:30 busy")
    sim.submit("queued while busy")
    screen = sim.wait_screen("esc to interrupt")
    footer = [r for r in screen.splitlines() if "bypass permissions on" in r][0]
    assert "esc to interrupt" in footer
    assert "Queued · ctrl+x ctrl+s to send now" in screen
    assert sim.input_line() == "❯\u00a0Press up to edit queued messages"
    sim.paste("typed")
    wait_until("typed text in the box", lambda: sim.input_line() == "❯\u00a0typed")
    sim.keys("Escape")  # interrupts the turn (the queued prompt then runs)
    sim.wait_event("Stop")
    wait_until("an idle footer", lambda: "esc to interrupt" not in sim.screen())


@needs_tmux
def test_default_timings_are_close_to_the_real_ones(sim: SimHarness) -> None:
    """Without the harness' fast settings: SessionStart ~0.5 s after spawn, a plain turn takes ~0.1-0.3 s."""
    defaults = {"CSD_SIM_STARTUP_DELAY": "", "CSD_SIM_TURN_SECONDS": "", "CSD_SIM_TRUST_DIALOG": "1"}
    spawned = time.time()
    sim.start(env=defaults)
    sim.wait_screen("Yes, I trust this folder")
    shown = time.time() - spawned
    assert 0.4 <= shown < 2.0, shown  # the real dialog appears 0.45-0.9 s after spawn
    sim.wait_screen(" ❯ Yes, I trust this folder", every=lambda: sim.keys("Down"))
    sim.keys("Enter")
    sim.wait_event("SessionStart")
    ups = sim.submit("plain prompt")
    sim.wait_event("Stop")
    recs = {r["input"]["hook_event_name"]: r for r in sim.records()}
    took = recs["Stop"]["ts"] - recs["UserPromptSubmit"]["ts"]
    assert 0.1 <= took < 1.0, took  # the default model time (0.1 s) plus the hooks
    assert recs["Stop"]["input"]["prompt_id"] == ups["prompt_id"]
