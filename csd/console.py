"""What csd says on stderr besides an answer: one flushed line each (stdout carries only answers)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from csd.events import too_long
from csd.lines import MAX_LINE

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the read path does not need it)
if TYPE_CHECKING:
    from csd.events import BadLine


def err(msg: str) -> None:
    """One line on stderr, flushed at once (a controller reading both streams sees it in order)."""
    print(msg, file=sys.stderr, flush=True)


def submitted(name: str, line_no: int) -> str:
    """What ``send`` says once the worker confirmed the prompt: the events line that did (a controller driving
    a remote worker reads it back: csd.remoteworkers.send)."""
    return f"csd: submitted to {name!r} (events line {line_no})"


def submitted_line(stderr: str) -> int | None:
    """The events line ``submitted`` named in ``stderr``, or None."""
    import re

    found = re.search(r"csd: submitted to .* \(events line (\d+)\)", stderr)
    return int(found.group(1)) if found else None


def warn_bad_line(path: object) -> Callable[[BadLine], None]:
    """What to say of an events line that is not one: the file and the line, and that it is skipped."""
    return lambda bad: err(f"csd: warning: {path}: skipping {bad}")


def warn_long_line(path: object) -> Callable[[int], None]:
    """What to say of an events line too long to read (csd.lines.MAX_LINE)."""
    return lambda number: err(f"csd: warning: {path}: skipping {too_long(number, MAX_LINE)}")
