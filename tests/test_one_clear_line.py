"""Hostile files and a stingy host: each is one clear line on stderr (or a warning and the answer), never a traceback."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from csd.commands.read import tsv_field
from support import Env, csd, tmpfs

DEEP = 100_000


def one_line(proc: subprocess.CompletedProcess[bytes], code: int, *needles: str) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def no_traceback(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    return err


# --- JSON nested 100 000 deep -----------------------------------------------------------------------


def deep_line() -> str:
    return '{"ts":"2026-11-25T00:00:02Z","event":"pre_tool_use","tool_input":' + "[" * DEEP + "]" * DEEP + "}"


@pytest.mark.parametrize(
    ("argv", "answer"),
    [
        (("--worker", "d", "status"), "idle"),
        (("--worker", "d", "status", "--json"), '"state": "idle"'),
        (("list",), "idle\td\t"),
        (("--worker", "d", "wait-for-turn", "5"), '"event": "stop"'),
        (("wait-for-turn", "--any", "d", "5"), "d\t"),
        (("--worker", "d", "read-events"), '"event": "stop"'),
        (("--worker", "d", "read-events", "--last", "5"), '"event": "stop"'),
    ],
)
def test_a_deeply_nested_events_line_is_a_skipped_line(env: Env, argv: tuple[str, ...], answer: str) -> None:
    """The old code raised RecursionError: one bad file broke list for everyone."""
    env.add_worker("d", [{"event": "session_start"}], raw_lines=[deep_line(), json.dumps({"ts": "t", "event": "stop"})])
    proc = csd(*argv)
    assert proc.returncode == 0, proc.stderr
    assert answer in proc.stdout.decode()
    assert "nested too deeply" in no_traceback(proc)


def test_the_live_table_skips_a_deeply_nested_line(env: Env) -> None:
    env.add_worker("d", [{"event": "session_start"}], raw_lines=[deep_line(), json.dumps({"ts": "t", "event": "stop"})])
    watcher = subprocess.Popen([sys.executable, "-m", "csd", "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert watcher.stdout is not None
    first = watcher.stdout.readline().decode()
    watcher.send_signal(2)
    _, err = watcher.communicate(timeout=10)
    assert "\td\tidle" in first, err
    assert watcher.returncode == 0 and b"Traceback" not in err


def test_a_deeply_nested_meta_is_skipped_and_the_others_listed(env: Env) -> None:
    env.add_worker("ok", [{"event": "session_start"}])
    (env.wdir.path / "bad.meta").write_text("[" * DEEP + "]" * DEEP)
    proc = csd("list")
    assert proc.returncode == 0 and "\tok\t" in proc.stdout.decode()
    assert "bad.meta: its JSON is nested too deeply" in no_traceback(proc)


def test_the_hook_caps_a_deeply_nested_prompt_id(tmp_path: Path) -> None:
    """The hook copied prompt_id whole: a payload could make it write a line too deep to read."""
    events = tmp_path / "e.jsonl"
    events.write_text("")
    nested: object = "x"
    for _ in range(500):  # as deep as the hook's own JSON parser takes
        nested = [nested]
    payload = {"hook_event_name": "UserPromptSubmit", "session_id": "s", "prompt": "p", "prompt_id": nested}
    hook = [sys.executable, "-I", "-S", str(Path(__file__).resolve().parent.parent / "csd" / "hook.py")]
    proc = subprocess.run(hook, input=json.dumps(payload).encode(), capture_output=True, env={**os.environ, "CSD_EVENTS_FILE": str(events)})
    assert proc.returncode == 0, proc.stderr
    prompt_id = json.loads(events.read_text())["prompt_id"]
    depth = 0
    while isinstance(prompt_id, list):
        prompt_id, depth = prompt_id[0], depth + 1
    assert depth <= 6 and "truncated nesting" in prompt_id


# --- a stingy host ------------------------------------------------------------------------------------


def limit_files(n: int):  # noqa: ANN201 - a preexec_fn
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def test_fifty_workers_with_64_descriptors(env: Env) -> None:
    """ulimit -n 64: a fan-out wait over 50 live workers needs more; it says so in one line (EMFILE
    was a traceback), and list, which needs few, still answers."""
    names = [f"w{i:02d}" for i in range(50)]
    for name in names:
        env.add_worker(name, [{"event": "session_start"}, {"event": "user_prompt_submit", "prompt": "p"}])
    argv = [sys.executable, "-m", "csd"]
    wait = subprocess.run([*argv, "wait-for-turn", "--all", *names, "5"], capture_output=True, timeout=60, preexec_fn=limit_files(64))
    one_line(wait, 1, "Too many open files", "ulimit -n")
    listed = subprocess.run([*argv, "list"], capture_output=True, timeout=60, preexec_fn=limit_files(64))
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 51, listed.stderr


def in_userns_without_inotify(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """csd in a user namespace of its own whose inotify instance limit is 0: no inotify for it, and
    nobody else on the machine is touched."""
    script = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$@"'
    return subprocess.run(["unshare", "-U", "-r", "sh", "-c", script, "sh", sys.executable, "-m", "csd", *argv],
                          capture_output=True, timeout=60, env={**os.environ, **(env or {})})


def test_no_inotify_left(env: Env) -> None:
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c", "echo 0 > /proc/sys/user/max_inotify_instances"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a user namespace without inotify here: {probe.stderr.decode().strip()}")
    env.add_worker("n", [{"event": "session_start"}, {"event": "stop"}])
    insisted = in_userns_without_inotify("--worker", "n", "read-events", "--follow", env={"CSD_WATCH_BACKEND": "inotify"})
    one_line(insisted, 1, "CSD_WATCH_BACKEND=inotify, but no inotify is left", "unset it")
    # not insisted: polling instead, with a warning, and the answer
    auto = in_userns_without_inotify("--worker", "n", "wait-for-turn", "5")
    assert auto.returncode == 0 and json.loads(auto.stdout)["event"] == "stop", auto.stderr
    assert "inotify unavailable" in no_traceback(auto)


def test_a_workers_dir_whose_parent_cannot_be_written(env: Env, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=64k") as parent:
        proc = csd("launch", "x", str(env.root), env={"CSD_WORKERS_DIR": str(parent / "workers")})
        one_line(proc, 1, f"cannot create workers dir '{parent / 'workers'}'", "Read-only file system", "CSD_WORKERS_DIR")


# --- one's own files, replaced ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
@pytest.mark.parametrize("argv", [("status",), ("read-events",), ("read-events", "--last", "1"), ("wait-for-turn", "5")])
def test_an_events_file_that_is_not_a_file(env: Env, tmp_path: Path, kind: str, argv: tuple[str, ...]) -> None:
    """A FIFO used to hang status for ever; a symlink was a traceback."""
    meta = env.add_worker("e", [{"event": "session_start"}])
    path = env.wdir.events_path(meta.session_id)
    path.unlink()
    if kind == "symlink":
        target = tmp_path / "target.jsonl"
        target.write_text(json.dumps({"ts": "t", "event": "session_start"}) + "\n")
        path.symlink_to(target)
    else:
        os.mkfifo(path)
    proc = csd("--worker", "e", *argv, timeout=30)
    one_line(proc, 1, str(path), "refusing")


# --- numbers and names ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["5_0", "٥", "-inf", "nan", "inf", "1e3", "-1", "0"])
def test_a_timeout_is_plain_digits(env: Env, value: str) -> None:
    """float() takes '5_0' (50) and '٥' (5): a timeout that is not what it looks like."""
    env.add_worker("t", [{"event": "session_start"}])
    # argparse takes '-inf' for an option: its line quotes it and gives the usage
    said = f"unrecognized arguments: {value}" if value == "-inf" else f"invalid timeout {value!r}"
    one_line(csd("--worker", "t", "wait-for-turn", value), 2, said)
    one_line(csd("--worker", "t", "converse", "hi", value), 2, said)
    one_line(csd("--worker", "t", "status", env={"CSD_TMUX_TIMEOUT": value}), 2, f"CSD_TMUX_TIMEOUT={value!r}")


@pytest.mark.parametrize("value", ["5_0", "٥", "1e3"])
def test_a_count_is_plain_digits(env: Env, value: str) -> None:
    env.add_worker("t", [{"event": "session_start"}])
    one_line(csd("--worker", "t", "wait-for-turn", "--after-line", value, "5"), 2, f"invalid count {value!r}")
    one_line(csd("--worker", "t", "read-events", "--last", value), 2, f"invalid count {value!r}")


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "5_0"])
def test_a_fan_out_wait_with_a_bad_timeout_says_timeout(env: Env, value: str) -> None:
    """'wait-for-turn --any a nan' took 'nan' for a worker name."""
    env.add_worker("a", [{"event": "session_start"}, {"event": "user_prompt_submit"}])
    one_line(csd("wait-for-turn", "--any", "a", value), 2, f"invalid timeout {value!r}")


def test_a_worker_may_still_be_named_like_a_number(env: Env) -> None:
    env.add_worker("5_0", [{"event": "session_start"}, {"event": "stop"}])
    env.add_worker("b", [{"event": "session_start"}, {"event": "stop"}])
    proc = csd("wait-for-turn", "--all", "b", "5_0")
    assert proc.returncode == 0 and {line.split("\t")[0] for line in proc.stdout.decode().splitlines()} == {"b", "5_0"}


def test_a_cwd_with_a_newline_and_tabs_makes_no_fake_list_row(env: Env) -> None:
    cwd = env.root / "x\nidle\tfake\t00000000-0000-0000-0000-000000000000\tsh\tx"
    cwd.mkdir()
    proc = csd("launch", "nl", str(cwd))
    assert proc.returncode == 0, proc.stderr
    listed = csd("list").stdout.decode().splitlines()
    assert len(listed) == 2, listed
    fields = listed[1].split("\t")
    assert len(fields) == 7 and fields[:2] == ["idle", "nl"] and fields[5] == "-" and fields[6] in ("-", "$0.0000")
    assert fields[4] == tsv_field(str(cwd)) and "\\n" in fields[4] and "\\t" in fields[4]


def test_tsv_fields_escape_what_would_split_them() -> None:
    assert tsv_field("a\tb\nc\\d\re\x1bf") == "a\\tb\\nc\\\\d\\re\\x1bf"
    assert tsv_field("plain /path-ü") == "plain /path-ü"


@pytest.mark.parametrize("backend", ["inotify", "poll"])
def test_a_long_prompt_to_a_working_worker_is_refused_in_one_line(env: Env, backend: str) -> None:
    """The note that a prompt over CSD_EXACT_PROMPT_LIMIT goes as one paste comes only once the worker takes it:
    a refusal stays one line, whichever driver runs send's steps (inotify: csd.waiter; poll: the supervisor)."""
    from support import launch

    shim = launch(env, "busy")
    assert subprocess.run([str(shim), "send", "HANG"], capture_output=True).returncode == 0
    proc = subprocess.run([str(shim), "send", "x" * 200], capture_output=True,
                          env={**os.environ, "CSD_EXACT_PROMPT_LIMIT": "100", "CSD_WATCH_BACKEND": backend})
    one_line(proc, 1, "while it is working")
