"""Lines of append-only files (the events logs), read in bounded memory: a line over MAX_LINE is skipped and
reported, never held whole, and a tail is read from the file's end, never from its start."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

#: The longest line csd reads from an events file. The hook writes lines of at most 64 KiB (hook.LINE_LIMIT);
#: anything much longer was not written by it, and holding it (or parsing it) would cost memory and time.
MAX_LINE = 1 << 20
#: How much is read per system call.
CHUNK = 1 << 16


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
