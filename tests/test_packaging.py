"""The distribution, as a user gets it: built from a clean clone, checked, installed into a fresh venv and as a
tool (uv tool install, pipx install), where csd runs, hands over its plugin, and the plugin's hook records.

Builds what is committed (a clone of HEAD), not the working tree. Needs PyPI (the build backend and csd's
dependencies); uv and pipx come with the test extra.
"""

from __future__ import annotations

import email.parser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import csd
from csd import bundled

ROOT = Path(__file__).resolve().parent.parent
NAME = "claude-session-driver"
PLUGIN_FILES = [str(Path("csd", "plugin", p)) for p in bundled.PARTS]

pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists() or not shutil.which("git"),
                                reason="not a git checkout: the packaging test builds from a clone of it")


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


def run(*argv: str | Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """sdist and wheel as `python -m build` makes them from a fresh clone (the wheel is built from the sdist)."""
    tmp = tmp_path_factory.mktemp("build")
    run("git", "clone", "--quiet", "--no-hardlinks", ROOT, tmp / "src")
    run(sys.executable, "-m", "build", "--outdir", tmp / "dist", tmp / "src")
    (wheel,) = (tmp / "dist").glob("*.whl")
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    return Dist(wheel, sdist)


def install_env(bin_dir: Path) -> dict[str, str]:
    """A user's environment: the install's bin first on PATH, no csd settings, no venv of the tests'."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSD_", "VIRTUAL_ENV", "PYTHON")) and k != "IS_SANDBOX"}
    return {**env, "PATH": f"{bin_dir}:{env['PATH']}"}


def user_env(home: Path, bin_dir: Path) -> dict[str, str]:
    """The same with a HOME of its own, for running csd (installers keep the real one: its download cache)."""
    home.mkdir(parents=True, exist_ok=True)
    return {**install_env(bin_dir), "HOME": str(home)}


def test_metadata_passes_twine_check_and_says_what_it_is(dist: Dist) -> None:
    run(sys.executable, "-m", "twine", "check", "--strict", dist.wheel, dist.sdist)
    assert dist.wheel.name == f"claude_session_driver-{csd.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(dist.wheel) as z:
        meta = email.parser.Parser().parsestr(z.read(f"claude_session_driver-{csd.__version__}.dist-info/METADATA").decode())
        names = z.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
    assert (meta["Name"], meta["Version"], meta["License-Expression"], meta["Requires-Python"]) == (NAME, csd.__version__, "MIT", ">=3.11")
    assert meta["Summary"].startswith("Drive Claude Code CLI sessions as workers in tmux")
    assert meta.get_all("License-File") == ["LICENSE"] and f"claude_session_driver-{csd.__version__}.dist-info/licenses/LICENSE" in names
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert set(urls) == {"Homepage", "Repository", "Issues", "Changelog"}
    assert "Programming Language :: Python :: 3.11" in meta.get_all("Classifier")
    assert meta["Description-Content-Type"] == "text/markdown" and "pipx install claude-session-driver" in meta.get_payload()
    for f in PLUGIN_FILES:
        assert f in names, f
    assert modes["csd/plugin/hooks/csd-hook"] & 0o111 == 0o111  # Claude Code runs it as a command
    with tarfile.open(dist.sdist) as t:
        top = f"claude_session_driver-{csd.__version__}/"
        members = {m.name.removeprefix(top) for m in t.getmembers()}
    for f in ["LICENSE", "CHANGELOG.md", "README.md", "statemachine.md", "tests/conftest.py", "tests/support.py", *PLUGIN_FILES]:
        assert f in members, f


def check_installed(bin_dir: Path, home: Path) -> None:
    """What the issue asks of any install: --version, the demo, the plugin dir (and its hook records)."""
    env = user_env(home, bin_dir)
    csd_bin = bin_dir / "csd"
    assert run(csd_bin, "--version", env=env).stdout == f"csd {csd.__version__}\n"
    demo = run(csd_bin, "demo", "--workers", "1", "--no-table", env=env, timeout=120)
    assert "left nothing behind" in demo.stderr
    out = run(csd_bin, "plugin-dir", env=env).stdout
    pdir = Path(out.rstrip("\n"))
    assert pdir.is_absolute() and ROOT not in pdir.parents, pdir  # the installed copy, not the repository
    for part in bundled.PARTS:
        assert (pdir / part).is_file(), part
    assert run(csd_bin, "skill", env=env).stdout == (bundled.PLUGIN_DIR / bundled.SKILL).read_text()
    # the plugin's hook, as Claude Code runs it, finds the installed csd's interpreter and hook.py
    wdir = home / "workers"
    wdir.mkdir()
    (wdir / "sid-1.meta").write_text("{}")
    hook_env = {**env, "CSD_WORKERS_DIR": str(wdir), "CLAUDE_PLUGIN_ROOT": str(pdir)}
    hooks = json.loads((pdir / bundled.HOOKS).read_text())["hooks"]
    command = hooks["Stop"][0]["hooks"][0]["command"].replace("${CLAUDE_PLUGIN_ROOT}", str(pdir))
    proc = subprocess.run(["sh", "-c", command], input=json.dumps({"hook_event_name": "Stop", "session_id": "sid-1"}),
                          capture_output=True, text=True, env=hook_env, timeout=30)
    assert (proc.returncode, proc.stderr) == (0, "")
    (line,) = (wdir / "sid-1.events.jsonl").read_text().splitlines()
    assert json.loads(line)["event"] == "stop"


def test_the_wheel_in_a_fresh_venv(dist: Dist, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", dist.wheel, env=install_env(venv / "bin"))
    check_installed(venv / "bin", tmp_path / "home")


@pytest.fixture(params=["uv", "pipx"])
def tool(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """(the command that installs a wheel as a tool, its environment, the bin dir it links into)."""
    name = request.param
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (it comes with the test extra: pip install '.[test]')")
    bin_dir = tmp_path / "tool-bin"
    env = install_env(bin_dir)
    if name == "uv":
        env.update(UV_TOOL_DIR=str(tmp_path / "uv-tools"), UV_TOOL_BIN_DIR=str(bin_dir))
        cmd = [sys.executable, "-m", "uv", "tool", "install", "--quiet", "--python", sys.executable]
    else:
        env.update(PIPX_HOME=str(tmp_path / "pipx"), PIPX_BIN_DIR=str(bin_dir), PIPX_MAN_DIR=str(tmp_path / "pipx-man"))
        cmd = [sys.executable, "-m", "pipx", "install", "--python", sys.executable]
    yield cmd, env, bin_dir


def test_the_wheel_as_a_tool(dist: Dist, tool: tuple[list[str], dict[str, str], Path], tmp_path: Path) -> None:
    cmd, env, bin_dir = tool
    run(*cmd, dist.wheel, env=env)
    assert sorted(p.name for p in bin_dir.iterdir()) == ["csd", "csd-simworker"]
    check_installed(bin_dir, tmp_path / "home")
