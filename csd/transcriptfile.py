"""Claude Code's transcript files on disk: where a session's is, and reading one forward from an offset (a
turn) or backward from its end (the API call in flight). Parsing is csd.transcript's (pure)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from csd import config
from csd.transcript import ApiState, Transcript, api_state, parse_lines, transcript_path

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
    return api_state(_lines_backwards(path, limit))


def _lines_backwards(path: str | os.PathLike[str], limit: int) -> Iterable[Mapping[str, Any]]:
    """The JSON object lines of a file, newest first, reading blocks from the end; a line being written
    (no newline yet) and lines that do not parse are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        end = os.fstat(fd).st_size
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
            for raw in reversed(lines):
                if not raw.strip():
                    continue
                try:
                    value = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    yield value
    finally:
        os.close(fd)


