"""The plugin skill stays in step with `csd help`: every command, event, state, variable and exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from csd.cli import EXIT_CODES, build_parsers, help_text
from csd.config import VARS
from csd.events import EVENT_NAMES
from csd.states import STATES

ROOT = Path(__file__).resolve().parent.parent
SKILL = (ROOT / "skills" / "driving-claude-code-sessions" / "SKILL.md").read_text()


def test_skill_has_frontmatter() -> None:
    assert SKILL.startswith("---\nname: driving-claude-code-sessions\ndescription: ")


def test_every_command_in_help_is_in_the_skill() -> None:
    top, per = build_parsers()
    text = help_text()
    for cmd in top:
        assert f"csd {cmd}" in text and f"csd {cmd}" in SKILL, cmd
    for cmd in per:
        assert cmd in text and f"`{cmd}`" in SKILL, cmd


def test_every_command_the_skill_uses_exists() -> None:
    top, per = build_parsers()
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
    manifest = json.loads((ROOT / ".claude-plugin" / "plugin.json").read_text())
    assert manifest["name"] == "csd"
    hooks = json.loads((ROOT / "hooks" / "hooks.json").read_text())["hooks"]
    assert set(hooks) == {"SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Notification", "Stop",
                          "StopFailure", "SubagentStop", "PreCompact", "SessionEnd"}
    for groups in hooks.values():
        assert groups[0]["hooks"][0]["command"] == '"${CLAUDE_PLUGIN_ROOT}/hooks/csd-hook"'
