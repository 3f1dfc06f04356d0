"""Workers on other machines, the SSH side: the hosts file, one multiplexed SSH connection per host,
running the remote csd, and the controller's end of the per-host event stream behind ``list``, ``watch``
and the fan-out waits. No command-line code and no workers-dir files: the commands that use it (``launch
--host``, forwarded per-worker commands, ``csd stream``'s serving side) and the local records of remote
workers are csd/commands/remote.py's.

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

import contextlib
import hashlib
import json
import os
import re
import selectors
import shlex
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csd import __version__, config
from csd.console import err
from csd.errors import OK, USAGE, CsdError, HostCsd, HostUnreachable, Terminated, UsageError

ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: ssh's own exit status for a fault of its own (connection, authentication, host key, dropped link).
SSH_FAULT = 255
#: The remote shell's "command not found" / "not executable" (csd itself never exits with either).
SHELL_NOT_FOUND, SHELL_NOT_EXECUTABLE = 127, 126
#: A re-established stream waits this long before each new attempt (a dropped link, sshd restarting).
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)
#: How long an interrupted launch --host waits for the host to undo its half-made worker (csd hosted-launch).
UNTIE_SECONDS = 15.0
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


class Tied:
    """A remote ``csd hosted-launch``, its stdin tied to this process: a pipe kept open while it runs (csd/commands/
    manage.py, hosted_launch: the host undoes its launch when the pipe closes first, as on a signal of its own).

    Used as ``with Tied(host, argv, doing) as tied: proc = tied.run(); ...``. In the main thread, SIGINT and SIGTERM
    raise nothing inside the block. The first one cuts the tie, and ``run`` waits up to UNTIE_SECONDS for the host
    to say how its launch ended (a second signal stops the wait at once). Then the host's answer decides. If the
    launch failed, or no answer came, ``run`` raises the interrupt (KeyboardInterrupt, Terminated) as it would have
    been raised. If the launch had reported before it saw the pipe close, the worker exists there. ``run`` returns
    it as made, the caller records it, and the signals are sent again as the block ends (a launch that blocks them
    from then on, as the CLI's does, exits 0 with its shim printed: the point of no return of a local launch).
    ssh runs in a process group of its own, so that a Ctrl-C at a terminal reaches csd only and the channel stays
    up while the host undoes. Outside the main thread (the Python API's worker threads) no handler is set; the
    tie still cuts itself if this process dies.

    The answer is read with a selector and a wake-up pipe, not ``communicate``: a multiplexed ssh hands its
    stdout and stderr to the shared master, so killing the client does not end them; a wait that gives up must
    stop reading by itself."""

    def __init__(self, host: Host, argv: list[str], doing: str) -> None:
        self.host, self.argv, self.doing = host, argv, doing
        self.signals: list[int] = []
        self.previous: dict[int, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.keep = self.wake = -1  # the tie's write end; the wake-up pipe's write end
        self.deadline: float | None = None

    def __enter__(self) -> Tied:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._signalled)
        except ValueError:  # not the main thread
            pass
        except BaseException:  # a signal as the handlers were being set: __exit__ will not run
            self._restore()
            raise
        return self

    def _signalled(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        if self.wake >= 0:
            with contextlib.suppress(BlockingIOError):  # full: it has a wake-up to read already
                os.write(self.wake, b"!")  # the reading loop decides (run)

    def run(self) -> subprocess.CompletedProcess[bytes]:
        tie, self.keep = os.pipe()  # the write end is not inherited: ssh sees EOF when this process closes it
        wake, self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            try:
                self.proc = subprocess.Popen([*ssh_argv(self.host), self.host.command(self.argv)], stdin=tie,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
            finally:
                os.close(tie)
            out, errs = self._answer(wake)
        finally:
            os.close(wake)
            self._close("wake")
            self._close("keep")
        if out is None or (self.signals and self.proc.returncode != OK):
            if out is None:
                err(f"csd: host {self.host.name!r} did not say within {UNTIE_SECONDS:g}s whether it undid the launch; "
                    f"see what it has with: ssh {self.host.ssh} {self.host.csd} list")
            self._interrupt()
        problem = fault(self.host, self.proc.returncode, errs.decode("utf-8", "replace"), self.doing)
        if problem is not None:
            raise problem
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, errs)

    def _answer(self, wake: int) -> tuple[bytes | None, bytes]:
        """The remote's stdout and stderr up to their end (None: the wait was given up, ssh killed)."""
        assert self.proc is not None and self.proc.stdout is not None and self.proc.stderr is not None
        got: dict[int, list[bytes]] = {self.proc.stdout.fileno(): [], self.proc.stderr.fileno(): []}
        with selectors.DefaultSelector() as sel:
            for fd in (*got, wake):
                sel.register(fd, selectors.EVENT_READ)
            while len(sel.get_map()) > 1:
                if self.signals and self.deadline is None:  # the first: cut the tie, give the host its time
                    self._close("keep")
                    self.deadline = time.monotonic() + UNTIE_SECONDS
                left = None if self.deadline is None else self.deadline - time.monotonic()
                if len(self.signals) > 1 or (left is not None and left <= 0):
                    self.proc.kill()
                    self.proc.wait()
                    return None, b""
                for key, _ in sel.select(left):
                    if key.fd == wake:
                        os.read(wake, 64)
                    elif data := os.read(key.fd, 65536):
                        got[key.fd].append(data)
                    else:
                        sel.unregister(key.fd)
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc.wait()
        out, errs = (b"".join(parts) for parts in got.values())
        return out, errs

    def _close(self, which: str) -> None:
        fd = getattr(self, which)
        if fd >= 0:
            setattr(self, which, -1)
            os.close(fd)

    def _interrupt(self) -> None:
        """Raise the first signal's interrupt, as the handlers this replaced would have."""
        first, self.signals = self.signals[0], []
        self._restore()
        if first == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated("terminated (SIGTERM); cleaned up")

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def __exit__(self, *exc: object) -> None:
        self._close("wake")
        self._close("keep")
        if self.proc is not None and self.proc.returncode is None:  # an error between the start and the answer
            self.proc.kill()
            self.proc.wait()
        self._restore()
        for sig in self.signals:  # the worker was made: as if they came now
            os.kill(os.getpid(), sig)


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


# ---------------------------------------------------------------- remote workers


@dataclass(frozen=True)
class Record:
    """What the controller keeps of a remote worker: where it is and how to reach it (csd/commands/remote.py
    keeps it in the workers dir)."""

    name: str
    host: str
    session_id: str
    cwd: str
    remote_workers_dir: str
    remote_shim: str
    started_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def by_host(recs: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    """Records grouped by (host, remote workers dir): one connection, one remote csd for each group."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in recs:
        groups.setdefault((r.host, r.remote_workers_dir), []).append(r)
    return groups


# ---------------------------------------------------------------- a remote worker


def worker_argv(rec: Record, argv: list[str]) -> list[str]:
    """The remote csd's arguments for a per-worker command of ``rec``."""
    return ["--workers-dir", rec.remote_workers_dir, "--worker", rec.name, *argv]


def remote_state(host: Host, rec: Record) -> str:
    """The remote worker's state as its host's csd says it; ``gone`` when that csd does not know it."""
    proc = run(host, worker_argv(rec, ["status"]), f"reading {rec.name!r}'s status")
    return proc.stdout.decode().strip() if proc.returncode == OK else "gone"


def host_for(rec: Record) -> Host:
    return get_host(rec.host)


# ---------------------------------------------------------------- the per-host stream


class HostStream:
    """The controller's end of one host's stream: the latest word on each of its workers, a turn end
    latched once seen, re-established with backoff when the connection drops (replaying the remote log
    from the last line seen, so a turn that ended meanwhile is neither missed nor invented)."""

    def __init__(self, host: Host, rwd: str, recs: list[Record], settled: bool, changed: Callable[[], None],
                 follow: bool = False) -> None:
        self.host, self.rwd, self.recs, self.settled, self.changed = host, rwd, recs, settled, changed
        self.follow = follow  # csd watch: never ends, never gives up (its rows say unreachable meanwhile)
        self.done: dict[str, str] = {}  # name -> the raw line that ended its turn
        self.failures: dict[str, str] = {}  # name -> that turn's one-line failure, as the host read it
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
                    if name not in self.done and msg.get("failure"):
                        self.failures[name] = msg["failure"]
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
            # to the end of its pipes too, or their transport outlives the event loop (a Python controller's);
            # a cancel that lands meanwhile (the answer is in: the waiter is done with this stream) waits for that
            try:
                await proc.communicate()
            except asyncio.CancelledError:
                await proc.communicate()
                raise


