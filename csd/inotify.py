"""inotify(7), the two C calls through ctypes on the C library the process already runs on, and the events
parsed with struct: what csd.watch's DirWatcher and csd.waiter's wait watch directories with.

Not inotify_simple: importing it pulls ``ctypes.util`` (shutil, tempfile, bz2, lzma, random: ~2 MB of a waiting
process's RSS and ~8 ms of its start), and its first instance runs ``ldconfig -p`` in a subprocess to find the C
library, in every csd command that waits (bench/README.md). A csd command lives for one operation, so that
start-up is most of what it would cost; the calls themselves are these few lines.
"""

from __future__ import annotations

import os
import struct
import sys

#: inotify(7) bits (the kernel ABI's), as plain ints: every event's mask is tested against them, and an IntFlag
#: operation costs a microsecond or more where a busy workers dir has hundreds of events a second.
MODIFY, MOVED_FROM, MOVED_TO, CREATE, DELETE = 0x2, 0x40, 0x80, 0x100, 0x200
DELETE_SELF, MOVE_SELF, UNMOUNT, Q_OVERFLOW, IGNORED = 0x400, 0x800, 0x2000, 0x4000, 0x8000
ONLYDIR, EXCL_UNLINK, ISDIR = 0x01000000, 0x04000000, 0x40000000
#: A watch of a directory's files (csd.watch's and csd.waiter's): written, made, removed, renamed, and the
#: directory itself going. IN_CLOSE_WRITE is left out on purpose: every write already raises IN_MODIFY and metas
#: are published by rename (IN_MOVED_TO), so it would only duplicate events. IN_EXCL_UNLINK: writes to a file
#: after its name is gone (a straggling hook) are nobody's business any more.
DIR_MASK = MODIFY | CREATE | MOVED_TO | DELETE | MOVED_FROM | DELETE_SELF | MOVE_SELF | ONLYDIR | EXCL_UNLINK
#: Any of these on the directory's own watch means the directory as we knew it is gone.
DIR_GONE = DELETE_SELF | MOVE_SELF | IGNORED | UNMOUNT
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
#: Bytes per read: room for hundreds of events (each is 16 bytes and its NUL-padded name).
_BUFFER = 1 << 16
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (of the NUL-padded name that follows)


def available() -> bool:
    """Whether this system has inotify for us to call (Linux's C library, ctypes importable)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return hasattr(ctypes.CDLL(None), "inotify_init1")
    except (ImportError, OSError):
        return False


class Inotify:
    """One non-blocking, close-on-exec inotify instance; ``fileno()`` for epoll, ``read()`` what is queued."""

    def __init__(self) -> None:
        import ctypes

        self._libc = libc = ctypes.CDLL(None, use_errno=True)  # the C library this process already runs on
        self._errno = ctypes.get_errno
        self._fd = self._call(libc.inotify_init1, _IN_NONBLOCK | _IN_CLOEXEC)
        self._wds: set[int] = set()

    def _call(self, function: object, *args: object) -> int:
        rc: int = function(*args)  # type: ignore[operator]
        if rc < 0:
            code = self._errno()
            raise OSError(code, os.strerror(code))
        return rc

    def fileno(self) -> int:
        return self._fd

    def add_watch(self, path: os.PathLike[str] | str, mask: int) -> int:
        wd = self._call(self._libc.inotify_add_watch, self._fd, os.fsencode(path), mask)
        self._wds.add(wd)
        return wd

    def rm_watch(self, wd: int) -> None:
        self._wds.discard(wd)
        self._call(self._libc.inotify_rm_watch, self._fd, wd)

    def unwatch(self) -> None:
        """Remove every watch, as soon as nothing more is to be heard (close does it too). Closing an instance
        that still holds a watch waits in the kernel until the watch is retired, ~14 ms more often than not
        (an SRCU grace period); a watch removed first is retired in the background, and closing a few ms
        later costs nothing (bench/README.md, "closing the inotify instance")."""
        for wd in list(self._wds):
            try:
                self.rm_watch(wd)
            except OSError:  # EINVAL: gone already (its directory was removed)
                pass

    def read(self) -> list[tuple[int, int, str]]:
        """Every queued event as (wd, mask, name), ``name`` "" for the watched directory itself; [] if none.
        Never blocks (the instance is non-blocking: wait for it with epoll or the event loop)."""
        out: list[tuple[int, int, str]] = []
        while True:
            try:
                data = os.read(self._fd, _BUFFER)  # whole events only: the kernel never splits one
            except BlockingIOError:
                return out
            pos = 0
            while pos + _HEADER.size <= len(data):
                wd, mask, _, size = _HEADER.unpack_from(data, pos)
                pos += _HEADER.size
                out.append((wd, mask, os.fsdecode(data[pos : pos + size].rstrip(b"\0"))))
                pos += size

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.unwatch()
            finally:
                os.close(self._fd)
                self._fd = -1
