"""The one watching core: a directory's file changes and the complete lines appended to its files, via inotify or polling."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from csd import config, inotify
from csd.errors import CsdError, UsageError
from csd.lines import MAX_LINE, READ_BUDGET, FileLines

if TYPE_CHECKING:
    from types import TracebackType

    from csd.inotify import Inotify

# Environment variable that picks the backend: "inotify" (insist), "poll" (force the fallback) or
# unset/"auto" (inotify where available). An explicit `backend=` argument wins over it.
BACKEND_ENV = "CSD_WATCH_BACKEND"
BACKENDS = ("inotify", "poll")

# Fallback backend period: a scandir + stat of the directory every 50 ms. Short enough that a waiting
# command wakes well inside a human's notice, cheap enough for a few hundred files; it is only used
# where inotify is missing (macOS) or when forced, so its CPU cost is accepted there.
POLL_INTERVAL = 0.05


# Errors from inotify_init1/inotify_add_watch meaning "no inotify for us right now", not "bad directory".
_FALLBACK_ERRNOS = frozenset({errno.EMFILE, errno.ENOSPC, errno.ENOSYS})

log = logging.getLogger(__name__)


# The watch of a directory's files and what says the directory is gone: csd.inotify's, the one home of the bits.
_DIR_MASK = inotify.DIR_MASK
_GONE_BITS = inotify.DIR_GONE
_OVERFLOW_BIT = inotify.Q_OVERFLOW
_SKIP_BITS = inotify.ISDIR
_CREATED_BITS = inotify.CREATE | inotify.MOVED_TO
_DELETED_BITS = inotify.DELETE | inotify.MOVED_FROM
_MODIFIED_BIT = inotify.MODIFY


class ChangeKind(StrEnum):
    CREATED = "created"  # a file now exists under the name (new, or another file renamed over it)
    MODIFIED = "modified"  # the file under the name was written (or may have been: after an overflow)
    DELETED = "deleted"  # the name no longer exists


class Change(NamedTuple):
    kind: ChangeKind
    name: str


class Line(NamedTuple):
    number: int  # 1-based within the current file; back to 1 after a truncation or replacement
    text: str  # without the trailing "\n", decoded as UTF-8 with errors="replace"


# (st_dev, st_ino, st_size, st_mtime_ns): identity first, so [:2] tells a replacement from a write.
FileStat = tuple[int, int, int, int]


def scan_directory(directory: str | os.PathLike[str], dirs: bool = False) -> dict[str, FileStat]:
    """Stat every non-directory entry of `directory` (with `dirs`, its subdirectories too) without following
    symlinks."""
    snapshot: dict[str, FileStat] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # removed between readdir and stat: it is simply not there
                continue
            if stat.S_ISDIR(st.st_mode) and not dirs:
                continue
            snapshot[entry.name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return snapshot


def diff_snapshots(old: Mapping[str, FileStat | None], new: Mapping[str, FileStat]) -> list[Change]:
    """The changes that turn `old` into `new`; a None stat in `old` means "present, state unknown".

    This is the poll backend's whole detector, and the inotify backend's rescan after a queue overflow,
    where only the names are known, so every surviving file is reported as possibly modified.
    """
    changes = [Change(ChangeKind.DELETED, name) for name in sorted(old.keys() - new.keys())]
    for name in sorted(new):
        if name not in old:
            changes.append(Change(ChangeKind.CREATED, name))
            continue
        before, after = old[name], new[name]
        if before is None:
            changes.append(Change(ChangeKind.MODIFIED, name))
        elif before[:2] != after[:2]:
            changes.append(Change(ChangeKind.CREATED, name))
        elif before != after:
            changes.append(Change(ChangeKind.MODIFIED, name))
    return changes


def _inotify_available() -> bool:
    return inotify.available()


def _choose_backend(requested: str | None) -> tuple[str, bool]:
    """Return (backend, insisted) from the argument, else the environment, else what the system has."""
    choice = requested if requested is not None else config.get(BACKEND_ENV)
    choice = choice.strip().lower() or "auto"
    if choice not in ("auto", *BACKENDS):
        raise UsageError(f"watch backend {choice!r} is not one of: auto, {', '.join(BACKENDS)} (set by {BACKEND_ENV})")
    if choice == "poll":
        return "poll", True
    if _inotify_available():
        return "inotify", choice == "inotify"
    if choice == "inotify":
        raise CsdError(f"watch backend 'inotify' is unavailable here; unset {BACKEND_ENV} or set it to 'poll'")
    return "poll", False


class Follower:
    """Async iterator of the complete lines of one file of a DirWatcher; made by DirWatcher.follow(). The
    reading (truncation, replacement, removal, long lines) is csd.lines.FileLines'; this wakes it."""

    def __init__(self, watcher: DirWatcher, name: str, start_line: int, on_long: Callable[[int], None] | None = None) -> None:
        self.name = name
        self.path = watcher.directory / name
        self._watcher = watcher
        on_long = on_long or (lambda n: log.warning("%s: skipping line %d: longer than %d bytes", self.path, n, MAX_LINE))
        # Opened now, not at the first next(): a file deleted before the consumer starts iterating must
        # still yield what it held and end, rather than leave us waiting for it to be created.
        self._file = FileLines(self.path, start_line, on_long, on_reset=lambda why: log.warning("%s", why))
        self._lines: deque[Line] = deque()
        self._ended = False
        self._wake = asyncio.Event()
        self._wake.set()  # the file may hold lines already: the first next() reads

    @property
    def resets(self) -> int:
        """Truncations + replacements seen; each one restarts line numbers at 1."""
        return self._file.resets

    def __aiter__(self) -> Follower:
        return self

    async def __anext__(self) -> Line:
        while not self._lines:
            if self._ended:
                self.close()
                raise StopAsyncIteration
            if not self._wake.is_set():
                # Read to the end and nothing changed since: wait for a change rather than read again (a
                # watch over many busy workers would otherwise read each file twice per line appended).
                await self._wake.wait()
            # Cleared before reading, so a change landing while we read sets it again: no lost wakeup.
            self._wake.clear()
            if self._watcher.closed:
                # Watcher gone (directory removed): what the open file holds is the last there will be.
                self._take(self._file.drain())
                self._end()
                continue
            lines, more = self._file.read(READ_BUDGET)
            self._take(lines)
            if self._file.ended:
                self._end()
            elif more:
                self._wake.set()  # more to read whatever the watcher says
                await asyncio.sleep(0)  # let the loop run first
        return self._lines.popleft()

    def _take(self, lines: list[tuple[int, str]]) -> None:
        self._lines.extend(Line(number, text) for number, text in lines)

    def close(self) -> None:
        """Stop following: close the file and end the iteration; lines not yet taken are dropped."""
        self._lines.clear()
        self._end()
        self._watcher._unregister(self)

    async def aclose(self) -> None:
        """Same as close(), so `contextlib.aclosing(watcher.follow(...))` works."""
        self.close()

    def _poke(self) -> None:
        self._wake.set()

    def _end(self) -> None:
        if self._file.pending and not self._ended:
            log.debug("%s ended with an unterminated line of %d bytes; dropped", self.path, self._file.pending)
        self._ended = True
        self._file.end()
        self._wake.set()


class ChangeStream:
    """Async iterator of Change(kind, name) for the files of a DirWatcher; made by DirWatcher.changes()."""

    def __init__(self, watcher: DirWatcher, name: str | None = None, suffixes: tuple[str, ...] | None = None,
                 call: Callable[[Change], None] | None = None) -> None:
        self._watcher = watcher
        self.name = name  # only this file's changes (None: every file's)
        self.suffixes = suffixes  # only the changes of names ending so (None: every name's)
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()  # None marks the end
        self._done = False
        self._call = call  # DirWatcher.on_change: called with each change instead of queueing it

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> Change:
        if not self._done:
            change = await self._queue.get()
            if change is not None:
                return change
            self._done = True
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop receiving changes; the iteration ends after those already queued."""
        self._watcher._unregister(self)
        self._finish()

    async def aclose(self) -> None:
        self.close()

    def _put(self, change: Change) -> None:
        if self._call is not None:
            self._call(change)
        else:
            self._queue.put_nowait(change)

    def _finish(self) -> None:
        self._queue.put_nowait(None)


class DirWatcher:
    """Watch one directory; follow its files line by line and report its files appearing and vanishing.

    `async with DirWatcher(directory, backend=None) as w:` sets up the watch (inotify: one fd on the
    running loop, zero CPU while idle; poll: a scan every POLL_INTERVAL, one owned task) and raises
    OSError if `directory` is not a directory. `backend` is "inotify", "poll" or None (use $CSD_WATCH_BACKEND,
    else inotify where available); `w.backend` says which is in use.

    `w.follow(name, start_line=0)` -> Follower, an async iterator of Line(number, text): every complete
    line of the file (text without "\\n", UTF-8 with errors="replace"; a trailing unterminated line is held
    until its "\\n"), numbered from 1, skipping the first `start_line`. A line over lines.MAX_LINE is
    skipped (it still counts) and reported through `on_long(number)` (default: a logged warning); at most
    READ_BUDGET bytes are read before the loop runs again. It opens the file at once and reads
    what is there (so nothing written after the watch began is lost), waits for the file if it does not
    exist yet, restarts from line 1 on truncation or on another file taking the name (Follower.resets
    counts these, and a warning is logged), and ends when the file is deleted (after its last complete
    lines) or the watcher closes. Call `.close()` to stop one early. A symlink or a non-regular file
    under the name raises OSError: files are never opened through symlinks.

    `w.changes()` -> ChangeStream, an async iterator of Change(kind, name), kind "created" | "modified" |
    "deleted", for every non-directory entry, from the moment it is called until the watcher closes;
    `w.changes(name)` for one file's, `w.changes(suffixes=(...))` for the files whose names end so.

    `DirWatcher(..., gather=seconds)` (inotify): after a wake, the changes of that long are read in one pass
    and a file written several times in it is reported once (csd watch over hundreds of busy workers; never a
    waiter, whose wake it would delay). `writes=False`: writes to files are not reported at all (inotify: not
    even asked of the kernel), for a watch of names coming and going. `w.on_change(name, call)`: call(change)
    for each change of one file as it is read, with no queue nor task (close the returned stream to stop).

    On inotify queue overflow the directory is rescanned (see diff_snapshots) and every follower re-syncs;
    `w.rescans` counts these. If the directory itself is deleted or moved, every iterator ends.
    """

    def __init__(self, directory: str | os.PathLike[str], backend: str | None = None, dirs: bool = False,
                 gather: float = 0.0, writes: bool = True) -> None:
        self.directory = Path(directory)
        self.dirs = dirs  # report subdirectories made and removed too (a wait for a directory to appear)
        # False: the kernel is not asked for writes (inotify), so files written in the directory (a busy workers
        # dir) never wake a watch that waits only for names to come and go (wait_dir)
        self.writes = writes
        # inotify only: after a wake, how long to let changes gather before reading them (see _on_readable)
        self.gather = gather
        self._gathering: asyncio.TimerHandle | None = None
        self._skip_bits = 0 if dirs else _SKIP_BITS
        self.backend, self._insisted = _choose_backend(backend)
        self.closed = False
        self.rescans = 0
        self._entered = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inotify: Inotify | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._followers: dict[str, set[Follower]] = {}
        self._streams: set[ChangeStream] = set()
        self._named: dict[str, set[ChangeStream]] = {}  # the streams of one file's changes, by its name
        self._names: set[str] = set()  # inotify only: what a rescan compares against

    async def __aenter__(self) -> DirWatcher:
        if self._entered:
            raise RuntimeError("a DirWatcher can be entered only once")
        self._loop = asyncio.get_running_loop()
        if self.backend == "inotify":
            try:
                self._start_inotify()
            except OSError as exc:
                # Out of inotify instances or watches: polling still works, unless inotify was insisted on.
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                if self._insisted:
                    raise CsdError(
                        f"{BACKEND_ENV}=inotify, but no inotify is left for this user ({exc.strerror}: the limits are "
                        "fs.inotify.max_user_instances and max_user_watches); unset it to fall back to polling, or raise the limits"
                    ) from None
                log.warning("inotify unavailable (%s); polling %s every %.0f ms", exc, self.directory, POLL_INTERVAL * 1000)
                self.backend = "poll"
        if self.backend == "poll":
            snapshot = scan_directory(self.directory, self.dirs)
            self._poll_task = asyncio.create_task(self._poll(snapshot), name=f"csd-watch-poll:{self.directory}")
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._shutdown()
        for followers in list(self._followers.values()):
            for follower in list(followers):
                follower.close()
        task, self._poll_task = self._poll_task, None
        if task is not None:
            task.cancel()
            # asyncio.wait never raises the task's CancelledError, yet still raises ours if we are cancelled.
            await asyncio.wait({task})
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure

    def follow(self, name: str, start_line: int = 0, on_long: Callable[[int], None] | None = None) -> Follower:
        """Follow the lines of file `name` in the directory; see the class docstring."""
        self._check_usable(name)
        if start_line < 0:
            raise ValueError(f"start_line must be >= 0, not {start_line}")
        follower = Follower(self, name, start_line, on_long)
        self._followers.setdefault(name, set()).add(follower)
        return follower

    def changes(self, name: str | None = None, suffixes: tuple[str, ...] | None = None) -> ChangeStream:
        """Report every later change to the directory's files (``name``: to that file only; many such streams on
        one directory cost one comparison each per change, not a wakeup each; ``suffixes``: to the files whose
        names end with one of these, the others neither queued nor waking anyone); see the class docstring."""
        self._check_usable(name)
        if suffixes is not None and (not suffixes or not all(suffixes)):
            raise ValueError(f"suffixes must be non-empty strings, not {suffixes!r}")
        stream = ChangeStream(self, name, suffixes)
        if name is None:
            self._streams.add(stream)
        else:
            self._named.setdefault(name, set()).add(stream)
        if self.closed:
            stream._finish()
        return stream

    def on_change(self, name: str, call: Callable[[Change], None]) -> ChangeStream:
        """Call ``call(change)`` for each later change of file ``name`` as the watcher reads it, until the
        returned stream is closed (it is not iterated): no queue and no task woken per change, for a follower
        that only reads a little of the file each time (Supervisor.follow_api, one per worker). ``call`` runs
        in the loop's reader callback: it must neither block nor raise."""
        self._check_usable(name)
        stream = ChangeStream(self, name, None, call)
        self._named.setdefault(name, set()).add(stream)
        return stream

    def _check_usable(self, name: str | None) -> None:
        if not self._entered:
            raise RuntimeError("use the DirWatcher as `async with DirWatcher(...) as w:` first")
        if name is not None and (not name or "/" in name or name in (".", "..")):
            raise ValueError(f"not a file name in {self.directory}: {name!r}")

    def _unregister(self, item: Follower | ChangeStream) -> None:
        if isinstance(item, ChangeStream):
            self._streams.discard(item)
            named = self._named.get(item.name or "")
            if named is not None:
                named.discard(item)
                if not named:
                    del self._named[item.name or ""]
            return
        followers = self._followers.get(item.name)
        if followers is not None:
            followers.discard(item)
            if not followers:
                del self._followers[item.name]

    def _dispatch(self, changes: Iterable[Change]) -> None:
        """Fan changes out: wake the followers of each name, queue each change for every stream."""
        for change in changes:
            if change.kind is ChangeKind.DELETED:
                self._names.discard(change.name)
            else:
                self._names.add(change.name)
            for follower in self._followers.get(change.name, ()):
                follower._poke()
            for stream in self._streams:
                if stream.suffixes is None or change.name.endswith(stream.suffixes):
                    stream._put(change)
            for stream in self._named.get(change.name, ()):
                stream._put(change)

    def _shutdown(self) -> None:
        """Stop watching; wake every follower (it drains its open file and ends) and end every stream."""
        if self.closed:
            return
        self.closed = True
        ino, self._inotify = self._inotify, None
        if self._gathering is not None:
            self._gathering.cancel()
        if ino is not None:
            try:
                assert self._loop is not None
                self._loop.remove_reader(ino.fileno())
            finally:
                ino.close()  # its watch removed first (Inotify.unwatch)
        for followers in self._followers.values():
            for follower in followers:
                follower._poke()
        for stream in [*self._streams, *(s for named in self._named.values() for s in named)]:
            stream._finish()

    # --- inotify backend ---------------------------------------------------------------------------

    def _start_inotify(self) -> None:
        from csd.inotify import Inotify

        ino = Inotify()  # non-blocking, close-on-exec
        try:
            # Watch first, list second: a file created in between is then both listed and reported,
            # never neither.
            ino.add_watch(self.directory, _DIR_MASK if self.writes else _DIR_MASK & ~inotify.MODIFY)
            self._names = set(scan_directory(self.directory, self.dirs))
            assert self._loop is not None
            self._loop.add_reader(ino.fileno(), self._on_readable)
        except BaseException:
            ino.close()
            raise
        self._inotify = ino

    def _on_readable(self) -> None:
        if self._inotify is None:
            return
        if self.gather > 0:
            # Stop listening and read everything that came in ``gather`` seconds, in one pass: under a steady
            # stream of changes (a watch over hundreds of busy workers) each wake then handles many, and a file
            # changed several times in the window is read once. The changes wait in the kernel's queue.
            assert self._loop is not None
            self._loop.remove_reader(self._inotify.fileno())
            self._gathering = self._loop.call_later(self.gather, self._read_gathered)
            return
        self._read_events()

    def flush(self) -> None:
        """Report now what the kernel has queued (a gather in progress ends early): for a watch that is about to
        stop, so that the changes made just before its stop (a worker stopped, then Ctrl-C) are not left unread."""
        if self._gathering is not None:
            self._gathering.cancel()
            self._read_gathered()
        elif self._inotify is not None:
            self._read_events()  # queued, the loop not yet told

    def _read_gathered(self) -> None:
        self._gathering = None
        if self._inotify is None:
            return
        assert self._loop is not None
        self._loop.add_reader(self._inotify.fileno(), self._on_readable)
        self._read_events()

    def _read_events(self) -> None:
        assert self._inotify is not None
        try:
            events = self._inotify.read()
        except OSError:
            # A reader that keeps failing would spin the loop; end cleanly and say why.
            log.exception("reading inotify events for %s failed; stopping the watch", self.directory)
            self._shutdown()
            return
        gone = False
        changes: list[Change] = []
        last: dict[str, ChangeKind] = {}  # each name's latest change in this pass
        for _, mask, name in events:
            if mask & _OVERFLOW_BIT:
                self._dispatch(changes)
                changes, last = [], {}
                if not self._rescan():
                    gone = True
                continue
            if mask & _GONE_BITS:
                gone = True  # only the directory's own watch gets these; it is our only watch
                continue
            if mask & self._skip_bits or not name:
                continue
            if mask & _CREATED_BITS:
                kind = ChangeKind.CREATED
            elif mask & _DELETED_BITS:
                kind = ChangeKind.DELETED
            elif mask & _MODIFIED_BIT:
                # a write after a write or a creation in the same pass tells nobody anything new: whoever
                # reads the file reads it after the pass
                if last.get(name) in (ChangeKind.MODIFIED, ChangeKind.CREATED):
                    continue
                kind = ChangeKind.MODIFIED
            else:
                continue
            last[name] = kind
            changes.append(Change(kind, name))
        self._dispatch(changes)
        if gone:
            self._shutdown()

    def _rescan(self) -> bool:
        """After an overflow (events were lost): report the directory's state and wake every follower.

        Returns False if the directory is gone.
        """
        self.rescans += 1
        log.warning("inotify queue overflowed for %s; rescanning", self.directory)
        try:
            current = scan_directory(self.directory, self.dirs)
        except (FileNotFoundError, NotADirectoryError):
            self._dispatch(diff_snapshots(dict.fromkeys(self._names), {}))
            return False
        self._dispatch(diff_snapshots(dict.fromkeys(self._names), current))
        # A follower of a file that came and went during the overflow gets no change above; wake them
        # all anyway, it costs one stat each.
        for followers in self._followers.values():
            for follower in followers:
                follower._poke()
        return True

    # --- poll backend ------------------------------------------------------------------------------

    async def _poll(self, snapshot: dict[str, FileStat]) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                current = scan_directory(self.directory, self.dirs)
            except (FileNotFoundError, NotADirectoryError):
                self._dispatch(diff_snapshots(snapshot, {}))
                self._shutdown()
                return
            self._dispatch(diff_snapshots(snapshot, current))
            snapshot = current


#: wait_dir's gather (DirWatcher.gather): the parent it watches may be a busy workers dir (the remote records'
#: dir is in it, and csd watch waits for it for its whole run), whose files come and go (cost files' renames)
#: a hundred times a second at 200 workers; a directory appearing is then seen up to this much later, which
#: neither of its waits (watch's remote rows, a reply's transcript dir made late) notices.
DIR_WAIT_GATHER = 0.05


async def wait_dir(directory: Path, backend: str | None) -> None:
    """Until ``directory`` exists, watching the nearest existing ancestor (one level at a time). An ancestor
    removed meanwhile is waited for again: this returns only once ``directory`` is there."""
    while not directory.is_dir():
        parent = directory.parent
        if not parent.is_dir():
            await wait_dir(parent, backend)
        try:
            # dirs: a watch of files skips directories; writes=False and this name's changes only: the parent
            # may be a busy workers dir (the remote records' dir is in it), whose files' changes are not ours
            async with DirWatcher(parent, backend=backend, dirs=True, writes=False, gather=DIR_WAIT_GATHER) as watcher:
                changes = watcher.changes(directory.name)
                if directory.is_dir():
                    return
                async for _ in changes:
                    if directory.is_dir():
                        return
        except (FileNotFoundError, NotADirectoryError):
            continue  # the parent went between the look and the watch: look again
