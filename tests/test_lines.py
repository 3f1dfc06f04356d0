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


# ---------------------------------------------------------------- FileLines: the follower's synchronous core


def test_file_lines_reads_what_is_appended_and_skips_what_was_counted(tmp_path: Path) -> None:
    from csd.lines import FileLines

    path = tmp_path / "e.jsonl"
    path.write_bytes(b"one\ntwo\n")
    lines = FileLines(path, start_line=1)
    assert lines.read() == ([(2, "two")], False)
    with open(path, "ab") as f:
        f.write(b"thr")
    assert lines.read() == ([], False) and lines.pending == 3  # half a line is not a line
    with open(path, "ab") as f:
        f.write(b"ee\n")
    assert lines.read() == ([(3, "three")], False)


def test_file_lines_sees_a_truncation_regrown_past_its_offset_and_a_replacement(tmp_path: Path) -> None:
    from csd.lines import FileLines

    path = tmp_path / "e.jsonl"
    path.write_bytes(b"a\nb\n")
    said: list[str] = []
    lines = FileLines(path, on_reset=said.append)
    assert [t for _, t in lines.read()[0]] == ["a", "b"]
    path.write_bytes(b"rotated, and longer than before\n")  # truncated and regrown before the next look
    assert lines.read() == ([(1, "rotated, and longer than before")], False) and lines.resets == 1
    other = tmp_path / "new"
    other.write_bytes(b"x\n")
    other.replace(path)
    assert lines.read() == ([(1, "x")], False) and lines.resets == 2
    assert [why.rsplit(" was ", 1)[1] for why in said] == ["truncated; following it again from line 1",
                                                           "replaced; following it again from line 1"]


def test_file_lines_ends_when_the_name_is_removed_and_waits_for_one_not_there_yet(tmp_path: Path) -> None:
    from csd.lines import FileLines

    path = tmp_path / "e.jsonl"
    lines = FileLines(path)
    assert lines.read() == ([], False) and not lines.ended  # not there yet: not removed
    path.write_bytes(b"first\n")
    assert lines.read() == ([(1, "first")], False)
    with open(path, "ab") as f:
        f.write(b"last\n")
    path.unlink()
    assert lines.read() == ([(2, "last")], False) and lines.ended  # what the open file held, then the end


def test_file_lines_reads_a_big_append_in_budgets_and_skips_a_long_line(tmp_path: Path) -> None:
    from csd.lines import MAX_LINE, FileLines

    path = tmp_path / "e.jsonl"
    path.write_bytes(b"x" * (MAX_LINE + 10) + b"\n" + b"ok\n" * 1000)
    longs: list[int] = []
    lines = FileLines(path, on_long=longs.append)
    got, more = lines.read(budget=1 << 16)
    assert more and got == []
    while more:
        batch, more = lines.read(budget=1 << 16)
        got += batch
    assert longs == [1] and len(got) == 1000 and got[0] == (2, "ok") and got[-1] == (1001, "ok")
