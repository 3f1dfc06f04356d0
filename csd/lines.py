"""Lines of append-only files (the events logs), read in bounded memory: a line over MAX_LINE is skipped and
reported, never held whole, and a tail is read from the file's end, never from its start."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

#: The longest line csd reads from an events file. The hook writes lines of at most 64 KiB (hook.LINE_LIMIT);
#: anything much longer was not written by it, and holding it (or parsing it) would cost memory and time.
MAX_LINE = 1 << 20
#: How much is read per system call.
CHUNK = 1 << 16
#: Most bytes a follower reads before it lets what it serves run again: a huge append never blocks it.
READ_BUDGET = 4 << 20
#: Bytes just before a follower's offset that it re-reads to tell an append from a truncate-and-regrow.
MARK = 4096  # one page: it reaches back past a line's fixed-shape end into what makes it unique


class Splitter:
    """Bytes in, complete lines out (without "\\n"), numbered from 1, in memory bounded by ``max_line``.

    A line that grows past ``max_line`` is reported once through ``on_long(number)`` as soon as it does,
    and dropped up to its newline; it still counts, so the numbers of the lines after it stay right.
    """

    def __init__(self, max_line: int = MAX_LINE, on_long: Callable[[int], None] | None = None) -> None:
        self.max_line = max_line
        self.count = 0  # complete lines so far, skipped ones included
        self._on_long = on_long
        self._buf = bytearray()
        self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes of the unterminated last line held (0 while one is being skipped)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            number = self.count + 1
            if not self._skipping:
                if len(self._buf) + nl - start > self.max_line:
                    self._report(number)
                elif self._buf:
                    self._buf += data[start:nl]
                    out.append((number, bytes(self._buf)))
                else:
                    out.append((number, data[start:nl]))
            self._buf.clear()
            self._skipping = False
            self.count = number
            start = nl + 1
        if not self._skipping and start < len(data):
            if len(self._buf) + len(data) - start > self.max_line:
                self._report(self.count + 1)
                self._buf.clear()
                self._skipping = True
            else:
                self._buf += data[start:]
        return out

    def _report(self, number: int) -> None:
        if self._on_long is not None:
            self._on_long(number)


def read_forward(
    fd: int, on_long: Callable[[int], None] | None = None, max_line: int = MAX_LINE, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, bytes]]:
    """(number, line) for every complete line of ``fd`` from ``start`` (a line boundary) to ``end`` (default EOF)."""
    splitter = Splitter(max_line, on_long)
    pos = start
    while end is None or pos < end:
        data = os.pread(fd, CHUNK if end is None else min(CHUNK, end - pos), pos)
        if not data:
            break
        pos += len(data)
        yield from splitter.feed(data)


def read_backward(
    fd: int, size: int, on_long: Callable[[int], None] | None = None, max_line: int = MAX_LINE
) -> Iterator[tuple[int, int, bytes]]:
    """(k, offset, line) for the complete lines in the first ``size`` bytes of ``fd``, newest first: k = 0
    is the last complete line (an unterminated tail is not one), ``offset`` where the line starts. A line
    over ``max_line`` is reported through ``on_long(k)`` and skipped, never held whole."""
    end = _last_newline(fd, size)
    if end < 0:
        return
    k = 0
    carry = bytearray()  # the end part of the current line; its start is further back
    skipping = False
    pos = end  # bytes from pos on are read; the current line ends at `end`, then at each newline found
    while pos > 0:
        lo = max(0, pos - CHUNK)
        block = os.pread(fd, pos - lo, lo)
        cut = len(block)
        while (nl := block.rfind(b"\n", 0, cut)) >= 0:
            if not skipping:
                if len(carry) + cut - nl - 1 > max_line:
                    _report(on_long, k)
                else:
                    yield k, lo + nl + 1, block[nl + 1 : cut] + carry
            carry.clear()
            skipping = False
            k += 1
            cut = nl
        if not skipping:
            if len(carry) + cut > max_line:
                _report(on_long, k)
                carry.clear()
                skipping = True
            else:
                carry[:0] = block[:cut]
        pos = lo
    if not skipping:  # the file's first line
        yield k, 0, bytes(carry)


def _last_newline(fd: int, size: int) -> int:
    pos = size
    while pos > 0:
        lo = max(0, pos - CHUNK)
        nl = os.pread(fd, pos - lo, lo).rfind(b"\n")
        if nl >= 0:
            return lo + nl
        pos = lo
    return -1


def _report(on_long: Callable[[int], None] | None, k: int) -> None:
    if on_long is not None:
        on_long(k)


def count_newlines(fd: int, end: int) -> int:
    """Newlines in the first ``end`` bytes, read a MiB at a time."""
    count, pos = 0, 0
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        if not chunk:
            break
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


class FileLines:
    """The complete lines appended to the file named ``path``, read as they come (the caller says when: on
    a change the watcher saw), in bounded memory, numbered from 1 and skipping the first ``start_line``.

    It follows the name: a truncation (log rotation), even one regrown past what was read, and another
    file put under the name (a rename over it) each start the numbering again at 1 (``resets`` counts them,
    ``on_reset`` hears why); the name removed ends it (``ended``). A file not there yet is waited for; once
    one was opened, a missing name means removed. The synchronous core of csd.watch.Follower, and what
    csd.waiter follows with no event loop at all.
    """

    def __init__(self, path: os.PathLike[str] | str, start_line: int = 0, on_long: Callable[[int], None] | None = None,
                 on_reset: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.resets = 0
        self.ended = False
        self._skip = start_line
        self._on_long = on_long
        self._on_reset = on_reset
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._opened = False
        self._offset = 0
        self._mark = b""  # the bytes just before _offset, as read
        self._splitter = Splitter(MAX_LINE, on_long)
        # Open now: a file removed before the first read must still give what it held, and end.
        self._open()

    @property
    def pending(self) -> int:
        return self._splitter.pending

    def read(self, budget: int | None = None) -> tuple[list[tuple[int, str]], bool]:
        """The lines appended since the last read (a reset or the end included), and whether more than
        ``budget`` bytes were there (then call again: what is left waits for it, whatever the watcher says)."""
        out: list[tuple[int, str]] = []
        while not self.ended:
            if self._fd is None and not self._open():
                if self._opened:
                    self.end()
                break
            if self._rewritten():
                # Truncated under us, even if already written past our offset again: what we read is no
                # longer the file.
                self._restart("truncated")
            if self._read(out, budget):
                return out, True
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                self.end()
                break
            if (now.st_dev, now.st_ino) == self._ident:
                break
            # Another file under the name (rename over it, or delete + recreate between two looks): the old
            # one has been drained above, so start over on the new one.
            self._close_fd()
            self._restart("replaced")
        return out, False

    def drain(self) -> list[tuple[int, str]]:
        """What the open file still holds, whatever its name points to now (its directory is gone)."""
        out: list[tuple[int, str]] = []
        if self._fd is not None:
            while self._read(out, None):
                pass
        return out

    def end(self) -> None:
        self.ended = True
        self._close_fd()

    def _open(self) -> bool:
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # NONBLOCK: a FIFO must not hang us
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(f"cannot follow {self.path}: not a regular file")
        self._fd, self._ident, self._opened = fd, (st.st_dev, st.st_ino), True
        return True

    def _rewritten(self) -> bool:
        """Shorter than what we read, or no longer holding the bytes we read last."""
        assert self._fd is not None
        if os.fstat(self._fd).st_size < self._offset:
            return True
        return bool(self._mark) and os.pread(self._fd, len(self._mark), self._offset - len(self._mark)) != self._mark

    def _read(self, out: list[tuple[int, str]], budget: int | None) -> bool:
        """Read and split up to ``budget`` bytes (None: to the end) into ``out``; True when more is left."""
        assert self._fd is not None
        left = budget if budget is not None else -1
        while data := os.pread(self._fd, CHUNK if left < 0 else min(CHUNK, left), self._offset):
            self._offset += len(data)
            self._mark = (self._mark + data[-MARK:])[-MARK:]
            for number, raw in self._splitter.feed(data):
                if number > self._skip:
                    out.append((number, raw.decode("utf-8", errors="replace")))
            if left >= 0:
                left -= len(data)
                if left <= 0:
                    return True
        return False

    def _restart(self, why: str) -> None:
        if self._on_reset is not None:
            self._on_reset(f"{self.path} was {why}; following it again from line 1")
        self.resets += 1
        # start_line referred to the file the caller had read; the new content is all unseen.
        self._offset, self._mark, self._skip = 0, b"", 0
        self._splitter = Splitter(MAX_LINE, self._on_long)

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
