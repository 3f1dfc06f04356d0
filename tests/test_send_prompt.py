"""Prompts arrive as written, over real tmux with the simulated worker (each rule measured on Claude Code 2.1.330:
tests/e2e/test_prompt_delivery.py runs the same prompts against the real one).

The first tests check that the simulated worker mirrors the real TUI's handling of a raw paste (the behaviour csd has
to work around); the rest check what `send` makes of it: exact text, a literal leading ``!``, ``--shell``, unknown
slash commands, leftover input, and hostile prompts that try to type keys (issue 14).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import Env, events, launch, status

from csd.prompt import clean_prompt
from csd.transcript import turns
from csd.transcriptfile import read_transcript


def shim_run(shim: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    import os

    return subprocess.run([str(shim), *args], input=input, capture_output=True, timeout=60, env={**os.environ, **(env or {})})


def ups_prompts(shim: Path) -> list[str]:
    return [e["prompt"] for e in events(shim, "user_prompt_submit")]


def pane(env: Env, name: str) -> str:
    return env.tmux("capture-pane", "-p", "-t", f"={name}:").stdout


def raw_paste_and_enter(env: Env, name: str, text: str) -> None:
    """What csd used to do: one bracketed paste of the whole text, then Enter. Launch does not wait for the TUI
    to take an Enter; like send, this holds it until prompt.ENTER_READY_AFTER_START after session_start."""
    import time

    from csd.prompt import ENTER_READY_AFTER_START
    from csd.clock import epoch as _epoch

    start = events(env.wdir.shim_path(name), "session_start")[0]
    time.sleep(max(0.0, _epoch(start["ts"]) + ENTER_READY_AFTER_START - time.time()))
    env.tmux("send-keys", "-t", f"={name}:", "-l", f"\x1b[200~{text}\x1b[201~")
    env.tmux("send-keys", "-t", f"={name}:", "Enter")


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie its parent has yet to reap does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_ups(shim: Path, count: int) -> list[str]:
    out = subprocess.run([str(shim), "wait-for-turn", "20"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = ups_prompts(shim)
    assert len(got) == count, got
    return got


# ---------------------------------------------------------------- the simulated worker mirrors the real TUI


def test_sim_wraps_a_long_or_many_line_paste_like_the_real_one(env: Env) -> None:
    """Real 2.1.330: one paste over 800 characters, or with more than 2 line breaks at 50 rows, reaches the model as
    ``\\n\\n<pasted_content id=…>\\n…\\n</pasted_content id=…>\\n``."""
    shim = launch(env, "sim")
    raw_paste_and_enter(env, "sim", "x" * 1500)
    (long,) = wait_ups(shim, 1)
    assert long.startswith('\n\n<pasted_content id="') and "\n" + "x" * 1500 + "\n</pasted_content id=" in long
    raw_paste_and_enter(env, "sim", "1\n2\n3\n4")
    lines = wait_ups(shim, 2)[-1]
    assert "<pasted_content" in lines and "\n1\n2\n3\n4\n" in lines
    raw_paste_and_enter(env, "sim", "crlf\r\nline")  # real: a CRLF arrives as two line breaks
    assert wait_ups(shim, 3)[-1] == "crlf\n\nline"


def test_sim_runs_a_pasted_leading_bang_in_bash_mode_like_the_real_one(env: Env) -> None:
    """Real 2.1.330: ``!cmd`` pasted into an empty input line runs ``cmd``; the model then answers its output with a
    Stop and no UserPromptSubmit."""
    shim = launch(env, "bang")
    before = len(events(shim))
    raw_paste_and_enter(env, "bang", "!touch RAN")
    out = subprocess.run([str(shim), "wait-for-turn", "20", "--after-line", str(before)], capture_output=True, text=True)
    # the stop of the bash-mode turn arrives without user_prompt_submit, so the worker was idle all along
    assert out.returncode == 0, out.stderr
    stop = [e for e in events(shim) if e["event"] == "stop"]
    assert (env.root / "RAN").exists() and ups_prompts(shim) == []
    assert stop and stop[-1]["last_assistant_message"].startswith("ECHO: <bash-stdout>")


# ---------------------------------------------------------------- send delivers the prompt as written


@pytest.mark.parametrize(
    "prompt",
    [
        "REPLY:ok\n" + "".join(chr(97 + i % 26) for i in range(1500)),  # a line over 800 characters
        "REPLY:ok\n" + "\n".join(f"line {i}" for i in range(2, 7)),  # 6 lines
        "REPLY:ok\n\n\nblank lines\n\n  indented\n😀 and é",
    ],
    ids=["1500-chars", "6-lines", "blanks-unicode"],
)
def test_send_delivers_long_and_many_line_prompts_byte_exact(env: Env, prompt: str) -> None:
    shim = launch(env, "w")
    proc = shim_run(shim, "converse", "-", input=prompt.encode())
    assert (proc.returncode, proc.stdout) == (0, b"ok\n"), proc.stderr
    assert ups_prompts(shim) == [prompt]
    (turn,) = turns(read_transcript(events(shim, "user_prompt_submit")[0]["transcript_path"]))
    assert turn.prompt == prompt and "pasted_content" not in turn.prompt


def test_a_1mb_prompt_under_the_exact_limit_arrives_byte_exact(env: Env) -> None:
    shim = launch(env, "big")
    prompt = "REPLY:got it\n" + "\n".join(f"line {i:06d} " + "abcdefghij" * 9 for i in range(10_000))
    proc = shim_run(shim, "converse", "-", input=prompt.encode(), env={"CSD_EXACT_PROMPT_LIMIT": "2000000"})
    assert (proc.returncode, proc.stdout) == (0, b"got it\n"), proc.stderr
    (turn,) = turns(read_transcript(events(shim, "user_prompt_submit")[0]["transcript_path"]))
    assert turn.prompt == prompt


def test_send_normalises_cr_tabs_and_trailing_whitespace_predictably(env: Env) -> None:
    shim = launch(env, "n")
    sent = "REPLY:ok\r\nwindows line\rold mac\tcolumn  \n\n"
    assert shim_run(shim, "converse", "-", input=sent.encode()).returncode == 0
    assert ups_prompts(shim) == [clean_prompt(sent)] == ["REPLY:ok\nwindows line\nold mac    column"]


def test_a_prompt_ending_in_a_backslash_is_submitted(env: Env) -> None:
    """Real 2.1.330: backslash + Enter inserts a line break instead of submitting."""
    shim = launch(env, "bs")
    proc = shim_run(shim, "send", "REPLY:ok path C:\\")
    assert proc.returncode == 0, proc.stderr
    assert ups_prompts(shim) == ["REPLY:ok path C:\\"]


def test_a_leading_bang_is_sent_as_text_and_never_runs(env: Env) -> None:
    shim = launch(env, "b")
    proc = shim_run(shim, "converse", "!touch NOPE REPLY:text")
    assert (proc.returncode, proc.stdout) == (0, b"text\n"), proc.stderr
    assert ups_prompts(shim) == ["!touch NOPE REPLY:text"]
    assert not (env.root / "NOPE").exists()


def test_send_shell_runs_the_command_in_bash_mode(env: Env) -> None:
    shim = launch(env, "sh")
    proc = shim_run(shim, "send", "--shell", "touch MADE")
    assert proc.returncode == 0, proc.stderr
    assert (env.root / "MADE").exists() and ups_prompts(shim) == []
    assert status(shim) == "idle"


def test_an_unknown_slash_command_fails_with_the_screens_words(env: Env) -> None:
    """Real 2.1.330 fires no hook and shows "Unknown command: /notacommand" then "Args from unknown skill: …"."""
    shim = launch(env, "u")
    # with a long submit timeout: the refusal is read off the screen, it does not wait for the timeout
    proc = shim_run(shim, "send", "/notacommand foo bar", env={"CSD_SUBMIT_TIMEOUT": "60"})
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.decode()
    assert "Unknown command: /notacommand" in err and "Args from unknown skill: foo bar" in err
    assert "did not confirm" not in err and status(shim) == "idle"
    assert shim_run(shim, "converse", "REPLY:still fine").stdout == b"still fine\n"


# ---------------------------------------------------------------- leftover input (issue 14 item 10)


def test_leftover_of_an_unconfirmed_send_does_not_merge_into_the_next_prompt(env: Env) -> None:
    shim = launch(env, "l")
    # the first Enter is swallowed and never re-pressed: send gives up, its text stays in the input line
    lost = shim_run(shim, "send", "SWALLOW-ENTER alpha", env={"CSD_SUBMIT_TIMEOUT": "1", "CSD_SUBMIT_RETRY_INTERVAL": "30"})
    assert lost.returncode == 1 and b"did not confirm" in lost.stderr
    assert "alpha" in pane(env, "l")
    proc = shim_run(shim, "converse", "REPLY:beta")
    assert (proc.returncode, proc.stdout) == (0, b"beta\n"), proc.stderr
    assert ups_prompts(shim) == ["REPLY:beta"]
    assert b"cleared what was left in 'l'" in proc.stderr and b"SWALLOW-ENTER alpha" in proc.stderr


def test_a_humans_typing_and_bash_mode_are_cleared_and_named(env: Env) -> None:
    shim = launch(env, "h")
    env.tmux("send-keys", "-t", "=h:", "-l", "!half typed")
    env.tmux("send-keys", "-t", "=h:", "Left", "Left")  # the cursor anywhere
    proc = shim_run(shim, "converse", "REPLY:clean")
    assert (proc.returncode, proc.stdout) == (0, b"clean\n"), proc.stderr
    assert ups_prompts(shim) == ["REPLY:clean"]
    assert b"(bash mode): 'half typed'" in proc.stderr
    assert not (env.root / "half").exists()


@pytest.mark.parametrize("mode", [["copy-mode"], ["choose-tree"]], ids=["copy-mode", "choose-tree"])
def test_a_pane_left_in_a_tmux_mode_still_takes_the_prompt_and_the_exit(env: Env, mode: list[str]) -> None:
    """A person who attached, scrolled back (copy mode) and detached leaves the pane in a mode, where tmux gives
    send-keys' keys to the mode: the prompt was typed and its Enter never pressed ("did not confirm the prompt").
    Every call that sends keys first leaves the mode (tmux.out_of_mode)."""
    shim = launch(env, "m")
    in_mode = ["display-message", "-p", "-t", "=m:", "#{pane_in_mode}"]
    env.tmux(*mode, "-t", "=m:")
    assert env.tmux(*in_mode).stdout == "1\n"
    proc = shim_run(shim, "converse", "REPLY:out of the mode", env={"CSD_SUBMIT_TIMEOUT": "3"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"out of the mode\n", b"")
    assert env.tmux(*in_mode).stdout == "0\n"
    env.tmux(*mode, "-t", "=m:")
    proc = shim_run(shim, "stop", env={"CSD_STOP_TIMEOUT": "3"})
    assert proc.returncode == 0 and b"did not exit" not in proc.stderr, proc.stderr


def test_a_person_s_pane_beside_the_worker_gets_no_keys(env: Env) -> None:
    """A person split the worker's window (or opened a window in its session): their pane is the active one. The
    prompt, its Enter, the input-line checks and stop's /exit all go to the worker's own pane (Meta.pane), never to
    theirs, where a shell would run the prompt as a command."""
    shim = launch(env, "sp")
    mark = env.root / "ran"
    env.tmux("split-window", "-t", "=sp:", "bash --norc")
    env.tmux("new-window", "-t", "=sp:", "bash --norc")
    proc = shim_run(shim, "converse", f"REPLY:only for the worker; touch {mark}", env={"CSD_SUBMIT_TIMEOUT": "3"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"only for the worker; touch " + str(mark).encode() + b"\n", b"")
    assert shim_run(shim, "send", "/clear").returncode == 0 and shim_run(shim, "wait-for-turn", "10").returncode == 0
    assert not mark.exists()
    assert shim_run(shim, "status").stdout == b"idle\n"  # the new window is the session's current one
    worker, pane = env.wdir.resolve("sp").pid, env.wdir.resolve("sp").pane
    theirs = env.tmux("list-panes", "-s", "-t", "=sp", "-F", "#{pane_id}").stdout.split()
    theirs.remove(pane)
    proc = shim_run(shim, "stop", env={"CSD_STOP_TIMEOUT": "3"})
    assert proc.returncode == 0 and b"did not exit" not in proc.stderr and b"left alone" not in proc.stderr, proc.stderr
    assert b"has other panes" in proc.stderr and b"only the worker's pane was closed" in proc.stderr
    assert not mark.exists()
    assert not running(worker)
    # the person's two panes stay, theirs to close
    assert env.tmux("list-panes", "-s", "-t", "=sp", "-F", "#{pane_id}").stdout.split() == theirs


# ---------------------------------------------------------------- keystrokes through a prompt (issue 14 item 1)


@pytest.mark.parametrize(
    "attack",
    [b"REPLY:hello\x1b[201\x00~\x15/exit\r", b"REPLY:hello\x1b[20\x1b[201~1~\x15/exit\r"],
    ids=["nul-rebuilt-marker", "nested-marker"],
)
def test_a_rebuilt_paste_marker_types_no_keys(env: Env, attack: bytes) -> None:
    shim = launch(env, "x")
    proc = shim_run(shim, "converse", "-", input=attack)
    text = clean_prompt(attack.decode())
    assert (proc.returncode, proc.stdout) == (0, text.removeprefix("REPLY:").encode() + b"\n"), proc.stderr
    # one prompt, exactly the cleaned text: no Ctrl-U, no /exit, no Enter typed
    assert ups_prompts(shim) == [text]
    assert "/exit" in ups_prompts(shim)[0] and status(shim) == "idle"
    assert json.loads(shim_run(shim, "status", "--json").stdout)["turns"] == 1


def test_a_bad_exact_limit_is_a_usage_error(env: Env) -> None:
    shim = launch(env, "lim")
    proc = shim_run(shim, "send", "hi", env={"CSD_EXACT_PROMPT_LIMIT": "lots"})
    assert proc.returncode == 2 and b"CSD_EXACT_PROMPT_LIMIT='lots' is not a whole number" in proc.stderr
    assert ups_prompts(shim) == []


# ---------------------------------------------------------------- what send and converse load (issue 13)

#: What send and converse do not use, so must not import: each costs their start-up (bench/: send → exit, converse
#: overhead). The machine (transitions: one command folds by the table), launch's modules, the table's, the remote
#: ones, rich, and the transcript modules (a reply the stop event holds whole needs no transcript).
NOT_ON_THE_SEND_PATH = ("transitions", "rich", "csd.lifecycle", "csd.startpane", "csd.fleet", "csd.render", "csd.livetable",
                        "csd.demo", "csd.completion", "csd.remote", "csd.remoteworkers", "csd.commands.manage",
                        "csd.commands.remote", "csd.transcript", "csd.transcriptfile")


@pytest.mark.parametrize("argv", [["send", "hi"], ["converse", "REPLY:hi"]], ids=lambda a: a[0])
def test_send_and_converse_import_only_what_they_use(env: Env, argv: list[str]) -> None:
    """send and converse, each run in a fresh interpreter on a real worker that has had a turn, load none of
    NOT_ON_THE_SEND_PATH. (Before a worker's first turn Claude Code has written no transcript, and converse works
    out where it will be with csd.transcriptfile.)"""
    import os
    import sys

    shim = launch(env, "imp")
    assert shim_run(shim, "converse", "REPLY:first").returncode == 0
    code = ("import sys; from csd.cli import main; code = main(sys.argv[1:]); "
            f"print('LOADED', sorted(m for m in {NOT_ON_THE_SEND_PATH!r} if m in sys.modules)); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-I", "-c", code, "--worker", "imp", *argv], capture_output=True, text=True,
                          env=dict(os.environ), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "LOADED []"
