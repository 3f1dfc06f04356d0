"""The plugin an installed csd hands over (``csd plugin-dir``), and the repository as the same plugin through
its links, loaded by the real Claude Code: each event is recorded once and the model is offered csd's skill."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from csd.bundled import SKILL_NAME

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("where", ["plugin-dir", "repository"])
def test_the_real_claude_code_loads_the_plugin_and_its_skill(real, where: str) -> None:
    if where == "repository" and not (REPO / "skills").is_symlink():
        pytest.skip("not a git checkout: the repository's plugin links are not in an sdist")
    proc = real.csd("plugin-dir")
    assert proc.returncode == 0, proc.stderr
    pdir = proc.stdout.rstrip("\n") if where == "plugin-dir" else str(REPO)
    # csd on PATH, as an installed csd is, so the plugin's hook could find csd's interpreter and record
    env = {**real.env, "PATH": f"{Path(sys.executable).parent}:{real.env['PATH']}"}
    name = f"plug-{where}"
    start = len(real.api.requests)
    real.started(name, real.csd("launch", name, str(real.proj), "--", "--plugin-dir", pdir, env=env))
    conv = real.shim(name, "converse", "TOOL:Bash:echo once", "60")
    assert conv.returncode == 0, conv.stderr
    names = [e["event"] for e in real.events(name)]
    assert names == ["session_start", "user_prompt_submit", "pre_tool_use", "post_tool_use", "stop"], names
    # the skill reaches the model: Claude Code lists it (under the plugin's name) in the turn's request
    turn = real.api.wait_for(lambda r: "TOOL:Bash:echo once" in r.get("last_user_text", ""), start=start)
    assert f"csd:{SKILL_NAME}" in json.dumps(turn["body"]), "the skill is not offered to the model"
    assert real.shim(name, "stop").returncode == 0
