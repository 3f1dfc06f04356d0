"""``csd demo`` runs the whole loop from a clean environment and leaves nothing behind, even when interrupted or failing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from csd.demo import fan_out_seconds

DEMO = [sys.executable, "-m", "csd", "demo"]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any csd configuration (nor IS_SANDBOX): the demo must bring its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSD_") and k not in ("IS_SANDBOX", "CLAUDE_CONFIG_DIR")}
    env.update(HOME=str(home), **extra)
    return env


def sandbox_of(stderr: str) -> tuple[Path, Path]:
    """The sandbox dir and tmux socket the demo reports on stderr."""
    root = re.search(r"sandbox (/\S+):", stderr)
    socket = re.search(r"tmux socket (/\S+)", stderr)
    assert root and socket, stderr
    return Path(root.group(1)), Path(socket.group(1))


def processes_mentioning(marker: str) -> list[str]:
    """Live processes whose command line or environment names ``marker`` (the demo's unique sandbox path)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{entry.name}/{part}").read_bytes()
            except OSError:
                continue
            if marker.encode() in data:
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {cmd[:120]}")
                break
    return found


def assert_nothing_left(root: Path, socket: Path, home: Path) -> None:
    assert not root.exists(), f"sandbox {root} left behind"
    assert not socket.exists(), f"tmux socket {socket} left behind"
    probe = subprocess.run(["tmux", "-S", str(socket), "list-sessions"], capture_output=True, text=True)
    assert probe.returncode != 0, f"tmux server still running: {probe.stdout}"
    assert processes_mentioning(str(root)) == []
    assert list(home.iterdir()) == [], "the demo wrote into the caller's HOME"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME standing for the user's: the demo must not grant consent in it or write anything there."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_demo_runs_the_whole_loop_and_leaves_nothing(home: Path) -> None:
    proc = subprocess.run([*DEMO, "--no-table"], env=clean_env(home), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # narration is on stderr; the demo has no answer to print
    err = proc.stderr
    for step in ("[1/6] launch 3 workers", "[2/6] converse", "[3/6] fan out", "[4/6] read_turn", "[5/6] stop", "[6/6] check"):
        assert step in err
    assert "< Hello! I am a simulated Claude Code worker." in err
    assert "< DONE: 6 times 7 is 42" in err
    assert "wait_any: demo-3 finished first" in err  # the shortest prompt went to the last worker
    assert "**Tool: Bash**" in err  # read_turn's markdown
    assert "left nothing behind" in err
    root, socket = sandbox_of(err)
    assert_nothing_left(root, socket, home)  # includes: no simulated worker, hook or tmux server of the demo


def test_ctrl_c_during_the_demo_cleans_up(home: Path) -> None:
    """Interrupted mid-fan-out: exit 130, and the sandbox, its tmux server and its workers are gone."""
    proc = subprocess.Popen([*DEMO, "--no-table"], env=clean_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen += line
            if line.startswith("  sent SLEEP:"):  # the workers are mid-turn now
                break
        else:
            pytest.fail(f"the demo ended before the fan-out: {seen}")
        root, socket = sandbox_of(seen)
        assert root.exists()
        proc.send_signal(signal.SIGINT)
        out, rest = proc.communicate(timeout=60)
        assert out == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, seen + rest
    assert "stopped early: cleaning up" in rest
    assert_nothing_left(root, socket, home)


def test_a_failing_demo_still_removes_its_sandbox(home: Path, tmp_path: Path) -> None:
    """No tmux on PATH: launch fails with a clear error (exit 1) and the sandbox is removed anyway."""
    bare = tmp_path / "bin"
    bare.mkdir()
    proc = subprocess.run([*DEMO, "--no-table"], env=clean_env(home, PATH=str(bare)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "tmux is not installed" in proc.stderr
    root, socket = sandbox_of(proc.stderr)
    assert_nothing_left(root, socket, home)


def test_bad_worker_count_is_a_usage_error(home: Path) -> None:
    proc = subprocess.run([*DEMO, "--workers", "0"], env=clean_env(home), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--workers 0" in proc.stderr and "1 to" in proc.stderr


def test_fan_out_gives_each_worker_a_different_length() -> None:
    assert fan_out_seconds(3) == [3.0, 2.0, 1.0]
    longest_first = fan_out_seconds(12)
    assert len(set(longest_first)) == 12 and longest_first == sorted(longest_first, reverse=True)
    assert max(longest_first) <= 4.0 and min(longest_first) == 1.0


def test_demo_without_the_console_script_runs_the_simworker_module(home: Path, tmp_path: Path) -> None:
    """An interpreter with no csd-simworker beside it (csd run from a source tree): the demo wraps ``-m csd.sim``."""
    import site

    import csd

    bindir = tmp_path / "py" / "bin"
    bindir.mkdir(parents=True)
    python = bindir / "python"
    python.symlink_to(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    path = os.pathsep.join([*site.getsitepackages(), str(Path(csd.__file__).resolve().parent.parent)])
    proc = subprocess.run(
        [str(python), "-m", "csd", "demo", "--no-table", "--workers", "1"],
        env=clean_env(home, PYTHONPATH=path), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    root, socket = sandbox_of(proc.stderr)
    assert f"simulated worker {root}/bin/csd-simworker" in proc.stderr
    assert_nothing_left(root, socket, home)
