"""The hook as Claude Code runs it: a real process, real payloads on stdin, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from csd import hook
from csd.bundled import PLUGIN_DIR
from csd.events import EVENT_NAMES, parse_lines
from csd.lifecycle import hook_command

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "claude-code" / "samples" / "hooks"
HOOK = [sys.executable, "-I", "-S", str(ROOT / "csd" / "hook.py")]
PLUGIN_HOOK = str(PLUGIN_DIR / "hooks" / "csd-hook")

SAMPLE_PAYLOADS = sorted(SAMPLES.glob("*.json")) if SAMPLES.is_dir() else []


def run_hook(stdin: bytes | None, env: dict[str, str], cmd: list[str] | None = None, **kw) -> subprocess.CompletedProcess[bytes]:
    base = {"PATH": os.environ["PATH"]}
    return subprocess.run(cmd or HOOK, input=stdin, env={**base, **env}, capture_output=True, timeout=20, **kw)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    p = tmp_path / "w.events.jsonl"
    p.touch()
    return p


@pytest.mark.skipif(not SAMPLE_PAYLOADS, reason="../shared samples not present")
@pytest.mark.parametrize("sample", SAMPLE_PAYLOADS, ids=lambda p: p.stem)
def test_each_real_payload_gives_one_valid_line(sample: Path, events_file: Path) -> None:
    payload = json.loads(sample.read_text())
    proc = run_hook(sample.read_bytes(), {"CSD_EVENTS_FILE": str(events_file)})
    assert proc.returncode == 0, proc.stderr
    (line,) = lines(events_file)
    assert line["event"] in EVENT_NAMES and line["event"] == hook.HOOK_TO_EVENT[payload["hook_event_name"]]
    assert line["ts"].endswith("Z") and line["session_id"] == payload["session_id"]
    assert line["cwd"] == payload["cwd"]  # v3: session_start carries cwd
    if line["event"] == "pre_tool_use":  # v3 field names
        assert line["tool"] == payload["tool_name"] and line["tool_input"] == payload["tool_input"]
    if line["event"] == "stop":
        running = [t for t in payload["background_tasks"] if t["status"] == "running"]
        assert line["bg_running"] == len(running)
        assert line["last_assistant_message"].startswith(payload["last_assistant_message"][:100])
    if line["event"] == "user_prompt_submit":
        assert line["prompt"] == payload["prompt"][: hook.CAP] or "truncated" in line["prompt"]
    (event,) = parse_lines([events_file.read_text()])
    assert event.name == line["event"]


def test_long_values_are_capped_and_say_so(events_file: Path) -> None:
    payload = {"hook_event_name": "PreToolUse", "session_id": "s", "tool_name": "Write",
               "tool_input": {"file_path": "/x", "content": "A" * 3_000_000}}
    proc = run_hook(json.dumps(payload).encode(), {"CSD_EVENTS_FILE": str(events_file)})
    assert proc.returncode == 0
    (line,) = lines(events_file)
    assert len(events_file.read_bytes()) < 5000
    assert line["tool_input"]["content"].endswith("[truncated 2998000 chars]")


def test_unmanaged_session_is_ignored(tmp_path: Path) -> None:
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "other.meta").write_text("{}")
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "not-managed"}).encode()
    proc = run_hook(payload, {"CSD_WORKERS_DIR": str(wdir)})
    assert proc.returncode == 0
    assert sorted(p.name for p in wdir.iterdir()) == ["other.meta"]


def test_v3_rule_a_meta_makes_the_session_managed(tmp_path: Path) -> None:
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "sid-1.meta").write_text("{}")
    payload = json.dumps({"hook_event_name": "SessionStart", "session_id": "sid-1", "cwd": "/p", "source": "startup"}).encode()
    assert run_hook(payload, {"CSD_WORKERS_DIR": str(wdir)}).returncode == 0
    (line,) = lines(wdir / "sid-1.events.jsonl")
    assert line["event"] == "session_start" and line["cwd"] == "/p"


def test_a_stopped_worker_file_is_not_resurrected(tmp_path: Path) -> None:
    gone = tmp_path / "stopped.events.jsonl"
    payload = json.dumps({"hook_event_name": "SessionEnd", "session_id": "s", "reason": "other"}).encode()
    assert run_hook(payload, {"CSD_EVENTS_FILE": str(gone)}).returncode == 0
    assert not gone.exists()


@pytest.mark.parametrize("stdin", [b"", b"garbage{{{", b"\xff\xfe\x00", b"[1,2,3]", b'{"no_event": true}'])
def test_bad_stdin_exits_0_and_writes_nothing_wrong(stdin: bytes, events_file: Path) -> None:
    proc = run_hook(stdin, {"CSD_EVENTS_FILE": str(events_file)})
    assert proc.returncode == 0
    assert events_file.read_text() == ""


def run_with_open_stdin(data: bytes, events_file: Path) -> tuple[int, float]:
    """Run the hook with ``data`` on a stdin whose writer never closes it: (exit code, seconds taken)."""
    r, w = os.pipe()
    os.write(w, data)
    try:
        t0 = time.monotonic()
        proc = subprocess.run(HOOK, stdin=r, env={"CSD_EVENTS_FILE": str(events_file)}, capture_output=True, timeout=20)
        return proc.returncode, time.monotonic() - t0
    finally:
        os.close(r)
        os.close(w)


def test_never_closed_stdin_is_bounded(events_file: Path) -> None:
    """A caller that never closes stdin (and sends nothing) cannot hang the hook past its bound."""
    code, elapsed = run_with_open_stdin(b"", events_file)
    assert code == 0 and elapsed < hook.STDIN_SECONDS + 2
    assert events_file.read_text() == ""


def test_never_closed_stdin_with_a_whole_payload_does_not_wait_for_eof(events_file: Path) -> None:
    code, elapsed = run_with_open_stdin(json.dumps({"hook_event_name": "Stop", "session_id": "s"}).encode(), events_file)
    assert code == 0 and elapsed < hook.STDIN_SECONDS
    assert lines(events_file)[0]["event"] == "stop"


def test_20_concurrent_70k_payloads_leave_20_intact_lines(events_file: Path) -> None:
    def one(i: int) -> int:
        payload = {"hook_event_name": "PostToolUse", "session_id": "s", "tool_name": "Bash",
                   "tool_input": {"command": f"cmd {i}"}, "tool_response": {"stdout": chr(65 + i) * 70_000}}
        return run_hook(json.dumps(payload).encode(), {"CSD_EVENTS_FILE": str(events_file)}).returncode

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(one, range(20))) == [0] * 20
    got = lines(events_file)
    assert len(got) == 20
    assert sorted(g["tool_input"]["command"] for g in got) == sorted(f"cmd {i}" for i in range(20))


def test_launch_configures_the_hook_with_this_interpreter() -> None:
    assert hook_command().startswith(sys.executable + " -I -S ")


def test_plugin_route_defers_to_launch_settings_route(tmp_path: Path) -> None:
    """Both routes fire for a launched worker; only the settings route writes, so each event lands once."""
    ev = tmp_path / "w.events.jsonl"
    ev.touch()
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "s"}).encode()
    env = {"CSD_EVENTS_FILE": str(ev), "CSD_WORKER": "w", "CLAUDE_PLUGIN_ROOT": str(PLUGIN_DIR)}
    assert run_hook(payload, env, [PLUGIN_HOOK]).returncode == 0
    assert run_hook(payload, env).returncode == 0
    assert len(lines(ev)) == 1


def test_plugin_route_uses_the_csd_interpreter_for_v3_sessions(tmp_path: Path) -> None:
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "sid-2.meta").write_text("{}")
    # a python3 first on PATH that must not be used
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\necho wrong-python >&2\nexit 99\n")
    (fake / "python3").chmod(0o755)
    path = f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "sid-2"}).encode()
    proc = subprocess.run([PLUGIN_HOOK], input=payload, capture_output=True, timeout=20,
                          env={"PATH": path, "CSD_WORKERS_DIR": str(wdir), "CLAUDE_PLUGIN_ROOT": str(PLUGIN_DIR)})
    assert proc.returncode == 0 and b"wrong-python" not in proc.stderr
    assert lines(wdir / "sid-2.events.jsonl")[0]["event"] == "stop"


def test_plugin_route_without_metas_does_not_start_python(tmp_path: Path) -> None:
    wdir = tmp_path / "empty"
    wdir.mkdir()
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "python-ran"
    (fake / "csd").write_text(f"#!{fake}/py\n")
    (fake / "py").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (fake / "py").chmod(0o755)
    proc = subprocess.run([PLUGIN_HOOK], input=b"{}", capture_output=True, timeout=20,
                          env={"PATH": f"{fake}:/usr/bin:/bin", "CSD_WORKERS_DIR": str(wdir)})
    assert proc.returncode == 0 and not marker.exists()


def _plugin_copy(tmp_path: Path) -> Path:
    """The repository as a plugin copied with its links followed (as an installer that copies might)."""
    import shutil

    copy = tmp_path / "repo-copy"
    for part in (".claude-plugin", "hooks", "skills"):
        shutil.copytree(PLUGIN_DIR / part, copy / part)
    (copy / "csd").mkdir()
    for script in ("hook.py", "run_hook.py"):
        shutil.copy(ROOT / "csd" / script, copy / "csd" / script)
    return copy


@pytest.mark.parametrize("where", ["package", "repository", "copy"])
def test_plugin_route_records_from_wherever_the_plugin_is(where: str, tmp_path: Path) -> None:
    """The plugin's hook finds csd/hook.py from the package (csd plugin-dir), through the repository's
    hooks link, and in a copy of the repository whose links were followed."""
    if where == "repository" and not (ROOT / "hooks").is_symlink():
        pytest.skip("not a git checkout: the repository's plugin links are not in an sdist")
    root = {"package": PLUGIN_DIR, "repository": ROOT, "copy": _plugin_copy(tmp_path)}[where]
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "sid-3.meta").write_text("{}")
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "sid-3"}).encode()
    proc = run_hook(payload, {"CSD_WORKERS_DIR": str(wdir), "CLAUDE_PLUGIN_ROOT": str(root), "CSD_PYTHON": sys.executable},
                    [str(root / "hooks" / "csd-hook")])
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert lines(wdir / "sid-3.events.jsonl")[0]["event"] == "stop"


@pytest.mark.parametrize("launcher", [
    "#!{py}\n",                                    # pip, uv
    "#!{py} -E\n",                                 # pipx
    "#!/bin/sh\n'''exec' {py} \"$0\" \"$@\"\n' '''\n",       # pip, a path too long for a shebang
    "#!/bin/sh\n'''exec' \"{py}\" \"$0\" \"$@\"\n' '''\n",   # the same with a space in the path
], ids=["shebang", "shebang-with-argument", "sh-launcher", "sh-launcher-quoted"])
def test_plugin_route_finds_the_interpreter_behind_each_console_script(launcher: str, tmp_path: Path) -> None:
    """The csd on PATH may start with any of the launchers installers write; the hook runs its interpreter."""
    pydir = tmp_path / ("with space" if '"{py}"' in launcher else "plain")
    pydir.mkdir()
    (pydir / "python").symlink_to(sys.executable)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "csd").write_text(launcher.format(py=pydir / "python") + "from csd.cli import entry\n")
    (bindir / "csd").chmod(0o755)
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "sid-4.meta").write_text("{}")
    payload = json.dumps({"hook_event_name": "Stop", "session_id": "sid-4"}).encode()
    proc = subprocess.run([PLUGIN_HOOK], input=payload, capture_output=True, timeout=20,
                          env={"PATH": f"{bindir}:/usr/bin:/bin", "CSD_WORKERS_DIR": str(wdir)})
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert lines(wdir / "sid-4.events.jsonl")[0]["event"] == "stop"


def _random_json(rng, depth: int = 0) -> object:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(-(10**20), 10**20)
    if kind == 2:
        return rng.choice([rng.uniform(-1e9, 1e9), 1e300, -0.0, 5e-324])
    if kind in (3, 4):
        return "".join(rng.choice('ab "\\\n\t\x00\x1fé✓\U0001f600\ud800') for _ in range(rng.randrange(12)))
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(_random_json(rng, 4)): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def test_the_hooks_json_is_the_standard_librarys() -> None:
    """The hook parses and writes JSON through json's C halves (importing json costs it half its start-up):
    on random values, the same text out and the same values back as the json module."""
    import random

    rng = random.Random(13)
    for _ in range(3000):
        value = _random_json(rng)
        for seps in ((",", ":"), (", ", ": ")):
            text = hook.dumps(value, seps)
            assert text == json.dumps(value, ensure_ascii=False, separators=seps)
            assert hook.loads(f" {text}\n") == json.loads(text)
    for bad in ("", "{", "{} x", "[1,]", '{"a" 1}', "nul", "\x00"):
        with pytest.raises(ValueError):
            hook.loads(bad)


def test_the_hook_does_not_import_json_or_re(events_file: Path) -> None:
    """What makes the hook start near the bare interpreter: none of json, re, enum, collections load."""
    data = json.dumps({"hook_event_name": "Stop", "session_id": "s", "last_assistant_message": "é" * 3000}).encode()
    cp = run_hook(data, {"CSD_EVENTS_FILE": str(events_file)}, cmd=[sys.executable, "-X", "importtime", *HOOK[1:]])
    loaded = {line.split("|")[-1].strip() for line in cp.stderr.decode().splitlines() if line.startswith("import time:")}
    assert loaded & {"json", "re", "enum", "collections", "functools"} == set()
    assert json.loads(events_file.read_text())["event"] == "stop"
