"""The simulated worker's files outside its transcript: where Claude Code keeps them (config dir, transcripts,
agents' output files), the workspace trust in ``~/.claude.json``, and the settings it reads at start-up."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The one rule for transcripts' paths and project-dir names, shared with csd (pure, standard library only).
from csd.transcript import encode_cwd, transcript_path


def claude_config_dir(env: Mapping[str, str]) -> Path:
    """Claude Code's config dir in ``env``: $CLAUDE_CONFIG_DIR, else $HOME/.claude (csd.config.claude_dir reads
    csd's own environment the same way; this program is told its environment, so tests can hand it one)."""
    if env.get("CLAUDE_CONFIG_DIR"):
        return Path(env["CLAUDE_CONFIG_DIR"])
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".claude"


def transcript_path_for(env: Mapping[str, str], cwd: str, session_id: str) -> Path:
    """A session's transcript under the config dir ``env`` names: csd's rule, the one Claude Code follows."""
    return Path(transcript_path(str(claude_config_dir(env)), cwd, session_id))


def latest_session(env: Mapping[str, str], cwd: str) -> str | None:
    """The session of ``cwd`` whose transcript changed last (what ``--continue`` resumes)."""
    folder = transcript_path_for(env, cwd, "x").parent
    try:
        candidates = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return None
    return candidates[-1].stem if candidates else None


def task_output_path(env: Mapping[str, str], cwd: str, session_id: str, agent_id: str) -> Path:
    """Where Claude Code puts a background agent's output file (a link to the sub-agent's transcript)."""
    return (task_tmp_dir(env) / f"claude-{os.getuid()}" / encode_cwd(cwd) / session_id / "tasks"
            / f"{agent_id}.output")


def task_tmp_dir(env: Mapping[str, str]) -> Path:
    """The base of agents' output files: $CLAUDE_CODE_TMPDIR, else /tmp."""
    return Path(env.get("CLAUDE_CODE_TMPDIR") or "/tmp")


def global_config_path(env: Mapping[str, str]) -> Path:
    """Claude Code's global config file: $CLAUDE_CONFIG_DIR/.claude.json, else $HOME/.claude.json."""
    base = env.get("CLAUDE_CONFIG_DIR") or env.get("HOME") or os.path.expanduser("~")
    return Path(base) / ".claude.json"


def workspace_trusted(env: Mapping[str, str], cwd: str) -> bool:
    """True when ~/.claude.json has projects[cwd or a parent].hasTrustDialogAccepted, as the real CLI checks."""
    try:
        config = json.loads(global_config_path(env).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    projects = config.get("projects") if isinstance(config, dict) else None
    if not isinstance(projects, dict):
        return False
    here = Path(cwd)
    for folder in (here, *here.parents):
        entry = projects.get(str(folder))
        if isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True:
            return True
    return False


# What the real CLI puts in a project entry it creates when the trust dialog is accepted.
_PROJECT_DEFAULTS: dict[str, Any] = {
    "allowedTools": [], "mcpContextUris": [], "mcpServers": {}, "enabledMcpjsonServers": [],
    "disabledMcpjsonServers": [], "hasClaudeMdExternalIncludesApproved": False,
    "hasClaudeMdExternalIncludesWarningShown": False,
}


def record_trust(env: Mapping[str, str], cwd: str) -> bool:
    """Set projects[cwd].hasTrustDialogAccepted in ~/.claude.json: merged, written atomically (temp + rename).

    A file that is there but not a JSON object is left alone (False): never clobber the user's config.
    """
    path = global_config_path(env)
    found = _read_config(path)
    if found is None:
        return False
    config, mode = found
    projects = config.setdefault("projects", {})
    if not isinstance(projects, dict):
        return False
    entry = projects.setdefault(cwd, {})
    if not isinstance(entry, dict):
        entry = projects[cwd] = {}
    for key, value in _PROJECT_DEFAULTS.items():
        entry.setdefault(key, value)
    entry["hasTrustDialogAccepted"] = True
    return _write_atomically(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n", mode)


def _read_config(path: Path) -> tuple[dict[str, Any], int] | None:
    """The config object in ``path`` ({} when there is none yet) and the file's mode; None when it is not one."""
    config: Any = {}
    mode = 0o600
    try:
        text: str | None = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        text = None
    except OSError:
        return None
    if text is not None and text.strip():
        try:
            config = json.loads(text)
        except ValueError:
            return None
    return (config, mode) if isinstance(config, dict) else None


def _write_atomically(path: Path, text: str, mode: int) -> bool:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        return False
    return True


def load_settings_arg(arg: str) -> dict[str, Any]:
    """A --settings value: inline JSON, or the path of a JSON file."""
    text = arg if arg.lstrip().startswith("{") else Path(arg).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("settings must be a JSON object")
    return data


def user_skips_bypass_dialog(env: Mapping[str, str]) -> bool:
    """The user settings' skipDangerousModePermissionPrompt.

    Read-only: the real CLI persists the bypass answer there; the simulator honours it but never writes it.
    """
    try:
        settings = json.loads((claude_config_dir(env) / "settings.json").read_text(encoding="utf-8"))
        return settings.get("skipDangerousModePermissionPrompt") is True
    except (OSError, ValueError, AttributeError):
        return False
