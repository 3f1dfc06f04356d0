"""The workers dir: its security checks, metas (atomic), events-file tails, shims, locks, and resolving a handle."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from csd import config
from csd.clock import now_iso
from csd.errors import CsdError, UnknownWorker, UsageError
from csd.events import BadLine, Event, parse_line, too_long
from csd import hook
from csd.hook import LINE_LIMIT, dir_refusal
from csd.lines import MAX_LINE, count_newlines, read_backward, read_forward
from csd.states import is_anchor
from csd.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    from typing import Any

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
#: tmux's pane ids: a meta's ``pane`` is used only if it is one.
PANE_ID_RE = re.compile(r"%[0-9]{1,9}")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
CONSENT_FILE = ".claude/.claude-session-driver-consent"


def check_name(name: str) -> str:
    """A worker name must be a tmux-safe name (tmux silently rewrites '.' and ':')."""
    if not NAME_RE.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + f"… ({len(name)} chars)"
        raise UsageError(
            f"invalid worker name {shown!r}: use 1-64 letters, digits, '_' or '-', not starting with '-'"
        )
    return name


def check_session_id(sid: str) -> str:
    if not UUID_RE.fullmatch(sid):
        raise UsageError(f"invalid session id {sid!r}: expected a UUID like 0f8fad5b-d9cb-469f-a165-70867728950e")
    return sid.lower()


class Meta(Value):
    """A worker's meta file. Metas written by the bash v3 have only the first four fields; those written by
    csd before workers were identified by their process have no ``pid``/``proc_start``.

    ``session_id`` is the id the worker was launched (or adopted) with: it names the meta, events and lock
    files for the worker's whole life. The id the worker has *now* (it changes on ``/clear``) is in its
    events (``Tail.session_id``). ``tmux_socket`` is None when the meta does not record one (bash v3): the
    caller's ``CSD_TMUX_SOCKET`` applies; ``""`` means tmux's default server. ``pid`` and ``proc_start``
    (the process's start time in clock ticks since boot, from /proc) identify the worker process, so a pane
    that now runs something else is not the worker; 0 when unknown. ``pane`` is tmux's id of the worker's pane
    (``%N``, fixed for the pane's life): every key csd types and every screen it reads go to exactly that pane,
    never to whichever pane of the session is active (a person who split the worker's window would otherwise
    get the prompt typed into their shell, and run). "" in metas of older releases: the session's active pane.
    """

    _fields = ("tmux_name", "session_id", "cwd", "started_at", "invocation", "tmux_socket", "claude_bin", "csd_version",
               "extra", "pid", "proc_start", "pane")
    _hidden = _uncompared = frozenset({"extra"})
    tmux_name: str
    session_id: str
    cwd: str
    started_at: str
    invocation: tuple[str, ...]
    tmux_socket: str | None
    claude_bin: str
    csd_version: str
    extra: dict[str, Any]
    pid: int
    proc_start: int
    pane: str

    def __init__(self, tmux_name: str, session_id: str, cwd: str, started_at: str = "", invocation: tuple[str, ...] = (),
                 tmux_socket: str | None = None, claude_bin: str = "", csd_version: str = "",
                 extra: dict[str, Any] | None = None, pid: int = 0, proc_start: int = 0, pane: str = "") -> None:
        self._set(tmux_name=tmux_name, session_id=session_id, cwd=cwd, started_at=started_at, invocation=invocation,
                  tmux_socket=tmux_socket, claude_bin=claude_bin, csd_version=csd_version,
                  extra={} if extra is None else extra, pid=pid, proc_start=proc_start, pane=pane)

    @property
    def where(self) -> str:
        """What csd's tmux calls that type or read a screen target (csd.tmux.pane_target): the worker's pane."""
        return self.pane or self.tmux_name

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Meta:
        known = {k for k in cls._fields if k != "extra"}
        inv = obj.get("invocation") or []
        return cls(
            tmux_name=str(obj["tmux_name"]),
            session_id=str(obj["session_id"]),
            cwd=str(obj.get("cwd", "")),
            started_at=str(obj.get("started_at", "")),
            invocation=tuple(str(a) for a in inv) if isinstance(inv, list) else (str(inv),),
            tmux_socket=None if obj.get("tmux_socket") is None else str(obj["tmux_socket"]),
            claude_bin=str(obj.get("claude_bin") or ""),
            csd_version=str(obj.get("csd_version") or ""),
            pid=_int(obj.get("pid")),
            proc_start=_int(obj.get("proc_start")),
            pane=pane if isinstance(pane := obj.get("pane"), str) and PANE_ID_RE.fullmatch(pane) else "",
            extra={k: v for k, v in obj.items() if k not in known},
        )

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update(
            tmux_name=self.tmux_name,
            session_id=self.session_id,
            cwd=self.cwd,
            started_at=self.started_at,
            invocation=list(self.invocation),
            claude_bin=self.claude_bin,
            csd_version=self.csd_version,
        )
        if self.tmux_socket is not None:
            d["tmux_socket"] = self.tmux_socket
        if self.pid:
            d.update(pid=self.pid, proc_start=self.proc_start)
        if self.pane:
            d["pane"] = self.pane
        return d


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class Tail(Value):
    """The end of an events file: the events from the last anchor on, and how many lines the file has."""

    _fields = ("events", "line_count")
    events: list[Event]
    line_count: int

    def __init__(self, events: list[Event], line_count: int) -> None:
        self._set(events=events, line_count=line_count)

    @property
    def session_id(self) -> str | None:
        """The session id the worker has now: the latest event's (``/clear`` starts a new one). Every hook
        payload carries it, and the tail always reaches back to an anchor, so the tail is enough."""
        for ev in reversed(self.events):
            sid = ev.data.get("session_id")
            if isinstance(sid, str) and UUID_RE.fullmatch(sid):
                return sid.lower()
        return None


class Cost(Value):
    """A worker's cost and tokens: the sum over its sessions of each session's figures."""

    _fields = ("cost_usd", "tokens")
    cost_usd: float | None  # None: no session reported a cost (no statusLine run yet, or an older release)
    tokens: dict[str, int]  # input, output, cache_read, cache_creation

    def __init__(self, cost_usd: float | None, tokens: dict[str, int]) -> None:
        self._set(cost_usd=cost_usd, tokens=tokens)

    @classmethod
    def of_sessions(cls, sessions: dict[str, Any]) -> Cost:
        costs = [e.get("cost_usd") for e in sessions.values() if isinstance(e, dict)]
        usd = [c for c in costs if isinstance(c, (int, float)) and not isinstance(c, bool)]
        tokens = dict.fromkeys((k for k, _ in hook.TOKEN_KEYS), 0)
        for e in sessions.values():
            got = e.get("tokens") if isinstance(e, dict) else None
            for key in tokens:
                value = got.get(key) if isinstance(got, dict) else None
                if isinstance(value, int) and not isinstance(value, bool):
                    tokens[key] += value
        return cls(round(sum(usd), 6) if usd else None, tokens)


def format_cost(usd: float | None) -> str:
    """A cost for the list and watch tables: ``$0.0121``, or ``-`` when unknown."""
    return "-" if usd is None else f"${usd:.4f}"


class WorkersDir:
    """One workers dir (``$CSD_WORKERS_DIR``) and the files of its workers."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path if path is not None else config.get("CSD_WORKERS_DIR")).absolute()
        self.bin = self.path / "bin"
        self._cost_paths: dict[str, str] = {}  # by session id: a watch reads a cost file per statusLine run

    # -- security
    def ensure(self) -> WorkersDir:
        """Create the dir and bin/ (0700) if missing; refuse ones another user could write to."""
        for d in (self.path, self.bin):
            try:
                try:
                    os.mkdir(d, 0o700)
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    os.makedirs(d, 0o700, exist_ok=True)
            except OSError as exc:
                raise CsdError(
                    f"cannot create workers dir {str(d)!r}: {exc.strerror}; set CSD_WORKERS_DIR to a dir you can write"
                ) from None
            _check_private_dir(d)
        return self

    def check(self) -> bool:
        """For read-only commands: False when the dir does not exist; refuse an unsafe one."""
        try:
            _check_private_dir(self.path)
        except FileNotFoundError:
            return False
        if self.bin.exists() or self.bin.is_symlink():
            _check_private_dir(self.bin)
        return True

    # -- paths
    def meta_path(self, sid: str) -> Path:
        return self.path / f"{sid}.meta"

    def events_path(self, sid: str) -> Path:
        return self.path / f"{sid}.events.jsonl"

    def lock_path(self, sid: str) -> Path:
        return self.path / f"{sid}.lock"

    def cost_path(self, sid: str) -> Path:
        """The worker's cost file, kept by csd's statusLine command (hook.py ``--statusline``)."""
        return Path(self._cost_file(sid))

    def _cost_file(self, sid: str) -> str:
        # hook.cost_path is the naming rule; worked out once per worker, not per statusLine run
        path = self._cost_paths.get(sid)
        if path is None:
            path = hook.cost_path(str(self.events_path(sid)))
            assert path is not None
            self._cost_paths[sid] = path
        return path

    def read_cost(self, sid: str) -> Cost:
        """The worker's cost and tokens from its cost file (no file yet: cost unknown, no tokens)."""
        return Cost.of_sessions(hook.load_costs(self._cost_file(sid)))

    def env_path(self, sid: str) -> Path:
        """The worker's environment between launch and the pane's first process (csd/envfile.py)."""
        return self.path / f"{sid}.env"

    def claim_path(self, name: str) -> Path:
        """Held (flock) by the one launch or adopt of ``name`` under way; see LaunchClaim."""
        return self.path / f"{name}.launching"

    def shim_path(self, name: str) -> Path:
        return self.bin / name

    @property
    def remote_dir(self) -> Path:
        """Where the records of workers on other hosts live (csd.remote); absent until a remote worker is launched
        or a watch starts (it follows the dir: ensure_remote_dir)."""
        return self.path / "remote"

    def remote_path(self, name: str) -> Path:
        """The record of a worker that runs on another host (csd.remote); its shim is bin/<name> too."""
        return self.remote_dir / f"{name}.json"

    # -- metas
    def write_remote(self, name: str, text: str) -> Path:
        """Write the record of remote worker ``name`` (csd.remoteworkers): atomically, 0600, in a private dir."""
        self.ensure_remote_dir()
        return _atomic_write(self.remote_path(name), text, 0o600)

    def ensure_remote_dir(self) -> Path:
        """The records' dir, made (0700, in the workers dir made if missing) when there is none yet."""
        d = self.ensure().remote_dir
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        _check_private_dir(d)
        return d

    def write_meta(self, meta: Meta) -> Path:
        return _atomic_write(self.meta_path(meta.session_id), json.dumps(meta.to_json(), indent=2) + "\n", 0o600)

    def read_meta(self, sid: str) -> Meta:
        with os.fdopen(open_regular(self.meta_path(sid)), "rb") as f:
            return Meta.from_json(json.loads(f.read()))

    def metas(self, warn: Callable[[str], None] | None = None) -> list[Meta]:
        """Every readable meta, sorted by name; unreadable ones are reported through ``warn``."""
        out = []
        if not self.check():  # before reading a byte of it: whose dir, and who else may write it
            return []
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        for fn in names:
            if fn.endswith(".meta") and not fn.startswith(".") and (meta := self.meta_if_readable(fn[: -len(".meta")], warn)):
                out.append(meta)
        out.sort(key=lambda m: (m.tmux_name, m.started_at))
        return out

    def meta_if_readable(self, sid: str, warn: Callable[[str], None] | None = None) -> Meta | None:
        """The meta of ``sid``, or None: removed (a concurrent stop), or unreadable (reported through ``warn``)."""
        try:
            return self.read_meta(sid)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, CsdError) as exc:
            if warn:
                warn(f"skipping unreadable meta {self.meta_path(sid)}: {meta_problem(exc)}")
            return None

    def resolve(self, handle: str, warn: Callable[[str], None] | None = None) -> Meta:
        """A worker by name, by the session id it was launched with, or by the one it has now (after
        ``/clear``); an unknown one is an error with a did-you-mean."""
        metas = self.metas(warn)
        for m in metas:
            if m.tmux_name == handle or m.session_id == handle.lower():
                return m
        if UUID_RE.fullmatch(handle):
            for m in metas:
                if self.current_session_id(m) == handle.lower():
                    return m
        names = [m.tmux_name for m in metas]
        import difflib  # only on this error path: it costs a status call several milliseconds

        close = difflib.get_close_matches(handle, names, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        known = f"known workers: {', '.join(names)}" if names else "there are no workers; start one with: csd launch NAME DIR"
        raise UnknownWorker(f"unknown worker {handle!r} in {self.path}{hint}; {known}", tuple(close))

    def current_session_id(self, meta: Meta) -> str:
        """The session id the worker has now (it changes on /clear), else the one it was launched with."""
        return self.read_tail(meta.session_id, count_lines=False).session_id or meta.session_id

    def launch_under_way(self, meta: Meta) -> bool:
        """A launch or adopt of this worker is running: its launcher holds the name's claim (LaunchClaim)
        and lives. Without a claim naming it (a meta of an older release), a guess: no event yet, and a
        meta younger than the launch timeout (launch writes the meta just before tmux starts the worker)."""
        launcher = launcher_of(self, meta)
        if launcher is not None:
            return launcher.alive
        try:
            if os.stat(self.events_path(meta.session_id)).st_size:
                return False
        except FileNotFoundError:
            pass
        try:
            age = time.time() - self.meta_path(meta.session_id).stat().st_mtime
        except FileNotFoundError:
            return False
        return age < config.seconds("CSD_LAUNCH_TIMEOUT")

    def _paths_of(self, meta: Meta) -> list[Path]:
        sid = meta.session_id
        # the shim is per name: the one that points at this worker's name
        return [self.meta_path(sid), self.events_path(sid), self.lock_path(sid), self.env_path(sid), self.cost_path(sid),
                self.shim_path(meta.tmux_name)]

    def files_of(self, meta: Meta) -> list[Path]:
        """The files csd made for a worker that exist now."""
        return [p for p in self._paths_of(meta) if p.exists() or p.is_symlink()]

    def remove_files(self, meta: Meta) -> None:
        """Remove everything csd made for a worker (idempotent). Under the events file's lock: a statusLine run
        (hook.statusline) holds it while it writes the cost file, and one that takes it later finds the events file
        gone and writes nothing, so no cost file comes back after a stop; a run killed mid-write (the pane's end
        hangs it up) leaves its temporary file, removed here too, as is one of an atomic write (_atomic_write) that a
        process killed outright (SIGKILL, which nothing can catch) left beside the meta or the shim."""
        with _locked(self.events_path(meta.session_id)):
            paths = self._paths_of(meta)
            for p in paths:
                _unlink(p)
            for d in {p.parent for p in paths}:  # the workers dir and bin/
                prefixes = tuple(pre for p in paths if p.parent == d for pre in (f".{p.name}.", f"{p.name}."))
                with contextlib.suppress(FileNotFoundError):
                    for name in os.listdir(d):
                        if name.endswith(".tmp") and name.startswith(prefixes):
                            _unlink(d / name)

    # -- events
    def read_tail(
        self, sid: str, on_bad: Callable[[BadLine], None] | None = None, min_line: int | None = None, count_lines: bool = True
    ) -> Tail:
        return read_tail(self.events_path(sid), on_bad, min_line, count_lines)

    # -- shims
    def write_shim(self, name: str, socket: str | None = None, host: str | None = None) -> Path:
        """``bin/<name>``: runs csd for this worker from any environment (cron, ``env -i``, another shell). It
        carries what locates the worker: this workers dir and the tmux socket (``""``: the default server;
        None: the one in use), or for a worker on another machine the host's name in the hosts file."""
        socket = config.tmux_socket() if socket is None else socket
        where = ["--host", host] if host is not None else ["--tmux-socket", socket]
        argv = [*shim_entry(), "--workers-dir", str(self.path), *where, "--worker", name]
        text = "#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in argv) + ' "$@"\n'
        return _atomic_write(self.shim_path(name), text, 0o700)


def meta_problem(exc: BaseException) -> str:
    """What is wrong with an unreadable meta, in a few words (a RecursionError says nothing useful)."""
    if isinstance(exc, RecursionError):
        return "its JSON is nested too deeply"
    if isinstance(exc, (KeyError, TypeError, AttributeError)):
        return f"not a meta object ({type(exc).__name__}: {exc})"
    return str(exc)


def _check_private_dir(d: Path) -> None:
    st = os.lstat(d)
    why = dir_refusal(st)  # the hook's rule too: it never writes where this refuses to read
    if why == "symlink":
        raise CsdError(f"refusing workers dir {str(d)!r}: it is a symlink (another user could redirect it); remove it or set CSD_WORKERS_DIR")
    if why == "not a directory":
        raise CsdError(f"refusing workers dir {str(d)!r}: it is not a directory")
    if why == "owner":
        raise CsdError(
            f"refusing workers dir {str(d)!r}: it is owned by uid {st.st_uid}, not you (uid {os.geteuid()}); "
            "another user could plant shims there; set CSD_WORKERS_DIR to a dir of your own"
        )
    if why == "mode":
        raise CsdError(
            f"refusing workers dir {str(d)!r}: mode {stat.S_IMODE(st.st_mode):04o} lets group/others write; "
            f"run: chmod 700 {shlex.quote(str(d))}"
        )


def _atomic_write(path: Path, text: str, mode: int) -> Path:
    """Write ``path`` whole or not at all, through a temporary file beside it. Its name is chosen before it is made,
    so an exception anywhere (SIGTERM raises one mid-launch: proc.sigterm_raises), even one that lands between the
    file's creation and its descriptor's return, removes it: nothing half-made is left behind."""
    while True:
        tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        except OSError:  # not made
            raise
        except BaseException:  # an interrupt, perhaps once the file was made
            _unlink(tmp)
            raise
        break
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    return path


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open a file of the workers dir: never through a symlink, never blocking (a planted FIFO), and
    only a regular file; anything else is refused with one line naming it."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CsdError(f"refusing {str(path)!r}: it is a symlink; csd never follows links in the workers dir") from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise CsdError(f"refusing {str(path)!r}: it is not a regular file") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise CsdError(f"refusing {str(path)!r}: it is {kind}, not a regular file csd made; remove it")
    return fd


def open_if_there(path: str | os.PathLike[str]) -> int | None:
    """open_regular for reading, or None when there is no such file (yet, or any more)."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _locked(path: Path, wait: float = 1.0) -> Iterator[None]:
    """``path``'s flock held, when it can be had within ``wait`` seconds (its holders keep it for a write: a
    holder stuck longer does not stop what runs inside); nothing to lock when there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def entry_point() -> list[str]:
    """The absolute command that runs csd with this interpreter, with no launcher in between."""
    script = Path(sys.executable).parent / "csd"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "csd"]


def shim_entry() -> list[str]:
    """What a shim runs: this interpreter on csd/run_cli.py without ``site`` (``-S``; ``-P``: the script's dir is
    not put first on ``sys.path``), which the commands a controller runs in a loop never need; run_cli.py loads
    ``site`` at the first import that needs it. The environment counts as it does for the console script
    (no ``-E``: PYTHONPATH still applies)."""
    return [sys.executable, "-S", "-P", str(Path(__file__).with_name("run_cli.py"))]


def read_tail(
    path: Path, on_bad: Callable[[BadLine], None] | None = None, min_line: int | None = None, count_lines: bool = True
) -> Tail:
    """Events from the last anchor event to the end of the file, read backwards from its end.

    The state depends only on the events since the last anchor (``states.ANCHORS``), so a long log
    costs a read of its tail, never a replay of every line. A missing file is an empty tail. A
    half-written last line (no newline yet) is not counted; a line over ``lines.MAX_LINE`` is skipped
    and reported. With ``min_line`` the tail reaches back at least to that line (``--after-line``
    needs it). Line numbers need a newline count of the whole file; without ``count_lines`` (plain
    ``status``, ``list``) it is skipped: line numbers are then 0 and ``line_count`` is -1.
    """
    if min_line is not None:
        return _full_tail(path, on_bad, min_line)  # --after-line, for bash v3 callers: a forward read
    fd = open_if_there(path)
    if fd is None:
        return Tail([], 0)
    collected: list[tuple[int, bytes]] = []  # (k, line), newest first
    longs: list[int] = []
    try:
        size = os.fstat(fd).st_size
        for k, _, raw in read_backward(fd, size, longs.append):
            collected.append((k, raw))
            if _is_anchor(raw):
                break
        line_count = count_newlines(fd, size) if count_lines else -1
    finally:
        os.close(fd)
    number = (lambda k: line_count - k) if line_count >= 0 else (lambda k: 0)
    if on_bad is not None:
        for k in reversed(longs):
            if not collected or k < collected[-1][0]:  # only those inside the tail
                on_bad(too_long(number(k), MAX_LINE))
    return Tail(list(_parse(((number(k), raw) for k, raw in reversed(collected)), on_bad)), line_count)


def _parse(lines: Iterable[tuple[int, bytes]], on_bad: Callable[[BadLine], None] | None) -> Iterator[Event]:
    for number, raw in lines:
        text = raw.decode("utf-8", "replace")
        if not text.strip():
            continue
        try:
            yield parse_line(text, number)
        except BadLine as bad:
            if on_bad is not None:
                on_bad(bad)


def _on_long(on_bad: Callable[[BadLine], None] | None) -> Callable[[int], None] | None:
    return None if on_bad is None else (lambda number: on_bad(too_long(number, MAX_LINE)))


def _full_tail(path: Path, on_bad: Callable[[BadLine], None] | None, min_line: int) -> Tail:
    """The tail from the last anchor at or before ``min_line``, by a forward read of the whole file."""
    fd = open_if_there(path)
    if fd is None:
        return Tail([], 0)
    events: list[Event] = []
    try:
        size = os.fstat(fd).st_size
        for ev in _parse(read_forward(fd, _on_long(on_bad), end=size), on_bad):
            if ev.line_no <= min_line and is_anchor(ev.name, ev.data):
                events.clear()
            events.append(ev)
        line_count = count_newlines(fd, size)
    finally:
        os.close(fd)
    return Tail(events, line_count)


def _is_anchor(raw: bytes) -> bool:
    if b'"event"' not in raw:  # cheap: most lines are skipped without parsing
        return False
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, dict) and is_anchor(obj.get("event"), obj)


def iter_events(path: Path, on_bad: Callable[[BadLine], None] | None = None) -> Iterator[Event]:
    """Every event of a file, oldest first, read a piece at a time (for read-events and the live table)."""
    fd = open_if_there(path)
    if fd is None:
        return
    try:
        yield from _parse(read_forward(fd, _on_long(on_bad)), on_bad)
    finally:
        os.close(fd)


def last_events(path: Path, n: int, keep: Callable[[Event], bool], on_bad: Callable[[BadLine], None] | None = None) -> list[Event]:
    """The last ``n`` events that ``keep`` accepts, oldest first, read backwards from the file's end.

    Line numbers (on the events and in reports) cost a newline count of the file: only paid when a
    bad line has to be reported."""
    fd = open_if_there(path)
    if fd is None or n <= 0:
        if fd is not None:
            os.close(fd)
        return []
    found: list[tuple[int, Event]] = []
    bad: list[tuple[int, BadLine]] = []
    try:
        size = os.fstat(fd).st_size
        for k, _, raw in read_backward(fd, size, lambda k: bad.append((k, too_long(0, MAX_LINE)))):
            text = raw.decode("utf-8", "replace")
            if not text.strip():
                continue
            try:
                ev = parse_line(text, 0)
            except BadLine as exc:
                bad.append((k, exc))
                continue
            if keep(ev):
                found.append((k, ev))
                if len(found) == n:
                    break
        if bad and on_bad is not None:
            line_count = count_newlines(fd, size)
            for k, exc in reversed(bad):
                on_bad(exc.at(line_count - k))
    finally:
        os.close(fd)
    return [ev for _, ev in reversed(found)]


def last_line_with(path: Path, needle: bytes) -> bytes | None:
    """The last complete line holding ``needle``, read backwards from the end (None: no such line)."""
    fd = open_if_there(path)
    if fd is None:
        return None
    try:
        for _, _, raw in read_backward(fd, os.fstat(fd).st_size):
            if needle in raw:
                return raw
    finally:
        os.close(fd)
    return None


#: Free space under which the hook's next line may not fit: it writes lines of up to hook.LINE_LIMIT.
MIN_FREE = LINE_LIMIT


#: While a wait needs the hook's next lines, how often it checks that they can be written (a full disk
#: has no event; one statvfs per period).
SPACE_CHECK_INTERVAL = 5.0


def events_unwritable(wdir: WorkersDir) -> str | None:
    """Why the hook cannot append events lines now (the workers dir's file system is full), else None.

    The hook reports a failed write only to Claude Code (stderr, exit 1); csd looks at the file system."""
    try:
        st = os.statvfs(wdir.path)
    except OSError:
        return None
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    if free >= MIN_FREE:
        return None
    return (
        f"events file could not be written: the file system of {wdir.path} is full ({free} bytes free), so the "
        "hook is losing the workers' events; free some space, then see where the worker is with: status, read-turn"
    )


def has_consent(home: str | None = None) -> bool:
    return (Path(home or os.path.expanduser("~")) / CONSENT_FILE).is_file()


def consent_path() -> Path:
    return Path(os.path.expanduser("~")) / CONSENT_FILE


# -- the claim on a name while it is launched


class Launcher(Value):
    """What a launch records in its claim file: who (pid and start time) launches which session of the
    name, since when, and whether into a pane that was there before (adopt respawning a session)."""

    _fields = ("pid", "start", "session_id", "since", "respawn")
    pid: int
    start: int
    session_id: str
    since: str
    respawn: bool

    def __init__(self, pid: int, start: int, session_id: str, since: str, respawn: bool = False) -> None:
        self._set(pid=pid, start=start, session_id=session_id, since=since, respawn=respawn)

    @classmethod
    def parse(cls, raw: bytes) -> Launcher | None:
        try:
            obj = json.loads(raw)
            launcher = cls(int(obj["pid"]), int(obj["start"]), str(obj["session_id"]), str(obj.get("since", "")),
                           obj.get("respawn") is True)
        except (ValueError, KeyError, TypeError):
            return None
        return launcher if UUID_RE.fullmatch(launcher.session_id) else None

    @property
    def alive(self) -> bool:
        from csd.proc import proc_start

        return bool(self.start) and proc_start(self.pid) == self.start


class LaunchClaim:
    """The exclusive claim on a worker name while it is launched or adopted: an ``flock`` on
    ``<wdir>/NAME.launching``, taken before anything else is looked at or made.

    A second launch of the name fails at once without touching anything. The file says which session
    is being launched; it is removed when the launch ends either way. A launcher killed with SIGKILL
    leaves the file behind, unlocked: the next launch (which then holds the lock, so no launch of that
    name is running) finds there what the dead one made.
    """

    def __init__(self, wdir: WorkersDir, name: str) -> None:
        import fcntl

        self.path = wdir.claim_path(name)
        while True:
            fd = open_regular(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = Launcher.parse(os.pread(fd, 4096, 0))
                os.close(fd)
                who = f"pid {holder.pid}, since {holder.since}" if holder else "another csd process"
                raise CsdError(
                    f"worker {name!r} is being launched right now ({who}); wait for that launch to end, then: csd list"
                ) from None
            # A launch that just ended unlinked the file we opened: lock the one now under the name.
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd: int | None = fd
        #: What the file held: a launcher that left it there died during its launch.
        self.previous = Launcher.parse(os.pread(fd, 4096, 0))

    def record(self, session_id: str, respawn: bool) -> None:
        from csd.proc import proc_start

        launcher = Launcher(os.getpid(), proc_start(os.getpid()), session_id, now_iso(), respawn)
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, json.dumps(launcher.as_dict()).encode(), 0)

    def release(self) -> None:
        """Remove the file, then unlock (in that order: nobody can lock a file that is going away)."""
        if self.fd is not None:
            _unlink(self.path)
            os.close(self.fd)
            self.fd = None


def launcher_of(wdir: WorkersDir, meta: Meta) -> Launcher | None:
    """Who launched ``meta`` if its name's claim file names its session (a launch under way, or one that
    died mid-way), else None. Read without locking, so it never gets in a launch's way."""
    try:
        with os.fdopen(open_regular(wdir.claim_path(meta.tmux_name)), "rb") as f:
            launcher = Launcher.parse(f.read(4096))
    except (OSError, CsdError):
        return None
    return launcher if launcher is not None and launcher.session_id == meta.session_id else None


def interrupted_launch(wdir: WorkersDir, meta: Meta) -> Launcher | None:
    """The dead launcher that left ``meta`` half-made (its claim names this session, its process is gone)."""
    launcher = launcher_of(wdir, meta)
    return launcher if launcher is not None and not launcher.alive else None
