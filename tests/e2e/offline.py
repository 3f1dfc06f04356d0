"""Build the offline environment in which one real Claude Code worker runs against the mock API.

This is the recipe of shared/claude-code/FACTS.md §3::

    env = offline_env(base_url=api.url, root=tmp_path / "w1", trusted=[project_dir])
    subprocess.run(["tmux", ..., "env", "-i", *[f"{k}={v}" for k, v in env.items()], claude, ...])

``offline_env`` creates (under ``root``) a fresh HOME with a seeded ``~/.claude.json``
(``hasCompletedOnboarding`` plus ``hasTrustDialogAccepted`` for each trusted dir, keyed by its real path) and a
private 0700 ``CLAUDE_CODE_TMPDIR``, and returns the complete environment as a dict: pass it with ``env -i`` (or
as ``subprocess``'s ``env=``) so nothing of the caller's environment leaks into the worker.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["offline_env", "seed_claude_json", "env_args", "NO_TRAFFIC_VARS", "DEFAULT_TOKEN"]

DEFAULT_TOKEN = "tok-mock-e2e-0000"

# The five variables that, together, stop every connection except the one to ANTHROPIC_BASE_URL
# (zero DNS queries observed; see FACTS §3 "Traffic").
NO_TRAFFIC_VARS: dict[str, str] = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL": "1",
}

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def seed_claude_json(home: str | os.PathLike, trusted: Iterable[str | os.PathLike] = (),
                     extra: Mapping | None = None) -> Path:
    """Write ``HOME/.claude.json`` with onboarding done and trust for each dir in ``trusted``.

    Trust is keyed by the real path (the CLI resolves symlinks; trust on a parent covers its subdirs).
    An existing file is merged into, so re-seeding keeps what the CLI wrote.
    """
    path = Path(home) / ".claude.json"
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    data["hasCompletedOnboarding"] = True
    projects = data.setdefault("projects", {})
    for d in trusted:
        for key in {os.path.abspath(os.fspath(d)), os.path.realpath(os.fspath(d))}:
            projects.setdefault(key, {})["hasTrustDialogAccepted"] = True
    if extra:
        data.update(extra)
    tmp = path.with_name(".claude.json.seed-tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def offline_env(
    base_url: str,
    root: str | os.PathLike | None = None,
    trusted: Iterable[str | os.PathLike] = (),
    *,
    token: str = DEFAULT_TOKEN,
    sandbox: bool | None = None,
    path: str | None = None,
    extra: Mapping[str, str] | None = None,
    term: str = "xterm-256color",
    lang: str = "C.UTF-8",
) -> dict[str, str]:
    """Create HOME and CLAUDE_CODE_TMPDIR under ``root`` and return the worker's full environment.

    base_url  the mock's URL, e.g. ``MockAPI().url``.
    root      a directory to hold ``home/`` and ``tmp/`` (created; default: a new temp dir).
    trusted   dirs to pre-accept in the workspace-trust dialog (pass the worker's cwd, or a parent of it).
    token     sent as ``ANTHROPIC_AUTH_TOKEN`` (Bearer): never triggers the API-key dialog.
    sandbox   set ``IS_SANDBOX=1``; default: only when running as root, where
              ``--dangerously-skip-permissions`` refuses to start without it. ``False`` omits it.
    path      ``PATH`` for the worker (default: the caller's PATH, else a standard one).
    extra     more variables (e.g. ``{"CSD_WORKER": "w1"}``); they win over the defaults.
    """
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="csd-e2e-"))
    root.mkdir(parents=True, exist_ok=True)
    home = root / "home"
    home.mkdir(exist_ok=True)
    tmpdir = root / "tmp"
    tmpdir.mkdir(exist_ok=True)
    os.chmod(tmpdir, 0o700)
    seed_claude_json(home, trusted)

    env: dict[str, str] = {
        "HOME": str(home),
        "USER": os.environ.get("USER") or _user(),
        "PATH": path or os.environ.get("PATH") or _DEFAULT_PATH,
        "SHELL": "/bin/bash",
        "TERM": term,
        "LANG": lang,
        "ANTHROPIC_BASE_URL": base_url.rstrip("/"),
        "ANTHROPIC_AUTH_TOKEN": token,
        "CLAUDE_CODE_TMPDIR": str(tmpdir),
        **NO_TRAFFIC_VARS,
    }
    if sandbox is None:
        sandbox = os.geteuid() == 0
    if sandbox:
        env["IS_SANDBOX"] = "1"
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return "user"


def env_args(env: Mapping[str, str]) -> list[str]:
    """``env -i K=V ...`` argv prefix for a tmux command line."""
    return ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
