"""The read side of the CLI over real workers: metas, events files and real tmux sessions on a private socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import Env
from csd import __version__
from csd.cli import main
from csd.commands.table import help_text
from csd.events import EVENT_NAMES
from csd.states import STATES

START = {"event": "session_start", "cwd": "/p", "source": "startup"}
UPS = {"event": "user_prompt_submit", "prompt": "hi", "prompt_id": "p1"}
TOOL = {"event": "pre_tool_use", "tool": "Bash", "tool_input": {"command": "pytest -q"}}
STOP = {"event": "stop", "prompt_id": "p1"}
END = {"event": "session_end", "reason": "other"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("events", "live", "state"),
    [
        ([], True, "launching"),
        ([START], True, "idle"),
        ([START, UPS, TOOL], True, "working"),
        ([START, UPS, STOP], True, "idle"),
        ([START, END], True, "terminated"),
        ([START, UPS], False, "gone"),
    ],
)
def test_status_in_every_state(env: Env, capsys: pytest.CaptureFixture[str], events: list[dict], live: bool, state: str) -> None:
    env.add_worker("api", events, live=live)
    assert run(capsys, "--worker", "api", "status") == (0, state + "\n", "")
    code, out, _ = run(capsys, "--worker", "api", "status", "--json")
    assert code == 0 and json.loads(out)["state"] == state


def test_gone_while_a_prefix_named_session_is_alive(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """tmux matches -t api by prefix; csd must not mistake api-2 for the gone worker api."""
    env.add_worker("api", [START], live=False)
    env.session("api-2")
    assert env.tmux("has-session", "-t", "api", check=False).returncode == 0  # the hazard is real
    assert run(capsys, "--worker", "api", "status")[1] == "gone\n"


def test_zombie_pane_reads_as_gone(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """A pane whose process has exited but which tmux keeps (remain-on-exit) is not alive."""
    env.add_worker("z", [START], live=False)
    env.tmux("new-session", "-d", "-s", "z", "--", "sh", "-c", "exit 0", ";", "set-option", "-p", "-t", "=z:", "remain-on-exit", "on")
    env.tmux("set-option", "-p", "-t", "=z:", "remain-on-exit", "on", check=False)
    assert run(capsys, "--worker", "z", "status")[1] == "gone\n"


def test_status_by_session_id_and_v3_meta(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    m = env.add_worker("v3", [{"event": "session_start", "cwd": "/p"}, {"event": "user_prompt_submit"}, {"event": "stop"}])
    assert run(capsys, "--worker", m.session_id, "status")[1] == "idle\n"
    assert run(capsys, "--worker", "v3", "session-id")[1] == m.session_id + "\n"
    assert run(capsys, "--worker", "v3", "events-file")[1] == str(env.wdir.events_path(m.session_id)) + "\n"


def test_malformed_middle_line_hides_nothing(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.add_worker("m", [START, UPS], raw_lines=['{"ts":"x","event":"pre_tool', json.dumps({"ts": "t", **STOP})])
    code, out, err = run(capsys, "--worker", "m", "status")
    assert (code, out) == (0, "idle\n")
    code, out, err = run(capsys, "--worker", "m", "read-events")
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["session_start", "user_prompt_submit", "stop"]
    assert "skipping line 3" in err


def test_list_shows_rows_and_hides_gone_unless_all(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.add_worker("b-idle", [START])
    env.add_worker("a-work", [START, UPS])
    env.add_worker("c-gone", [START], live=False)
    code, out, err = run(capsys, "list")
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows[0] == ["STATUS", "TMUX", "SESSION_ID", "SHIM", "CWD", "HOST", "COST"]  # v3 columns first
    assert rows[1][6] == "-"  # no statusLine run yet: cost unknown
    assert [(r[0], r[1]) for r in rows[1:]] == [("working", "a-work"), ("idle", "b-idle")]
    assert rows[1][3] == str(env.wdir.shim_path("a-work"))
    out_all = run(capsys, "list", "--all")[1]
    assert "gone\tc-gone" in out_all
    assert [r.split("\t")[1] for r in run(capsys, "list", "--all", "zzz")[1].splitlines()[1:]] == []
    assert [r.split("\t")[1] for r in run(capsys, "list", "--all", "b-")[1].splitlines()[1:]] == ["b-idle"]
    js = [json.loads(line) for line in run(capsys, "list", "--json", "--all")[1].splitlines()]
    assert {j["name"]: j["state"] for j in js} == {"a-work": "working", "b-idle": "idle", "c-gone": "gone"}
    assert set(js[0]) >= {"name", "session_id", "state", "bg_running", "last_event", "cwd", "shim", "events_file"}


def test_list_with_no_workers(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "list") == (0, "", "No workers found (gone ones are shown with --all)\n")


def test_list_of_50_workers_runs_one_tmux_process(env: Env, tmp_path: Path) -> None:
    """Liveness of every worker comes from one list-panes call, counted by a real tmux wrapper on PATH."""
    for i in range(50):
        env.add_worker(f"w{i:02d}", [START], live=i % 2 == 0)
    wrapper = tmp_path / "wrap"
    wrapper.mkdir()
    log = tmp_path / "tmux-calls"
    real = subprocess.run(["sh", "-c", "command -v tmux"], capture_output=True, text=True).stdout.strip()
    (wrapper / "tmux").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    (wrapper / "tmux").chmod(0o755)
    envv = {**os.environ, "PATH": f"{wrapper}:{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "csd", "list", "--all"], capture_output=True, text=True, env=envv)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 51
    assert sum(1 for line in proc.stdout.splitlines() if line.startswith("idle")) == 25
    assert log.read_text().count("\n") == 1


def test_unknown_worker_gets_did_you_mean(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.add_worker("api-server", [START])
    code, out, err = run(capsys, "--worker", "api-sever", "status")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "'api-sever'" in err and "did you mean 'api-server'" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["frobnicate"], "unknown command 'frobnicate'; valid: launch adopt list"),
        (["--worker", "x", "frobnicate"], "unknown command 'frobnicate'; valid: status"),
        (["--worker", "x", "read-events", "--type", "end_of_turn"], "'end_of_turn' is not a known event type; valid events: " + " ".join(EVENT_NAMES)),
        (["--worker", "x", "status", "--colour"], "unrecognized arguments: --colour"),
        (["list", "--bogus"], "unrecognized arguments: --bogus"),
        (["--bogus"], "unknown option '--bogus'"),
        (["status"], "'status' is a per-worker command"),
        (["--worker", "x", "launch"], "'launch' is a top-level command"),
        (["--worker", "x", "wait-for-turn", "-1"], "invalid timeout '-1'"),
        (["--worker", "x", "wait-for-turn", "abc"], "invalid timeout 'abc'"),
        (["--worker", "x", "wait-for-turn", "1e9"], "invalid timeout '1e9'"),
        (["--worker", "x", "read-events", "--last", "-3"], "invalid count '-3'"),
        (["launch", "a.b", "/tmp"], "invalid worker name 'a.b'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(env: Env, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and needle in err, err


def test_help_lists_commands_states_events_exit_codes_and_env(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["help"], ["--help"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and out == help_text()
    text = help_text()
    for word in [*STATES, *EVENT_NAMES, "CSD_WORKERS_DIR", "CSD_TMUX_SOCKET", "CSD_SUBMIT_TIMEOUT", "130", "Destructive"]:
        assert word in text
    assert run(capsys, "--version")[1] == f"csd {__version__}\n"


def test_handoff_names_the_socket_and_warns_about_stop(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.add_worker("h", [START])
    code, out, err = run(capsys, "--worker", "h", "handoff")
    assert code == 0 and out == f"tmux -S {env.socket} attach -t =h\n"
    assert "Ctrl-B d" in err and "stop" in err


def test_read_events_last_and_type(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    env.add_worker("r", [START, UPS, TOOL, STOP, UPS, TOOL, STOP])
    out = run(capsys, "--worker", "r", "read-events", "--last", "2")[1]
    assert [json.loads(x)["event"] for x in out.splitlines()] == ["pre_tool_use", "stop"]
    out = run(capsys, "--worker", "r", "read-events", "--type", "pre_tool_use")[1]
    assert len(out.splitlines()) == 2


def test_every_handler_the_table_names_is_a_function() -> None:
    """Handlers are named as "module:function" (imported only when their command runs): each names one."""
    import importlib

    from csd.cli import REMOTE_WORKER
    from csd.commands.table import TABLE

    for ref in [c.handler for c in TABLE] + [REMOTE_WORKER]:
        module, _, name = ref.partition(":")
        assert callable(getattr(importlib.import_module(module), name, None)), ref
