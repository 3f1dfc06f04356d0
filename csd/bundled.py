"""The Claude Code plugin shipped inside the package (manifest, hooks, controller skill): where it is.

The plugin lives in ``csd/plugin/`` so that an installed csd carries it; the repository's
``.claude-plugin``, ``hooks`` and ``skills`` are symlinks to it, so the repository is the same plugin
and there is one copy of each file.
"""

from __future__ import annotations

import os
from pathlib import Path

from csd.errors import CsdError

PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"
SKILL_NAME = "driving-claude-code-sessions"
MANIFEST = Path(".claude-plugin", "plugin.json")
HOOKS = Path("hooks", "hooks.json")
HOOK_ENTRY = Path("hooks", "csd-hook")
SKILL = Path("skills", SKILL_NAME, "SKILL.md")
#: what ``claude --plugin-dir`` needs from the directory
PARTS = (MANIFEST, HOOKS, HOOK_ENTRY, SKILL)


def plugin_dir(root: Path = PLUGIN_DIR) -> Path:
    """The plugin's directory, after checking that every part of it is there (a broken install says what is missing)."""
    missing = [str(p) for p in PARTS if not (root / p).is_file()]
    if missing:
        raise CsdError(f"the plugin in {root} is incomplete (missing: {', '.join(missing)}); reinstall claude-session-driver")
    if not os.access(root / HOOK_ENTRY, os.X_OK):  # Claude Code runs it as a command
        raise CsdError(f"the plugin's hook {root / HOOK_ENTRY} is not executable; reinstall claude-session-driver or chmod +x it")
    return root


def skill_text() -> str:
    return (plugin_dir() / SKILL).read_text(encoding="utf-8")
