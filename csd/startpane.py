"""A launch's first half, synchronous: check everything, claim the name, write the worker's files and start its
pane, with no event loop and none of the engine imported (prepare). ``csd launch`` runs it first
(csd/commands/manage.py), so the worker starts up while csd imports the engine; csd/lifecycle.py then waits
for session_start. What the worker is started with lives here too: its command line (settings, hooks), its
environment (the pins), its meta.

prepare makes the pane only on the common path: a launch (not adopt) of a name with no files and no claim
left behind. Otherwise it checks and claims, and csd/lifecycle.py does the rest with the event loop (clearing
what an interrupted launch or a gone worker left, respawning adopt's pane), then calls Prepared.start_pane.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import uuid
from pathlib import Path

from csd import __version__, config, tmux
from csd.clock import now_iso
from csd.errors import CsdError, UsageError
from csd.hook import HOOK_TO_EVENT
from csd.proc import proc_start, signals_held
from csd.workers import LaunchClaim, Meta, WorkersDir, check_name, consent_path, has_consent

#: Environment variables that select a provider or auth path: each is pinned to the controller's own
#: value, or to empty when the controller has none (the worker's environment is exactly the one
#: launch hands over, csd/envfile.py, never the tmux server's, which may hold a stale value).
PINNED_PROVIDER_VARS = (
    "CLAUDE_CODE_PROVIDER_MANAGED_BY_HOST",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
    "CLAUDE_CODE_USE_FOUNDRY",
    "CLAUDE_CODE_USE_ANTHROPIC_AWS",
    "CLAUDE_CODE_USE_MANTLE",
)
#: Never passed to a worker: tmux's own variables (a worker is not inside the controller's tmux) and
#: the IDE port (a worker must not attach to the controller's IDE).
#: TERM and TERM_PROGRAM are the pane's (tmux sets them); the controller's (e.g. an IDE's) are not the worker's.
DROPPED_VARS = frozenset({"TMUX", "TMUX_PANE", "CLAUDE_CODE_SSE_PORT", "COLUMNS", "LINES", "TERM_PROGRAM", "TERM_PROGRAM_VERSION"})
HOOK_EVENTS = tuple(HOOK_TO_EVENT)
#: What Claude Code runs for each event (and as the statusLine command): the stub that runs csd/hook.py.
RUN_HOOK = "run_hook.py"


PANE_WIDTH, PANE_HEIGHT = 200, 50


def hook_command() -> str:
    """The hook as launch configures it: this interpreter, isolated (-I -S: no site, fast start)."""
    hook = Path(__file__).resolve().parent / RUN_HOOK
    return f"{shlex.quote(sys.executable)} -I -S {shlex.quote(str(hook))}"


def settings_json() -> str:
    """Launch's ``--settings``: the hooks, and the statusLine command that keeps the worker's cost file
    (hook.py ``--statusline``; it prints nothing, so it replaces a status line of the user's own)."""
    entry = [{"matcher": "*", "hooks": [{"type": "command", "command": hook_command(), "timeout": 30}]}]
    return json.dumps({
        "skipDangerousModePermissionPrompt": True,
        "hooks": {e: entry for e in HOOK_EVENTS},
        "statusLine": {"type": "command", "command": hook_command() + " --statusline"},
    })


def claude_argv(claude_bin: str, session_flag: list[str], extra: list[str]) -> list[str]:
    return [
        claude_bin,
        *session_flag,
        "--settings",
        settings_json(),
        "--dangerously-skip-permissions",
        "--disallowed-tools",
        "AskUserQuestion",
        *extra,
    ]


def worker_env(wdir: WorkersDir, meta: Meta, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the controller's own, with the pins and csd's variables."""
    environ = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in environ.items() if k.isidentifier() and k not in DROPPED_VARS}
    env["CLAUDE_CODE_SSE_PORT"] = ""
    for var in PINNED_PROVIDER_VARS:
        env[var] = environ.get(var, "")
    env["CSD_WORKER"] = meta.tmux_name
    env["CSD_WORKERS_DIR"] = str(wdir.path)
    env["CSD_EVENTS_FILE"] = str(wdir.events_path(meta.session_id))
    return env


def pane_command(wdir: WorkersDir, meta: Meta, argv: list[str], env: dict[str, str]) -> list[str]:
    """What the pane runs: csd/envfile.py, which takes the environment from a 0600 file (written here)
    and execs ``argv`` in ``meta.cwd``. Nothing of the environment is in any process's arguments."""
    from csd import envfile

    path = wdir.env_path(meta.session_id)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a launch killed before its pane started (adopt reuses the session id)
    envfile.write(str(path), env)
    return [sys.executable, "-I", "-S", os.path.abspath(envfile.__file__), str(path), meta.cwd, "--", *argv]


def resolve_claude_bin() -> str:
    name = config.get("CSD_CLAUDE_BIN")
    found = shutil.which(name)
    if found is None:
        raise CsdError(
            f"worker program {name!r} not found (CSD_CLAUDE_BIN); install Claude Code "
            "(npm install -g @anthropic-ai/claude-code) or set CSD_CLAUDE_BIN, e.g. to csd-simworker"
        )
    return os.path.abspath(found)


def check_cwd(cwd: str) -> str:
    path = os.path.realpath(os.path.expanduser(cwd))
    if not os.path.isdir(path):
        raise UsageError(f"working directory {cwd!r} does not exist or is not a directory")
    # tmux starts a pane it cannot chdir into in another dir without a word: refuse up front
    if not os.access(path, os.R_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        raise UsageError(f"working directory {cwd!r} is not readable and searchable by you (uid {os.geteuid()}); fix its permissions or pick another")
    return path


def check_consent() -> None:
    if not has_consent():
        raise CsdError(f"no consent recorded at {consent_path()}; run once: csd grant-consent")


def new_meta(name: str, cwd: str, claude_bin: str, socket: str | None, invocation: list[str], resume: str | None) -> Meta:
    return Meta(
        tmux_name=name,
        session_id=resume or str(uuid.uuid4()),
        cwd=cwd,
        started_at=now_iso(),
        invocation=tuple(invocation),
        tmux_socket=socket or "",
        claude_bin=claude_bin,
        csd_version=__version__,
    )


def fresh_events_file(path: Path) -> None:
    """An empty events file for a new incarnation: lines left by an earlier process of the same session id
    (a workers dir only partly cleaned) would otherwise be folded into this worker's state."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


#: Options that make Claude Code answer one prompt and exit: a worker is an interactive session.
PRINT_FLAGS = ("-p", "--print")


def check_claude_args(extra: list[str]) -> None:
    """Refuse claude options that cannot give a worker, before anything is started."""
    for arg in extra:
        if arg in PRINT_FLAGS or arg.startswith("--print="):
            raise UsageError(
                f"claude option {arg!r} runs one prompt and exits, so it cannot give a worker; launch without it and "
                "use the shim's converse (or run claude -p yourself)"
            )


def session_taken(name: str) -> CsdError:
    return CsdError(f"a tmux session named {name!r} already exists (not a csd worker); pick another name")


class Prepared:
    """A launch checked and its name claimed (``claim``, held until the launch ends), with the worker's meta; once
    start_pane ran, its files written and its pane started (``created_session``). ``owned``: csd/lifecycle.py's
    start_worker has taken it over and undoes it on failure; until then, undo() does (synchronously)."""

    def __init__(self, wdir: WorkersDir, claim: LaunchClaim, meta: Meta, extra: list[str], resume: str | None) -> None:
        self.wdir, self.claim, self.meta, self.extra, self.resume = wdir, claim, meta, extra, resume
        self.socket = meta.tmux_socket or None
        self.wrote = False  # write_files ran: undo removes the worker's files
        self.created_session = False
        self.owned = False

    def write_files(self, respawn: bool = False) -> list[str]:
        """The claim's record (``respawn``: adopt onto a session that is there), the meta, an empty events file and
        the env file; returns the pane's command."""
        meta = self.meta
        self.claim.record(meta.session_id, respawn)
        self.wrote = True
        self.wdir.write_meta(meta)
        fresh_events_file(self.wdir.events_path(meta.session_id))
        flag = ["--resume", meta.session_id] if self.resume else ["--session-id", meta.session_id]
        return pane_command(self.wdir, meta, claude_argv(meta.claude_bin, flag, self.extra), worker_env(self.wdir, meta))

    def start_pane(self) -> Meta:
        """Write the files and start the worker in a new tmux session; its process (pid and start time) goes into
        the meta: from then on the worker is that process (a pane that runs anything else is not the worker)."""
        argv = self.write_files()
        self.created_session = True  # set first: an interrupt may land after tmux made the session but before it returned
        pane = tmux.new_session_sync(self.meta.tmux_name, self.meta.cwd, argv, PANE_WIDTH, PANE_HEIGHT, self.socket)
        if pane is not None and pane.alive:  # else it exited already: start-up reports it
            self.meta = self.meta.replace(pid=pane.pid, proc_start=proc_start(pane.pid), pane=pane.pane_id)
            self.wdir.write_meta(self.meta)
        return self.meta

    def undo(self) -> None:
        """Remove what prepare made (session, files) and release the claim: for a failure before lifecycle took over."""
        try:
            if self.created_session:
                with contextlib.suppress(CsdError):
                    tmux.kill_session_sync(self.meta.tmux_name, self.socket)
            if self.wrote:
                self.wdir.remove_files(self.meta)
        finally:
            self.claim.release()


def prepare(wdir: WorkersDir, name: str, cwd: str, extra: list[str], invocation: list[str], resume: str | None = None) -> Prepared:
    """Check everything (name, claude options, cwd, consent, the worker program), claim the name, and on the common
    path (a launch, no files of that name, no claim a dead launcher left) refuse a tmux session of that name or
    start the pane. Nothing is left behind when it raises; a claim held by another launch fails it at once."""
    check_name(name)
    check_claude_args(extra)
    real_cwd = check_cwd(cwd)
    check_consent()
    claude_bin = resolve_claude_bin()
    wdir = wdir.ensure()
    claim: LaunchClaim | None = None
    prep: Prepared | None = None
    try:
        with signals_held():  # an interrupt comes once the claim is made and named here, for the undo to release it
            claim = LaunchClaim(wdir, name)
        prep = Prepared(wdir, claim, new_meta(name, real_cwd, claude_bin, config.tmux_socket() or None, invocation, resume),
                        extra, resume)
        if resume is None and claim.previous is None and all(m.tmux_name != name for m in wdir.metas()):
            if tmux.has_session_sync(name, prep.socket):
                raise session_taken(name)
            prep.start_pane()
    except BaseException:
        if prep is not None:
            prep.undo()
        elif claim is not None:
            claim.release()
        raise
    return prep
