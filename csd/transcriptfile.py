"""Claude Code's transcript files on disk: where a session's is, and reading one forward from an offset (a
turn) or backward from its end (the API call in flight), or following that end as lines are appended
(ApiFollower). Parsing is csd.transcript's (pure)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping

from csd import config
from csd.transcript import ApiState, Transcript, api_state, parse_lines, transcript_path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (read after a wait, on its answer's path)
if TYPE_CHECKING:
    from typing import Any

#: How far back from the end a read-side command looks for the last conversation lines (api-request
#: lines are a few KB each; Claude Code makes at most 16 attempts per call).
API_TAIL_LIMIT = 4 << 20
_TAIL_BLOCK = 1 << 16


def session_transcript(cwd: str, session_id: str) -> str:
    """Where Claude Code keeps the transcript of ``session_id`` started in ``cwd`` (its own rule, under
    ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``); prefer a hook payload's ``transcript_path`` when there is one."""
    return transcript_path(config.claude_dir(), cwd, session_id)


def read_transcript(path: str | os.PathLike[str], offset: int = 0) -> Transcript:
    """Read and parse a transcript file from byte ``offset`` on; a missing file is an empty transcript.

    ``offset`` lets a reader that noted the file's size before sending a prompt read only what came after.
    """
    try:
        with open(path, "rb") as f:
            if offset:
                f.seek(offset)
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return Transcript()
    # Replace rather than fail: a write in progress can end inside a multi-byte character.
    text = data.decode("utf-8", errors="replace")
    # Split on "\n" only: str.splitlines() would also split on U+2028 and friends, which JSON.stringify
    # leaves unescaped inside strings.
    return parse_lines(text.split("\n"))



def read_api_state(path: str | os.PathLike[str], limit: int = API_TAIL_LIMIT) -> ApiState:
    """ApiState of a transcript file, read backwards from its end (at most ``limit`` bytes): the cost does
    not grow with the transcript. A missing file is ApiState()."""
    return ApiFollower(path, limit).read()


def _raw_backwards(fd: int, end: int, limit: int) -> Iterator[bytes]:
    """The lines of an open file before ``end``, newest first (at most ``limit`` bytes back), the last one
    left out when it has no newline yet (it is still being written)."""
    pos = end
    carry = b""  # the start of a line whose beginning is in an earlier block
    first = True
    while pos > 0 and end - pos < limit:
        start = max(0, pos - _TAIL_BLOCK)
        block = os.pread(fd, pos - start, start) + carry
        pos = start
        if first:
            block = block[: block.rfind(b"\n") + 1]  # a last line without its newline is still being written
            first = False
        lines = block.split(b"\n")
        carry = lines.pop(0) if pos > 0 else b""
        yield from reversed(lines)


def _objects(raws: Iterable[bytes]) -> Iterator[Mapping[str, Any]]:
    """The JSON objects among raw lines, in their order; blank lines and lines that do not parse are skipped."""
    for raw in raws:
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


def _counts(entry: Mapping[str, Any]) -> str | None:
    """What csd.transcript.api_state makes of a line: "request", "conversation", or None (it skips it)."""
    kind = entry.get("type")
    if kind == "api-request":
        return "request"
    if kind in ("user", "assistant") and not entry.get("isSidechain"):
        return "conversation"
    return None


class ApiFollower:
    """The ApiState of one transcript file, kept current by reading only what was appended since the last
    ``read()``: the cost of a read is that of the new lines, not of the file's end (a watch over many workers
    reads one per transcript line). The file is read from its end again (as read_api_state) the first time,
    when it was truncated or replaced, and when more than ``limit`` bytes came at once.

    It keeps the lines api_state needs, oldest first: those after the second newest conversation line
    (api_state folds newest first and stops at the conversation line before a failed call), so a read folds
    a few lines, never the file."""

    def __init__(self, path: str | os.PathLike[str], limit: int = API_TAIL_LIMIT) -> None:
        self.path = path
        self.limit = limit
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file read
        self._offset = 0  # where the next complete line starts
        self._kept: list[Mapping[str, Any]] = []
        self._state: ApiState | None = None  # what _kept folded to, until a read takes in more

    def read(self) -> ApiState:
        """The file's ApiState now (a missing file: ApiState())."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            self._file, self._kept, self._state = None, [], None
            return ApiState()
        try:
            st = os.fstat(fd)
            fresh = (st.st_dev, st.st_ino) != self._file or st.st_size < self._offset
            if fresh or st.st_size - self._offset > self.limit:
                self._from_end(fd, st)
                self._state = None
            elif st.st_size > self._offset:
                self._append(fd, st.st_size)
                self._state = None
        finally:
            os.close(fd)
        if self._state is None:  # nothing appended since the last read (a turn's start reads what the
            self._state = api_state(reversed(self._kept))  # watcher then reports again): the same state
        return self._state

    def _from_end(self, fd: int, st: os.stat_result) -> None:
        self._file, self._kept = (st.st_dev, st.st_ino), []
        self._offset = self._complete_end(fd, st.st_size)
        conversation = 0
        newest_first: list[Mapping[str, Any]] = []
        for entry in _objects(_raw_backwards(fd, self._offset, self.limit)):
            counts = _counts(entry)
            if counts == "conversation":
                conversation += 1
                if conversation == 2:
                    break
            if counts is not None:
                newest_first.append(entry)
        self._kept = newest_first[::-1]

    def _complete_end(self, fd: int, size: int) -> int:
        """Where the last complete line of the file ends (a last line without its newline is being written)."""
        pos = size
        while pos > 0 and size - pos < self.limit:
            start = max(0, pos - _TAIL_BLOCK)
            newline = os.pread(fd, pos - start, start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            pos = start
        return pos

    def _append(self, fd: int, size: int) -> None:
        data = os.pread(fd, size - self._offset, self._offset)
        complete = data.rfind(b"\n") + 1  # a last line without its newline is still being written
        self._offset += complete
        for entry in _objects(data[:complete].split(b"\n")):
            counts = _counts(entry)
            if counts == "conversation":
                # the newest conversation line becomes the second newest: keep only what came after it
                last = max((i for i, kept in enumerate(self._kept) if _counts(kept) == "conversation"), default=-1)
                del self._kept[: last + 1]
            if counts is not None:
                self._kept.append(entry)
