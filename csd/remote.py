"""Workers on other machines: the hosts file, one multiplexed SSH connection per host, the local records
and shims of remote workers, forwarding per-worker commands, and the per-host event stream behind
``list`` and the fan-out waits.

csd runs on each host and does there what it does here (tmux, hooks, inotify, its state machines); this
module only carries commands and answers across SSH. What crosses the boundary:

- the command line of the remote csd, every word shell-quoted (the remote side runs it through the
  login shell of the SSH user), with the host's ``env`` as ``env K=V`` in front;
- prompts on the channel's stdin, never in a command line (``send -`` / ``converse -`` on the remote);
- the remote csd's stdout and exit code, as they are; its stderr after it exits (a fault of SSH itself,
  exit 255, or of the remote shell, 126/127, is replaced by one line naming the host and what to do).

Every call to a host goes through one OpenSSH connection (``ControlMaster=auto``, ``ControlPersist``,
``ControlPath`` in a private 0700 dir), so after the first it costs one round trip and the remote csd's
start, not a handshake. ``BatchMode=yes``: never a password prompt; host keys are checked as the user's
ssh_config says (csd never turns that off).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from csd import __version__, config
from csd.console import err
from csd.errors import OK, USAGE, CsdError, HostCsd, HostUnreachable, UsageError

if TYPE_CHECKING:
    import argparse

    from csd.workers import WorkersDir

ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: ssh's own exit status for a fault of its own (connection, authentication, host key, dropped link).
SSH_FAULT = 255
#: The remote shell's "command not found" / "not executable" (csd itself never exits with either).
SHELL_NOT_FOUND, SHELL_NOT_EXECUTABLE = 127, 126
#: A re-established stream waits this long before each new attempt (a dropped link, sshd restarting).
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
#: The events that end a turn, for replaying a remote log after a reconnection (states.py has the rules).
TURN_ENDS = ("stop", "stop_failure", "session_end")




# ---------------------------------------------------------------- the hosts file


@dataclass(frozen=True)
class Host:
    """One ``[hosts.NAME]`` table of the hosts file."""

    name: str
    ssh: str  # any ssh destination; the user's ssh_config applies
    ssh_args: tuple[str, ...] = ()
    csd: str = "csd"  # csd on that host (default: csd on the remote PATH)
    env: tuple[tuple[str, str], ...] = ()  # environment for the remote csd

    def command(self, argv: list[str]) -> str:
        """The remote command line: ``env K=V … csd ARGV…``, each word quoted for a POSIX shell."""
        words = (["env", *(f"{k}={v}" for k, v in self.env)] if self.env else []) + [self.csd, *argv]
        return " ".join(shlex.quote(w) for w in words)


def hosts_file() -> Path:
    return Path(os.path.expanduser(config.get("CSD_HOSTS_FILE")))


def load_hosts(path: Path | None = None) -> dict[str, Host]:
    """Every host of the hosts file (none when it does not exist); a malformed one is a usage error."""
    import tomllib

    path = path or hosts_file()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the hosts file {str(path)!r}: {exc}") from None
    tables = data.get("hosts", {})
    if not isinstance(tables, dict):
        raise UsageError(f"hosts file {str(path)!r}: 'hosts' must be tables like [hosts.build1]")
    return {name: _host(path, name, t) for name, t in tables.items()}


def _host(path: Path, name: str, t: object) -> Host:
    def bad(what: str) -> UsageError:
        return UsageError(f"hosts file {str(path)!r}, [hosts.{name}]: {what}")

    if not isinstance(t, dict):
        raise bad("must be a table with ssh = \"user@host\"")
    unknown = set(t) - {"ssh", "ssh_args", "csd", "env"}
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}; valid keys: ssh ssh_args csd env")
    ssh, args, csd, env = t.get("ssh"), t.get("ssh_args", []), t.get("csd", "csd"), t.get("env", {})
    if not isinstance(ssh, str) or not ssh or ssh.startswith("-"):
        raise bad(f"ssh must be an ssh destination such as \"dev@build1\", got {ssh!r}")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise bad(f"ssh_args must be a list of strings, got {args!r}")
    if not isinstance(csd, str) or not csd:
        raise bad(f"csd must be the path of csd on that host, got {csd!r}")
    if not isinstance(env, dict) or not all(ENV_KEY_RE.fullmatch(k) and isinstance(v, str) for k, v in env.items()):
        raise bad(f"env must map variable names to strings, got {env!r}")
    return Host(name, ssh, tuple(args), csd, tuple(sorted(env.items())))


def get_host(name: str) -> Host:
    hosts = load_hosts()
    if name in hosts:
        return hosts[name]
    path = hosts_file()
    if not hosts:
        raise UsageError(
            f"unknown host {name!r}: the hosts file {str(path)!r} names no hosts; add one: "
            f"[hosts.{name}] ssh = \"user@{name}\" (CSD_HOSTS_FILE names another file)"
        )
    raise UsageError(f"unknown host {name!r} in {str(path)!r}; known hosts: {', '.join(sorted(hosts))}")


# ---------------------------------------------------------------- the connection


def control_dir() -> Path:
    """The private dir of the control sockets: created 0700, refused if anyone else could use it (a
    control socket is a logged-in connection)."""
    d = Path(config.get("CSD_SSH_CONTROL_DIR").replace("UID", str(os.getuid())))
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise CsdError(
            f"refusing SSH control dir {str(d)!r}: it must be a directory of your own with mode 0700 "
            f"(its sockets are logged-in connections); remove it or set CSD_SSH_CONTROL_DIR"
        )
    return d


def ssh_argv(host: Host, *, tty: bool = False, multiplex: bool = True) -> list[str]:
    """ssh up to the destination; the remote command follows as one word."""
    opts = ["-o", "BatchMode=yes"]
    if multiplex:
        persist = int(config.seconds("CSD_SSH_PERSIST"))
        # one control socket per host *entry* (name, destination, ssh_args), not ssh's %C (user, host,
        # port): two entries for one machine with other keys or options must not share a logged-in link
        key = hashlib.sha256(json.dumps([host.name, host.ssh, host.ssh_args]).encode()).hexdigest()[:24]
        opts += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir()}/{key}", "-o", f"ControlPersist={persist}"]
    return ["ssh", *opts, "-t" if tty else "-T", *host.ssh_args, "--", host.ssh]


def fault(host: Host, code: int, stderr: str, doing: str) -> CsdError | None:
    """The error for an exit of ssh or of the remote shell that is not the remote csd's own, else None."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else "no message"
    where = f"host {host.name!r} ({host.ssh})"
    if code == SSH_FAULT:
        text = "\n".join(lines)
        if "Permission denied" in text:
            return HostUnreachable(
                f"{where}: authentication refused while {doing} ({last}); csd never asks for a password "
                f"(BatchMode): 'ssh {host.ssh} true' must work with a key or agent"
            )
        if "Host key verification failed" in text or "IDENTIFICATION HAS CHANGED" in text:
            return HostUnreachable(
                f"{where}: host key not known or changed while {doing}; verify it and accept it once with: ssh {host.ssh} true"
            )
        if "closed by remote host" in text or "Broken pipe" in text or "Connection reset" in text or "read header failed" in text:
            return HostUnreachable(f"{where}: the connection dropped while {doing} ({last}); check the host, then retry")
        return HostUnreachable(f"{where} is unreachable while {doing} ({last}); check the network and 'ssh {host.ssh} true'")
    if code in (SHELL_NOT_FOUND, SHELL_NOT_EXECUTABLE):
        return HostCsd(
            f"{where}: csd not found there ({host.csd!r}: {last}); install csd on that host, or set its path: "
            f"csd = \"/path/to/csd\" under [hosts.{host.name}] in {str(hosts_file())!r}"
        )
    return None


def run(host: Host, argv: list[str], doing: str, stdin: bytes | None = None, capture: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run the remote csd with ``argv``; returns its exit code, stdout (or, with ``capture=False``, lets it
    through to ours as it comes) and stderr. SSH's and the remote shell's faults raise."""
    proc = subprocess.run(
        [*ssh_argv(host), host.command(argv)],
        input=stdin if stdin is not None else None,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE,
    )
    problem = fault(host, proc.returncode, proc.stderr.decode("utf-8", "replace"), doing)
    if problem is not None:
        raise problem
    return proc


def check_version(host: Host) -> None:
    """The remote csd must speak this one's protocol: the same major.minor version."""
    out = run(host, ["--version"], "checking csd's version").stdout.decode("utf-8", "replace").strip()
    words = out.split()
    theirs = words[1] if len(words) == 2 and words[0] == "csd" else ""
    if theirs.split(".")[:2] != __version__.split(".")[:2]:
        raise HostCsd(
            f"host {host.name!r} ({host.ssh}): {host.csd!r} there is not a compatible csd (it says {out[:80]!r}; "
            f"this is csd {__version__}, the same major.minor is needed); install csd {__version__} on that host"
        )


def close(host: Host) -> None:
    """End the host's shared connection, if one is open (the tests, and a clean shutdown)."""
    subprocess.run([*ssh_argv(host)[:-2], "-O", "exit", "--", host.ssh], capture_output=True)


# ---------------------------------------------------------------- local records of remote workers


@dataclass(frozen=True)
class Record:
    """What the controller keeps of a remote worker: where it is and how to reach it."""

    name: str
    host: str
    session_id: str
    cwd: str
    remote_workers_dir: str
    remote_shim: str
    started_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_record(wdir: WorkersDir, name: str) -> Record | None:
    try:
        with open(wdir.remote_path(name), encoding="utf-8") as f:
            return Record(**json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise CsdError(f"unreadable record of remote worker {name!r} at {wdir.remote_path(name)}: {exc}") from None


def records(wdir: WorkersDir) -> list[Record]:
    d = wdir.remote_dir
    try:
        names = sorted(fn[: -len(".json")] for fn in os.listdir(d) if fn.endswith(".json") and not fn.startswith("."))
    except FileNotFoundError:
        return []
    return [r for r in (read_record(wdir, n) for n in names) if r is not None]


def _write_record(wdir: WorkersDir, rec: Record) -> None:
    from csd.workers import _atomic_write, _check_private_dir

    d = wdir.ensure().remote_path(rec.name).parent
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    _check_private_dir(d)
    _atomic_write(wdir.remote_path(rec.name), json.dumps(rec.to_json(), indent=2) + "\n", 0o600)


def forget(wdir: WorkersDir, rec: Record) -> None:
    """Remove the record and the local shim of a remote worker (it was stopped)."""
    for p in (wdir.remote_path(rec.name), wdir.shim_path(rec.name)):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def host_of(wdir: WorkersDir, handle: str) -> str | None:
    """The host of a remote worker known by this name, else None (one stat: the local path stays cheap)."""
    if "/" in handle or handle.startswith("."):
        return None
    rec = read_record(wdir, handle) if wdir.remote_path(handle).is_file() else None
    return rec.host if rec is not None else None


# ---------------------------------------------------------------- launch and per-worker commands


def _worker_argv(rec: Record, argv: list[str]) -> list[str]:
    return ["--workers-dir", rec.remote_workers_dir, "--worker", rec.name, *argv]


def launch(host_name: str, name: str, cwd: str, claude_args: list[str], resume: str | None = None) -> int:
    """``csd launch --host H NAME CWD`` (or ``adopt --host H NAME CWD SESSION_ID`` with ``resume``): the
    remote csd's launch or adopt, then a local record and shim."""
    from csd.workers import WorkersDir, check_name

    host = get_host(host_name)
    check_name(name)
    wdir = WorkersDir()
    if wdir.check():
        local = [m for m in wdir.metas() if m.tmux_name == name]
        if local:
            raise CsdError(f"a local worker {name!r} exists (shim {wdir.shim_path(name)}); stop it or pick another name")
        old = read_record(wdir, name)
        if old is not None:
            state = _remote_state(host_for(old), old)
            if state != "gone":
                raise CsdError(
                    f"worker {name!r} already runs on host {old.host!r} ({state}); stop it first: {wdir.shim_path(name)} stop"
                )
            err(f"csd: clearing the record of gone remote worker {name!r} on host {old.host!r}")
            forget(wdir, old)
    check_version(host)
    argv = ["launch", name, cwd] if resume is None else ["adopt", name, cwd, resume]
    proc = run(host, [*argv, "--", *claude_args], f"{argv[0]}ing {name!r}")
    sys.stderr.buffer.write(proc.stderr)
    sys.stderr.flush()
    if proc.returncode != OK:
        return proc.returncode
    remote_shim = proc.stdout.decode("utf-8", "replace").strip()
    remote_wdir = str(Path(remote_shim).parent.parent)
    st = run(host, ["--workers-dir", remote_wdir, "--worker", name, "status", "--json"], f"reading {name!r}'s status")
    if st.returncode != OK:
        sys.stderr.buffer.write(st.stderr)
        raise CsdError(f"worker {name!r} launched on host {host.name!r} but its status could not be read; its remote shim: {remote_shim}")
    info = json.loads(st.stdout)
    rec = Record(name, host.name, info["first_session_id"], info["cwd"], remote_wdir, remote_shim, info.get("started_at") or "")
    _write_record(wdir, rec)
    shim = wdir.write_shim(name, host=host.name)
    print(shim, flush=True)
    return OK


def host_for(rec: Record) -> Host:
    return get_host(rec.host)


def _remote_state(host: Host, rec: Record) -> str:
    proc = run(host, _worker_argv(rec, ["status"]), f"reading {rec.name!r}'s status")
    return proc.stdout.decode().strip() if proc.returncode == OK else "gone"


def worker_command(host_name: str, handle: str, cmd: str, args: argparse.Namespace, rest: list[str],
                   read_prompt: Callable[[str], str]) -> int:
    """A per-worker command on a remote worker, through its host's connection: the same command, its
    stdout and exit code as they are; a prompt goes on stdin."""
    from csd.workers import WorkersDir

    wdir = WorkersDir()
    rec = read_record(wdir, handle)
    if rec is None or rec.host != host_name:
        raise CsdError(
            f"unknown remote worker {handle!r} on host {host_name!r} in {wdir.path} (no record at {wdir.remote_path(handle)}); "
            "csd list shows the workers this controller knows"
        )
    host = get_host(host_name)
    doing = f"running {cmd!r} for {handle!r}"
    if cmd in ("send", "converse"):
        prompt = read_prompt(args.prompt).encode("utf-8")
        argv = ["send", "-"] if cmd == "send" else ["converse", *(["--with-turn"] if args.with_turn else []), "-", repr(args.timeout)]
        return _relay(run(host, _worker_argv(rec, argv), doing, stdin=prompt, capture=False))
    if cmd == "handoff":
        proc = run(host, _worker_argv(rec, ["handoff"]), doing)
        if proc.returncode != OK:
            return _relay(proc)
        attach = proc.stdout.decode("utf-8", "replace").strip()
        print(shlex.join([*ssh_argv(host, tty=True, multiplex=False), attach]))
        err(
            f"To take over worker {handle!r} on host {host.name!r}: run the line above in a terminal. Detach with Ctrl-B d "
            f"to hand it back. While handed off, do not run '{wdir.shim_path(handle)} stop'; after detaching, check its "
            "state with 'status' before sending."
        )
        return OK
    if cmd == "wait-for-turn":
        from csd.cli import run_async

        return run_async(remote_wait(host, rec, args))
    code = _relay(run(host, _worker_argv(rec, [cmd, *rest]), doing, capture=False))
    if cmd == "stop" and code == OK:
        forget(wdir, rec)
    return code


def _relay(proc: subprocess.CompletedProcess[bytes]) -> int:
    if proc.stdout:
        sys.stdout.buffer.write(proc.stdout)
        sys.stdout.flush()
    sys.stderr.buffer.write(proc.stderr)
    sys.stderr.flush()
    return proc.returncode


# ---------------------------------------------------------------- list


def list_rows(wdir: WorkersDir, pattern: str) -> list[dict[str, Any]]:
    """``list --json`` rows of the remote workers this controller knows, one ``csd list`` per host (all
    hosts at once). An unreachable host's workers are ``unreachable``, with the reason; a worker its
    host no longer knows is ``gone``."""
    from concurrent.futures import ThreadPoolExecutor

    recs = [r for r in records(wdir) if pattern in r.name]
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in recs:
        groups.setdefault((r.host, r.remote_workers_dir), []).append(r)

    def survey(key: tuple[str, str]) -> list[dict[str, Any]]:
        host_name, rwd = key
        try:
            host = get_host(host_name)
            proc = run(host, ["--workers-dir", rwd, "list", "--all", "--json"], "listing its workers")
            if proc.returncode != OK:
                raise CsdError(proc.stderr.decode("utf-8", "replace").strip() or f"csd list exited {proc.returncode}")
            found = {}
            for line in proc.stdout.decode("utf-8", "replace").splitlines():
                row = json.loads(line)
                found[(row["name"], row["first_session_id"])] = row
        except CsdError as exc:
            return [_row(wdir, r, "unreachable", error=str(exc)) for r in groups[key]]
        out = []
        for r in groups[key]:
            row = found.get((r.name, r.session_id))
            out.append(_row(wdir, r, "gone") if row is None else {**row, "shim": str(wdir.shim_path(r.name)), "remote_shim": r.remote_shim, "host": r.host})
        return out

    with ThreadPoolExecutor(max_workers=min(16, len(groups) or 1)) as pool:
        return [row for rows in pool.map(survey, list(groups)) for row in rows]


def prune(wdir: WorkersDir, dry_run: bool) -> int:
    """``csd prune`` for remote workers: the record and local shim of each one its host reports gone (never
    of a reachable host's live worker, nor of an unreachable host's: unreachable is not gone). The worker's
    files on its host are that host's to prune (``csd prune`` there)."""
    pruned = 0
    for row in list_rows(wdir, ""):
        if row["state"] != "gone":
            continue
        rec = read_record(wdir, row["name"])
        if rec is None:
            continue
        files = [p for p in (wdir.remote_path(rec.name), wdir.shim_path(rec.name)) if p.exists()]
        if not dry_run:
            forget(wdir, rec)
        verb = "would remove" if dry_run else "removed"
        print(f"{verb} {rec.name} ({rec.session_id}) on host {rec.host}: {' '.join(str(p) for p in files)}", flush=True)
        pruned += 1
    return pruned


def _row(wdir: WorkersDir, r: Record, state: str, error: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": r.name, "session_id": r.session_id, "first_session_id": r.session_id, "state": state, "cwd": r.cwd,
        "shim": str(wdir.shim_path(r.name)), "remote_shim": r.remote_shim, "started_at": r.started_at, "host": r.host,
    }
    if error is not None:
        row["error"] = error
    return row


# ---------------------------------------------------------------- the per-host stream


async def serve_stream(names: list[str], settled: bool, replay: dict[str, int]) -> int:
    """``csd stream`` (run by a controller over SSH): one JSON line per worker now, then one per event or
    liveness change of any of them: ``{"name", "state", "line", "done"}``, ``done`` being the line that
    ended its turn (or a ``gone`` stand-in) or null while it works. ``replay`` (NAME -> line) first looks
    in the log past that line for a turn end the controller missed while its connection was down. Ends
    when the controller closes the channel (stdin reaches EOF)."""
    import asyncio

    from csd.events import Event
    from csd.supervisor import Supervisor
    from csd.workers import iter_events

    async with Supervisor() as sup:
        trs = {}
        for n in names:
            tr = await sup.track(n)
            trs[tr.name] = tr
        replayed: dict[str, Event] = {}
        for n, after in replay.items():
            tr = trs.get(sup.resolve(n).tmux_name)
            if tr is None:
                continue
            for ev in iter_events(sup.wdir.events_path(tr.meta.session_id)):
                if ev.line_no > after and ev.name in TURN_ENDS:
                    replayed[tr.name] = ev
                    break

        def emit(tr: Any, _ev: object = None) -> None:
            if tr.name not in trs:
                return
            done = replayed.get(tr.name) or sup.turn_result(tr.name, settled)
            w = tr.worker
            since = w.state_event.ts if w.state_event is not None else None
            msg = {"name": tr.name, "state": str(tr.state), "line": tr.line_count, "done": done.raw if done else None,
                   # what the live table shows (csd watch on the controller)
                   "last": w.last_event.summary() if w.last_event else "", "turns": w.turns, "bg": w.bg_running,
                   "since": since, "cwd": tr.meta.cwd}
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

        for tr in trs.values():
            emit(tr)
        sup.add_listener(emit)
        loop = asyncio.get_running_loop()
        closed = loop.create_future()

        class StdinWatch(asyncio.Protocol):
            def eof_received(self) -> bool:
                if not closed.done():
                    closed.set_result(None)
                return False

            def connection_lost(self, exc: Exception | None) -> None:
                if not closed.done():
                    closed.set_result(None)

        transport, _ = await loop.connect_read_pipe(StdinWatch, sys.stdin.buffer)
        try:
            await closed
        finally:
            transport.close()
    return OK


class HostStream:
    """The controller's end of one host's stream: the latest word on each of its workers, a turn end
    latched once seen, re-established with backoff when the connection drops (replaying the remote log
    from the last line seen, so a turn that ended meanwhile is neither missed nor invented)."""

    def __init__(self, host: Host, rwd: str, recs: list[Record], settled: bool, changed: Callable[[], None],
                 follow: bool = False) -> None:
        self.host, self.rwd, self.recs, self.settled, self.changed = host, rwd, recs, settled, changed
        self.follow = follow  # csd watch: never ends, never gives up (its rows say unreachable meanwhile)
        self.done: dict[str, str] = {}  # name -> the raw line that ended its turn
        self.busy_line: dict[str, int] = {}  # name -> the log's line count when it was last seen working
        self.latest: dict[str, dict[str, Any]] = {}  # name -> its latest message
        self.error: CsdError | None = None

    async def run(self) -> None:
        import asyncio

        attempt = 0
        while True:
            got_any, code, stderr = await self._once()
            if code == OK:
                return
            problem = fault(self.host, code, stderr, "streaming its workers' events") if code == SSH_FAULT or code in (
                SHELL_NOT_FOUND, SHELL_NOT_EXECUTABLE) else None
            if code == USAGE and "stream" in stderr:
                problem = HostCsd(f"host {self.host.name!r} ({self.host.ssh}): its csd has no 'stream' command; install csd {__version__} there")
            if not isinstance(problem, HostUnreachable):
                self.error = problem or CsdError(f"host {self.host.name!r}: {stderr.strip() or f'csd stream exited {code}'}")
                self.changed()
                return
            attempt = 0 if got_any else attempt + 1
            if self.follow:
                self.error = problem
                self.changed()
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                continue
            if attempt > len(RECONNECT_DELAYS):
                self.error = HostUnreachable(f"{problem} (gave up after {len(RECONNECT_DELAYS)} attempts to reconnect)")
                self.changed()
                return
            err(f"csd: warning: {problem}; reconnecting")
            await asyncio.sleep(RECONNECT_DELAYS[max(0, attempt - 1)])

    async def _once(self) -> tuple[bool, int, str]:
        import asyncio

        pending = [r.name for r in self.recs if self.follow or r.name not in self.done]
        if not pending:
            return True, OK, ""
        argv = ["--workers-dir", self.rwd, "stream", *(["--settled"] if self.settled else [])]
        argv += [f"--replay={n}={self.busy_line[n]}" for n in pending if n in self.busy_line]
        proc = await asyncio.create_subprocess_exec(
            *ssh_argv(self.host), self.host.command([*argv, *pending]),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        got_any = False
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                msg = json.loads(line)
                got_any = True
                self.error = None
                name = msg["name"]
                self.latest[name] = msg
                if msg["done"] is not None:
                    self.done.setdefault(name, msg["done"])
                else:
                    self.busy_line[name] = msg["line"]
                self.changed()
                if not self.follow and all(r.name in self.done for r in self.recs):
                    break
            else:
                assert proc.stderr is not None
                stderr = (await proc.stderr.read()).decode("utf-8", "replace")
                return got_any, await proc.wait(), stderr
            return True, OK, ""
        finally:
            if proc.returncode is None:
                # Ending the local ssh closes the channel: the remote stream reads EOF and ends by itself.
                # Nothing to wait for on the far side (a wait that is answered exits at once).
                assert proc.stdin is not None
                proc.stdin.close()
                proc.terminate()
                await proc.wait()


async def fan_wait(args: argparse.Namespace) -> int:
    """``wait-for-turn --any/--all`` over local and remote workers: local ones through a Supervisor,
    each host's through one stream; prints ``NAME<TAB>event line`` as the local form does."""
    import asyncio

    from csd.commands import report_ended
    from csd.events import Event, failure_line, parse_line
    from csd.supervisor import Supervisor
    from csd.workers import WorkersDir

    wdir = WorkersDir()
    remote: list[Record] = []
    local: list[str] = []
    for n in args.names:
        rec = read_record(wdir, n) if wdir.check() else None
        if rec is not None:
            remote.append(rec)
        else:
            local.append(wdir.resolve(n).tmux_name)  # every unknown name rejected before any wait
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in remote:
        groups.setdefault((r.host, r.remote_workers_dir), []).append(r)
    hosts = {h: get_host(h) for h, _ in groups}
    async with Supervisor(wdir) as sup:
        streams = [HostStream(hosts[h], rwd, recs, args.settled, sup.changed) for (h, rwd), recs in groups.items()]
        for name in local:
            await sup.track(name)

        def check() -> list[tuple[str, Event]] | None:
            for s in streams:
                if s.error is not None:
                    raise s.error
            ended: list[tuple[str, Event]] = []
            for name in args.names:
                if name in local:
                    ev = sup.turn_result(name, args.settled)
                else:
                    raw = next((s.done[name] for s in streams if name in s.done), None)
                    ev = parse_line(raw, 0) if raw is not None else None
                if ev is not None:
                    ended.append((name, ev))
                    if args.any:
                        return ended
                elif args.all:
                    return None
            return ended if args.all else None

        tasks = [asyncio.ensure_future(s.run()) for s in streams]
        try:
            async with asyncio.timeout(args.timeout):
                ended = await sup.wait_until(check)
        except TimeoutError:
            busy = [n for n in args.names if n in local and sup.turn_result(n, args.settled) is None]
            busy += [r.name for s in streams for r in s.recs if r.name not in s.done]
            raise CsdError(f"timed out after {args.timeout:g}s; still busy: {', '.join(busy) or 'none'}") from None
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        def failure(name: str, ev: Event) -> str | None:
            if name in local:
                return sup.turn_failure(name, ev)
            return failure_line(name, ev) if ev.error is not None else None  # a remote turn: its stop_failure line

        return report_ended(ended, failure)


async def remote_wait(host: Host, rec: Record, args: argparse.Namespace) -> int:
    """A remote worker's ``wait-for-turn`` through its host's stream, so a dropped connection is re-established
    and the log replayed (``--after-line N`` is such a replay from the start: the first turn end past line N)."""
    import asyncio

    from csd.errors import TURN_FAILED, NotRunning
    from csd.events import failure_line, parse_line

    wake = asyncio.Event()
    stream = HostStream(host, rec.remote_workers_dir, [rec], args.settled, wake.set)
    if args.after_line is not None:
        stream.busy_line[rec.name] = args.after_line
    task = asyncio.ensure_future(stream.run())
    try:
        async with asyncio.timeout(args.timeout):
            while rec.name not in stream.done:
                if stream.error is not None:
                    raise stream.error
                await wake.wait()
                wake.clear()
    except TimeoutError:
        raise CsdError(f"timed out after {args.timeout:g}s waiting for {rec.name!r} on host {host.name!r} to end its turn") from None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    ev = parse_line(stream.done[rec.name], 0)
    if ev.name == "gone":
        raise NotRunning(f"worker {rec.name!r} on host {host.name!r} is gone: its process ended without session_end")
    sys.stdout.write(ev.raw + "\n")
    sys.stdout.flush()
    if ev.error is not None:
        err(f"csd: error: {failure_line(rec.name, ev)}")
        return TURN_FAILED
    return OK


def watch_streams(wdir: WorkersDir, pattern: str, changed: Callable[[], None]) -> list[HostStream]:
    """``csd watch``'s remote rows: one following stream per host (and remote workers dir)."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records(wdir):
        if pattern in r.name:
            groups.setdefault((r.host, r.remote_workers_dir), []).append(r)
    return [HostStream(get_host(h), rwd, recs, False, changed, follow=True) for (h, rwd), recs in groups.items()]


def watch_rows(streams: list[HostStream], clock: Callable[[], float]) -> list[Any]:
    """The live table's rows of remote workers (``NAME@HOST``), from their streams' latest messages."""
    from csd.clock import epoch
    from csd.render import WorkerRow

    rows = []
    for s in streams:
        for r in s.recs:
            msg = s.latest.get(r.name)
            if s.error is not None or msg is None:
                state = "unreachable" if s.error is not None else "launching"
                rows.append(WorkerRow(f"{r.name}@{r.host}", state, 0.0, str(s.error or ""), 0, 0, r.cwd))
                continue
            since = epoch(msg["since"]) if msg.get("since") else None
            seconds = max(0.0, clock() - since) if since is not None else 0.0
            rows.append(WorkerRow(f"{r.name}@{r.host}", msg["state"], seconds, msg.get("last", ""), msg.get("turns", 0),
                                  msg.get("bg", 0), msg.get("cwd", r.cwd)))
    return rows
