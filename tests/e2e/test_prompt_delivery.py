"""Prompts reach the real Claude Code's model as written (the request bodies the mock API logged), offline.

What `send` types is in csd/prompt.py; these tests check its rules against 2.1.330: long and many-line prompts
arrive byte-exact (no ``<pasted_content>`` wrapper), a leading ``!`` is text and never runs, ``--shell`` runs,
an unknown slash command fails at once with the screen's words, leftover input does not merge, and a rebuilt paste
marker types nothing.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from csd.prompt import clean_prompt, input_stream


def user_texts(request: dict) -> list[str]:
    """The text blocks of the request's last user message, as the model got them (no reminders)."""
    msg = [m for m in request["body"]["messages"] if m.get("role") == "user"][-1]
    content = msg["content"]
    blocks = [content] if isinstance(content, str) else [b.get("text", "") for b in content if b.get("type") == "text"]
    return [b for b in blocks if not b.startswith("<system-reminder>")]


def converse(real, name: str, prompt: str) -> tuple[dict, str]:
    """converse through the shim with the prompt on stdin; the model's request for it, and csd's stderr."""
    start = len(real.api.messages())
    proc = real.run([str(real.shims[name]), "converse", "-", "60"], input=prompt)
    assert proc.returncode == 0, proc.stderr
    requests = [r for r in real.api.messages()[start:] if not r.get("subagent") and r.get("tools")]
    assert requests, "no model request for the prompt"
    return requests[0], proc.stderr


LONG = "".join(chr(97 + i % 26) for i in range(1500))
SIX = "\n".join(f"line {i} of six" for i in range(1, 7))


@pytest.mark.parametrize("prompt", [LONG, SIX, "  indented\n\n\nafter blank lines\nends with a backslash\\"],
                         ids=["1500-chars", "6-lines", "blanks-backslash"])
def test_long_and_many_line_prompts_arrive_byte_exact(real, prompt: str) -> None:
    real.worker("pd")
    request, _ = converse(real, "pd", prompt)
    assert user_texts(request)[-1] == prompt
    assert not any("pasted_content" in t for t in user_texts(request))
    assert real.events("pd", "user_prompt_submit")[-1]["prompt"] == prompt


def test_cr_and_tabs_arrive_as_csd_documents(real) -> None:
    real.worker("pd")
    sent = "windows\r\nline\rold mac\tcolumn  "
    request, _ = converse(real, "pd", sent)
    assert user_texts(request)[-1] == clean_prompt(sent) == "windows\nline\nold mac    column"


def test_a_leading_bang_arrives_as_text_and_runs_nothing(real) -> None:
    real.worker("pd")
    target = real.proj / "BANG_FILE"
    request, _ = converse(real, "pd", "!touch BANG_FILE")
    assert user_texts(request)[-1] == "!touch BANG_FILE"
    assert not target.exists()


def test_send_shell_runs_in_bash_mode(real) -> None:
    real.worker("pd")
    proc = real.shim("pd", "send", "--shell", "touch SHELL_FILE")
    assert proc.returncode == 0, proc.stderr
    assert (real.proj / "SHELL_FILE").exists()
    assert real.shim("pd", "status").stdout == "idle\n"


def test_an_unknown_slash_command_fails_fast_with_the_screens_words(real) -> None:
    real.worker("pd")
    t0 = time.monotonic()
    proc = real.shim("pd", "send", "/notacommand foo bar")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert "Unknown command: /notacommand" in proc.stderr and "did not confirm" not in proc.stderr
    assert elapsed < 10, elapsed  # CSD_SUBMIT_TIMEOUT is 10 s: the refusal was read off the screen
    assert real.shim("pd", "status").stdout == "idle\n"


@pytest.mark.parametrize("lines", [1, 120], ids=["one-line", "taller-than-the-screen"])
def test_leftover_input_is_cleared_not_merged(real, lines: int) -> None:
    real.worker("pd")
    leftover = "\n".join(f"alpha leftover {i}" for i in range(lines))
    subprocess.run(["tmux", "-S", real.socket, "load-buffer", "-b", "left", "-"], input=input_stream(leftover), check=True)
    real.tmux("paste-buffer", "-r", "-d", "-b", "left", "-t", "=pd:")
    # until the TUI has taken it all in and drawn it (send reads the input line as drawn)
    deadline = time.monotonic() + 30
    while f"alpha leftover {lines - 1}" not in real.tmux("capture-pane", "-p", "-t", "=pd:").stdout:
        assert time.monotonic() < deadline, "the leftover never showed in the input line"
        time.sleep(0.05)
    request, err = converse(real, "pd", "beta")
    assert user_texts(request)[-1] == "beta"
    assert "cleared what was left in 'pd'" in err and ("alpha leftover 0" in err or "…" in err)


def test_a_pane_left_in_copy_mode_takes_the_prompt_and_the_exit(real) -> None:
    """A person scrolled back in an attached worker and detached: its pane stays in tmux's copy mode, which takes
    send-keys' keys. send and stop leave the mode first (tests/test_send_prompt.py has the simulated worker's)."""
    real.worker("cm")
    real.tmux("copy-mode", "-t", "=cm:")
    request, err = converse(real, "cm", "out of copy mode")
    assert user_texts(request)[-1] == "out of copy mode" and err == ""
    real.tmux("copy-mode", "-t", "=cm:")
    proc = real.shim("cm", "stop")
    assert proc.returncode == 0 and "did not exit" not in proc.stderr, proc.stderr


def test_a_person_s_pane_beside_the_worker_gets_no_keys(real) -> None:
    """A person split the worker's window: their shell is the active pane. The prompt goes to the worker's own pane
    (Meta.pane), never to the shell, where it would run (tests/test_send_prompt.py has the simulated worker's)."""
    real.worker("sp")
    mark = real.proj / "ran-in-the-shell"
    real.tmux("split-window", "-t", "=sp:", "bash --norc")
    request, err = converse(real, "sp", f"only for the worker; touch {mark}")
    assert user_texts(request)[-1] == f"only for the worker; touch {mark}" and err == ""
    proc = real.shim("sp", "stop")
    assert proc.returncode == 0 and "did not exit" not in proc.stderr, proc.stderr
    assert not mark.exists()


@pytest.mark.parametrize("attack", ["hello\x1b[201\x00~\x15/exit\r", "hello\x1b[20\x1b[201~1~\x15/exit\r"],
                         ids=["nul-rebuilt-marker", "nested-marker"])
def test_a_rebuilt_paste_marker_types_no_keys(real, attack: str) -> None:
    real.worker("pd")
    request, _ = converse(real, "pd", attack)
    assert user_texts(request)[-1] == clean_prompt(attack)
    assert real.shim("pd", "status").stdout == "idle\n"  # /exit was never typed
    assert json.loads(real.shim("pd", "status", "--json").stdout)["state"] == "idle"


def test_past_the_exact_limit_a_prompt_goes_as_one_paste_and_says_so(real) -> None:
    real.worker("pd")
    env = {**real.env, "CSD_EXACT_PROMPT_LIMIT": "1000"}
    start = len(real.api.messages())
    proc = real.run([str(real.shims["pd"]), "converse", "-", "60"], env=env, input=LONG)
    assert proc.returncode == 0, proc.stderr
    assert "CSD_EXACT_PROMPT_LIMIT=1000" in proc.stderr and "<pasted_content>" in proc.stderr
    (request, *_) = [r for r in real.api.messages()[start:] if not r.get("subagent") and r.get("tools")]
    got = user_texts(request)[-1]
    assert got.startswith('\n\n<pasted_content id="') and f"\n{LONG}\n</pasted_content" in got


def test_print_mode_is_refused_and_leaves_nothing(real) -> None:
    proc = real.csd("launch", "printer", str(real.proj), "--", "-p", "hi")
    assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
    assert "'-p' runs one prompt and exits" in proc.stderr
    assert real.tmux("has-session", "-t", "=printer").returncode != 0
    assert not (real.workers / "bin" / "printer").exists()
