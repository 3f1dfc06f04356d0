"""The plugin skill stays in step with `csd help`: every command, event, state, variable and exit code;
`csd plugin-dir` and `csd skill` hand over that plugin and skill, and the repository is the same plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from csd import bundled
from csd.commands.table import help_text, parsers
from csd.errors import EXIT_CODES
from csd.config import VARS
from csd.errors import CsdError
from csd.events import EVENT_NAMES
from csd.states import STATES
from support import csd

ROOT = Path(__file__).resolve().parent.parent
SKILL = (bundled.PLUGIN_DIR / bundled.SKILL).read_text()


def test_skill_has_frontmatter() -> None:
    assert SKILL.startswith("---\nname: driving-claude-code-sessions\ndescription: ")


def test_every_command_in_help_is_in_the_skill() -> None:
    top, per = parsers()
    text = help_text()
    for cmd in top:
        assert f"csd {cmd}" in text and f"csd {cmd}" in SKILL, cmd
    for cmd in per:
        assert cmd in text and f"`{cmd}`" in SKILL, cmd


def test_every_command_the_skill_uses_exists() -> None:
    top, per = parsers()
    code = "\n".join(re.findall(r"```sh\n(.*?)```", SKILL, re.S) + re.findall(r"`([^`\n]+)`", SKILL))
    assert code.count("csd ") > 20
    for cmd in re.findall(r"\bcsd ([a-z][a-z-]+)", code):
        assert cmd in top, cmd
    for cmd in re.findall(r"\$[WAB] ([a-z][a-z-]+)", code):
        assert cmd in per, cmd
    for cmd in re.findall(r"bin/[\w$-]+ ([a-z][a-z-]+)", code):
        assert cmd in per, cmd


def test_events_states_variables_and_exit_codes_match() -> None:
    for name in (*EVENT_NAMES, *STATES):
        assert name in SKILL, name
    for var in VARS:
        assert var.name in SKILL and var.name in help_text(), var.name
    for code, _ in EXIT_CODES:
        assert f"`{code}`" in SKILL, code


def test_plugin_manifest_and_hooks() -> None:
    manifest = json.loads((bundled.PLUGIN_DIR / bundled.MANIFEST).read_text())
    assert manifest["name"] == "csd"
    assert "version" not in manifest  # the version has one home, csd/__init__.py
    hooks = json.loads((bundled.PLUGIN_DIR / bundled.HOOKS).read_text())["hooks"]
    assert set(hooks) == {"SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification", "Stop",
                          "StopFailure", "SubagentStop", "PreCompact", "SessionEnd"}
    for groups in hooks.values():
        assert groups[0]["hooks"][0]["command"] == '"${CLAUDE_PLUGIN_ROOT}/hooks/csd-hook"'
    assert os.stat(bundled.PLUGIN_DIR / bundled.HOOK_ENTRY).st_mode & stat.S_IXUSR


def test_plugin_dir_prints_a_directory_claude_can_load() -> None:
    proc = csd("plugin-dir")
    assert (proc.returncode, proc.stderr) == (0, b"")
    out = Path(proc.stdout.decode().rstrip("\n"))
    assert out.is_absolute() and proc.stdout.decode().count("\n") == 1
    assert (out.parent / "hook.py").is_file()  # inside the csd package that ran (a clone's or an installed one)
    for part in bundled.PARTS:
        assert (out / part).read_bytes() == (bundled.PLUGIN_DIR / part).read_bytes(), part
    assert [p.name for p in (out / "skills").glob("*/SKILL.md")] == ["SKILL.md"]


def test_skill_prints_the_skill() -> None:
    proc = csd("skill")
    assert (proc.returncode, proc.stderr, proc.stdout.decode()) == (0, b"", SKILL)


def test_an_incomplete_plugin_is_one_clear_error(tmp_path: Path) -> None:
    """A broken install (a part of the plugin missing) names the missing part."""
    shutil.copytree(bundled.PLUGIN_DIR, tmp_path / "plugin")
    assert bundled.plugin_dir(tmp_path / "plugin") == tmp_path / "plugin"
    (tmp_path / "plugin" / bundled.HOOKS).unlink()
    with pytest.raises(CsdError) as exc:
        bundled.plugin_dir(tmp_path / "plugin")
    assert str(exc.value) == f"the plugin in {tmp_path / 'plugin'} is incomplete (missing: hooks/hooks.json); reinstall claude-session-driver"
    (tmp_path / "plugin" / bundled.HOOKS).write_text("{}")
    (tmp_path / "plugin" / bundled.HOOK_ENTRY).chmod(0o644)
    with pytest.raises(CsdError, match="hooks/csd-hook is not executable"):
        bundled.plugin_dir(tmp_path / "plugin")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout: the repository's plugin links are not in an sdist")
def test_the_repository_is_the_same_plugin() -> None:
    """.claude-plugin, hooks and skills at the root are links into csd/plugin: one copy of each file."""
    for top in (".claude-plugin", "hooks", "skills"):
        assert (ROOT / top).is_symlink(), top
        assert (ROOT / top).resolve() == ROOT / "csd" / "plugin" / top
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    copies = [f for f in tracked if f.rsplit("/", 1)[-1] in ("plugin.json", "hooks.json", "csd-hook", "SKILL.md")]
    assert sorted(copies) == sorted(str(Path("csd", "plugin", p)) for p in (bundled.MANIFEST, bundled.HOOKS, bundled.HOOK_ENTRY, bundled.SKILL))
