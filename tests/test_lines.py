"""Bounded line reading: forwards in pieces, backwards from the end, over-long lines skipped and counted."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

import csd.lines as lines_mod
from csd.lines import Splitter, read_backward, read_forward


def test_splitter_holds_the_unterminated_tail() -> None:
    """Only "\\n" completes a line; the rest waits for more data."""
    s = Splitter()
    assert s.feed(b"a\nb") == [(1, b"a")]
    assert s.pending == 1
    assert s.feed(b"c\n") == [(2, b"bc")]
    assert s.feed(b"") == []
    assert s.feed(b"x\n\n") == [(3, b"x"), (4, b"")]


def test_splitter_skips_a_long_line_as_soon_as_it_passes_the_limit() -> None:
    """Reported once, while it is still being written; never held; the next line keeps its number."""
    long: list[int] = []
    s = Splitter(max_line=8, on_long=long.append)
    assert s.feed(b"ok\n" + b"x" * 5) == [(1, b"ok")]
    assert s.feed(b"x" * 5) == [] and long == [2] and s.pending == 0
    assert s.feed(b"x" * 10_000) == [] and s.pending == 0
    assert s.feed(b"xx\nafter\n") == [(3, b"after")]
    assert long == [2]


@pytest.mark.parametrize("seed", range(40))
def test_forward_and_backward_agree_with_a_plain_split(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the obvious reading (split everything, drop long lines), for random files, chunk sizes and limits."""
    rng = random.Random(seed)
    monkeypatch.setattr(lines_mod, "CHUNK", rng.choice([1, 3, 7, 64]))
    lines = [bytes(rng.choice(b"ab{}") for _ in range(rng.choice([0, 1, 5, 30, 70, 200]))) for _ in range(rng.randint(0, 8))]
    tail = bytes(rng.choice(b"xy") for _ in range(rng.choice([0, 0, 3, 100])))
    data = b"".join(line + b"\n" for line in lines) + tail
    limit = rng.choice([10, 50, 1000])
    expected = [(i + 1, line) for i, line in enumerate(lines) if len(line) <= limit]
    long_numbers = [i + 1 for i, line in enumerate(lines) if len(line) > limit]
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        fwd_long: list[int] = []
        assert list(read_forward(fd, fwd_long.append, limit)) == expected
        # an unterminated tail over the limit is reported too (as the line after the last)
        assert fwd_long == long_numbers + ([len(lines) + 1] if len(tail) > limit else [])
        back_long: list[int] = []
        back = list(read_backward(fd, len(data), back_long.append, limit))
        assert [(len(lines) - k, line) for k, _, line in back] == expected[::-1]
        assert sorted(len(lines) - k for k in back_long) == long_numbers
        assert all(data[off : off + len(line)] == line for _, off, line in back)
    finally:
        os.close(fd)
