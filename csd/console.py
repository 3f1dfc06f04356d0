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


def warn_bad_line(path: object) -> Callable[[BadLine], None]:
    """What to say of an events line that is not one: the file and the line, and that it is skipped."""
    return lambda bad: err(f"csd: warning: {path}: skipping {bad}")


def warn_long_line(path: object) -> Callable[[int], None]:
    """What to say of an events line too long to read (csd.lines.MAX_LINE)."""
    return lambda number: err(f"csd: warning: {path}: skipping {too_long(number, MAX_LINE)}")
