"""Tests for csd.watch: real files under tmp_path, real appender processes, both backends."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest

from csd.errors import CsdError, UsageError
from csd.watch import (
    BACKEND_ENV,
    Change,
    ChangeKind,
    DirWatcher,
    Line,
    diff_snapshots,
    scan_directory,
)

T = TypeVar("T")

# Generous: these bound a hang, they do not measure speed.
TIMEOUT = 10.0

BACKENDS = ["inotify", "poll"] if sys.platform.startswith("linux") else ["poll"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def append(path: Path, data: str | bytes) -> None:
    """Append like the hook does: one write on an O_APPEND descriptor."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, raw)
    finally:
        os.close(fd)


async def take(it: AsyncIterator[T], n: int) -> list[T]:
    out: list[T] = []
    async with asyncio.timeout(TIMEOUT):
        while len(out) < n:
            out.append(await anext(it))
    return out


async def drain(it: AsyncIterator[T]) -> list[T]:
    """Everything until the iterator ends; fails (times out) if it never does."""
    async with asyncio.timeout(TIMEOUT):
        return [item async for item in it]


async def wait_for_change(changes: AsyncIterator[Change], wanted: Change) -> None:
    async with asyncio.timeout(TIMEOUT):
        async for change in changes:
            if change == wanted:
                return
    raise AssertionError(f"change stream ended before {wanted}")


# --- pure helpers ------------------------------------------------------------------------------------


def test_diff_snapshots_reports_created_modified_replaced_deleted() -> None:
    """Identity (dev, ino) change is a creation; size/mtime change a modification."""
    old = {"same": (1, 10, 5, 100), "grown": (1, 11, 5, 100), "replaced": (1, 12, 5, 100), "gone": (1, 13, 1, 1)}
    new = {"same": (1, 10, 5, 100), "grown": (1, 11, 9, 200), "replaced": (1, 99, 5, 100), "new": (1, 14, 0, 0)}
    assert diff_snapshots(old, new) == [
        Change(ChangeKind.DELETED, "gone"),
        Change(ChangeKind.MODIFIED, "grown"),
        Change(ChangeKind.CREATED, "new"),
        Change(ChangeKind.CREATED, "replaced"),
    ]


def test_rescan_diff_with_only_names_known() -> None:
    """The overflow rescan knows names only: survivors may have changed, so they are reported modified."""
    known = dict.fromkeys(["a.meta", "b.events.jsonl", "gone.meta"])
    now = {"a.meta": (1, 1, 1, 1), "b.events.jsonl": (1, 2, 2, 2), "late.meta": (1, 3, 3, 3)}
    assert diff_snapshots(known, now) == [
        Change(ChangeKind.DELETED, "gone.meta"),
        Change(ChangeKind.MODIFIED, "a.meta"),
        Change(ChangeKind.MODIFIED, "b.events.jsonl"),
        Change(ChangeKind.CREATED, "late.meta"),
    ]


def test_scan_directory_skips_subdirectories(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "x.meta").write_text("{}")
    assert set(scan_directory(tmp_path)) == {"x.meta"}


# --- backend selection ---------------------------------------------------------------------------------


def test_env_forces_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "poll")
    assert DirWatcher(tmp_path).backend == "poll"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
def test_default_is_inotify_on_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert DirWatcher(tmp_path).backend == "inotify"
    monkeypatch.setenv(BACKEND_ENV, "inotify")
    assert DirWatcher(tmp_path).backend == "inotify"


async def test_without_inotify_auto_falls_back_to_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a system without inotify for us: ctypes absent (None in sys.modules makes its import fail, as on a
    Python built without it), polling still works."""
    monkeypatch.setitem(sys.modules, "ctypes", None)
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    async with DirWatcher(tmp_path) as w:
        assert w.backend == "poll"
        lines = w.follow("s.events.jsonl")
        append(tmp_path / "s.events.jsonl", "a\n")
        assert await take(lines, 1) == [(1, "a")]
    monkeypatch.setenv(BACKEND_ENV, "inotify")
    with pytest.raises(CsdError, match="'inotify' is unavailable"):
        DirWatcher(tmp_path)


def test_argument_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "bogus")
    assert DirWatcher(tmp_path, backend="poll").backend == "poll"


def test_unknown_backend_names_the_valid_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BACKEND_ENV, "kqueue")
    with pytest.raises(UsageError, match=r"'kqueue' is not one of: auto, inotify, poll"):
        DirWatcher(tmp_path)


async def test_missing_directory_raises(tmp_path: Path, backend: str) -> None:
    with pytest.raises(FileNotFoundError):
        async with DirWatcher(tmp_path / "nope", backend=backend):
            pass


async def test_follow_requires_entering(tmp_path: Path, backend: str) -> None:
    with pytest.raises(RuntimeError, match="async with"):
        DirWatcher(tmp_path, backend=backend).follow("x")


async def test_follow_rejects_paths(tmp_path: Path, backend: str) -> None:
    async with DirWatcher(tmp_path, backend=backend) as w:
        with pytest.raises(ValueError, match="not a file name"):
            w.follow("../x")


# --- following -------------------------------------------------------------------------------------------


async def test_lines_already_there_are_read(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, "one\ntwo\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        assert await take(w.follow(path.name), 2) == [Line(1, "one"), Line(2, "two")]


async def test_appended_lines_arrive(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, "one\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        assert await take(lines, 1) == [(1, "one")]
        append(path, "two\n")
        append(path, "three\n")
        assert await take(lines, 2) == [(2, "two"), (3, "three")]


async def test_start_line_skips_lines_already_seen(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, "a\nb\nc\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name, start_line=2)
        assert await take(lines, 1) == [(3, "c")]
        append(path, "d\n")
        assert await take(lines, 1) == [(4, "d")]


async def test_partial_line_is_held_until_its_newline(tmp_path: Path, backend: str) -> None:
    """The follower has read "par" (it reads to EOF) yet yields it only once "tial\\n" arrives."""
    path = tmp_path / "s.events.jsonl"
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        append(path, "first\npar")
        assert await take(lines, 1) == [(1, "first")]
        append(path, "tial\nnext\n")
        assert await take(lines, 2) == [(2, "partial"), (3, "next")]


async def test_invalid_utf8_is_replaced_not_fatal(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, b"ok\n\xff\xfe bad\nafter\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        assert await take(w.follow(path.name), 3) == [(1, "ok"), (2, "\ufffd\ufffd bad"), (3, "after")]


async def test_file_created_after_the_watch_starts(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "late.events.jsonl"
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        append(path, "hello\n")
        assert await take(lines, 1) == [(1, "hello")]
        append(path, "again\n")
        assert await take(lines, 1) == [(2, "again")]


async def test_deletion_ends_the_follow_after_the_last_lines(tmp_path: Path, backend: str) -> None:
    """Lines written just before the unlink are still delivered (read through the open fd), then the end."""
    path = tmp_path / "s.events.jsonl"
    append(path, "a\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        assert await take(lines, 1) == [(1, "a")]
        append(path, "b\n")
        path.unlink()
        assert await drain(lines) == [(2, "b")]


async def test_file_deleted_before_iteration_still_yields_then_ends(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, "a\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        path.unlink()
        assert await drain(lines) == [(1, "a")]


async def test_truncation_restarts_from_line_one(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, "one\ntwo\nthree\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        assert len(await take(lines, 3)) == 3
        os.truncate(path, 0)
        append(path, "new\n")
        assert await take(lines, 1) == [(1, "new")]
        assert lines.resets == 1


async def test_truncation_then_regrowth_past_the_offset_is_still_a_reset(tmp_path: Path, backend: str) -> None:
    """Log rotation (copytruncate) then a long line before the follower looks: the file is longer than
    what was read, yet it is a new file from line 1 (the old follower read on from its stale offset)."""
    path = tmp_path / "s.events.jsonl"
    append(path, "one\ntwo\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        assert await take(lines, 2) == [(1, "one"), (2, "two")]
        # no await in between: the follower cannot look before the file has grown past its offset
        os.truncate(path, 0)
        append(path, "a line longer than the old file\nnext\n")
        assert await take(lines, 2) == [(1, "a line longer than the old file"), (2, "next")]
        assert lines.resets == 1


async def test_a_huge_append_is_read_in_pieces_between_which_the_loop_runs(tmp_path: Path, backend: str) -> None:
    """Lines over lines.MAX_LINE are skipped and reported; no single read step holds the loop for the
    whole append (other tasks run while a follower works through it)."""
    from csd import lines as lines_mod
    from csd import watch

    path = tmp_path / "s.events.jsonl"
    path.write_bytes(b"")
    long: list[int] = []
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name, on_long=long.append)
        oks = watch.READ_BUDGET // 3 * 2  # with the long line: more than one budget in all
        append(path, "x" * (lines_mod.MAX_LINE * 3) + "\n" + "ok\n" * oks)
        task = asyncio.create_task(ticker())
        try:
            got = await take(lines, oks)
        finally:
            task.cancel()
        assert got[0] == (2, "ok") and got[-1] == (oks + 1, "ok") and long == [1]
        assert ticks >= 1  # the ticker ran while the follower was still reading the append (never, before)


async def test_replacement_restarts_on_the_new_file(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "x.meta"
    path.write_text("old 1\nold 2\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        assert await take(lines, 2) == [(1, "old 1"), (2, "old 2")]
        tmp = tmp_path / "x.meta.tmp"
        tmp.write_text("new 1\nnew 2\nnew 3\n")
        os.replace(tmp, path)
        assert await take(lines, 3) == [(1, "new 1"), (2, "new 2"), (3, "new 3")]
        assert lines.resets == 1
        append(path, "new 4\n")
        assert await take(lines, 1) == [(4, "new 4")]


async def test_fifty_files_on_one_watcher(tmp_path: Path, backend: str) -> None:
    """Every follower gets its own file's lines, all driven by one watcher."""
    names = [f"w{i:02}.events.jsonl" for i in range(50)]
    for name in names[:25]:  # half exist at the start, half are created later
        append(tmp_path / name, f"{name} 1\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        followers = {name: w.follow(name) for name in names}
        for name in names[25:]:
            append(tmp_path / name, f"{name} 1\n")
        for name in names:
            append(tmp_path / name, f"{name} 2\n")
        async with asyncio.TaskGroup() as tg:
            tasks = {name: tg.create_task(take(f, 2)) for name, f in followers.items()}
        for name, task in tasks.items():
            assert task.result() == [(1, f"{name} 1"), (2, f"{name} 2")]


APPENDER = """
import os, sys
path, proc, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
for seq in range(count):
    os.write(fd, ('{"proc": %d, "seq": %d, "pad": "%s"}\\n' % (proc, seq, "x" * (seq % 50))).encode())
os.close(fd)
"""


async def test_concurrent_appender_processes_every_line_exactly_once(tmp_path: Path, backend: str) -> None:
    """Eight real processes append at once; the follower sees each line once, numbered 1..N in file order."""
    path = tmp_path / "s.events.jsonl"
    procs, count = 8, 300
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        children = [
            await asyncio.create_subprocess_exec(sys.executable, "-c", APPENDER, str(path), str(p), str(count))
            for p in range(procs)
        ]
        try:
            got = await take(lines, procs * count)
        finally:
            for child in children:
                await child.wait()
        assert all(child.returncode == 0 for child in children)
    assert [n for n, _ in got] == list(range(1, procs * count + 1))
    expected = {'{"proc": %d, "seq": %d, "pad": "%s"}' % (p, s, "x" * (s % 50)) for p in range(procs) for s in range(count)}
    texts = [text for _, text in got]
    assert len(set(texts)) == len(texts)
    assert set(texts) == expected
    assert path.read_text().splitlines() == texts


# --- directory changes ---------------------------------------------------------------------------------


async def test_changes_sees_meta_renamed_in_and_deleted(tmp_path: Path, backend: str) -> None:
    async with DirWatcher(tmp_path, backend=backend) as w:
        changes = w.changes()
        tmp = tmp_path / ".s1.meta.tmp"
        tmp.write_text('{"tmux_name": "api"}')
        os.replace(tmp, tmp_path / "s1.meta")
        await wait_for_change(changes, Change(ChangeKind.CREATED, "s1.meta"))
        (tmp_path / "s1.meta").unlink()
        await wait_for_change(changes, Change(ChangeKind.DELETED, "s1.meta"))


async def test_changes_reports_modification_and_ignores_subdirectories(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, "a\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        changes = w.changes()
        (tmp_path / "bin").mkdir()
        append(path, "b\n")
        async with asyncio.timeout(TIMEOUT):
            first = await anext(changes)
        assert first == Change(ChangeKind.MODIFIED, path.name)


async def test_changes_of_one_file_report_that_file_only(tmp_path: Path, backend: str) -> None:
    """changes(name): another file's changes never reach the stream (many such streams share a directory)."""
    mine, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    async with DirWatcher(tmp_path, backend=backend) as w:
        changes, every = w.changes(mine.name), w.changes()
        append(other, "x\n")
        await wait_for_change(every, Change(ChangeKind.CREATED, other.name))
        append(mine, "y\n")
        async with asyncio.timeout(TIMEOUT):
            first = await anext(changes)
        assert first.name == mine.name
        with pytest.raises(ValueError):
            w.changes("../a.jsonl")


async def test_changes_of_some_suffixes_report_those_files_only(tmp_path: Path, backend: str) -> None:
    """changes(suffixes=...): a cost file's temp file and rename, a lock, never reach the stream; the cost file
    renamed in and an events file's append do."""
    async with DirWatcher(tmp_path, backend=backend) as w:
        changes = w.changes(suffixes=(".cost.json", ".events.jsonl"))
        tmp = tmp_path / "s.cost.json.123.tmp"
        tmp.write_text("{}")
        (tmp_path / "s.lock").write_text("")
        os.replace(tmp, tmp_path / "s.cost.json")
        append(tmp_path / "s.events.jsonl", "a\n")
        async with asyncio.timeout(TIMEOUT):
            got = [await anext(changes), await anext(changes)]
        # (a poll's scan may see both at once, in the directory's order)
        assert sorted(got) == [Change(ChangeKind.CREATED, "s.cost.json"), Change(ChangeKind.CREATED, "s.events.jsonl")]
        with pytest.raises(ValueError):
            w.changes(suffixes=())


async def test_a_gathering_watcher_reports_a_pass_of_changes_once_per_name(tmp_path: Path) -> None:
    """gather: the changes of the window are read in one pass; a file written many times in it is reported
    once (created, then nothing more), another file's write and a deletion each once, in their order."""
    a, b = tmp_path / "a.events.jsonl", tmp_path / "b.events.jsonl"
    append(b, "0\n")
    async with DirWatcher(tmp_path, backend="inotify", gather=0.5) as w:
        changes = w.changes()
        lines = w.follow(a.name)
        for i in range(20):
            append(a, f"{i}\n")
            for _ in range(3):
                await asyncio.sleep(0)  # the loop runs (and would read the queue, were the watcher not gathering)
        append(b, "1\n")
        b.unlink()
        (tmp_path / "end").write_text("")
        got = await take(changes, 4)
        assert got == [Change(ChangeKind.CREATED, a.name), Change(ChangeKind.MODIFIED, b.name),
                       Change(ChangeKind.DELETED, b.name), Change(ChangeKind.CREATED, "end")]
        assert [line.text for line in await take(lines, 20)] == [str(i) for i in range(20)]


async def test_flush_reports_at_once_what_is_gathering(tmp_path: Path) -> None:
    """flush(): the changes a gathering watcher holds back are reported now (a watch that stops shows them)."""
    async with DirWatcher(tmp_path, backend="inotify", gather=60.0) as w:
        changes = w.changes()
        (tmp_path / "a.meta").write_text("{}")
        for _ in range(3):
            await asyncio.sleep(0)  # the loop runs: the watcher is woken and starts gathering
        w.flush()
        changes.close()
        assert [c async for c in changes] == [Change(ChangeKind.CREATED, "a.meta")]


async def test_a_watch_without_writes_hears_names_come_and_go_only(tmp_path: Path) -> None:
    """writes=False: the kernel is not asked for writes, so appends to a file wake nobody; a file made and a
    file removed are still reported (wait_dir's watch of a busy workers dir)."""
    a = tmp_path / "a.events.jsonl"
    append(a, "0\n")
    async with DirWatcher(tmp_path, backend="inotify", writes=False) as w:
        changes = w.changes()
        for i in range(5):
            append(a, f"{i}\n")
        (tmp_path / "b").write_text("")
        a.unlink()
        assert await take(changes, 2) == [Change(ChangeKind.CREATED, "b"), Change(ChangeKind.DELETED, a.name)]


async def test_on_change_calls_back_for_one_file_until_closed(tmp_path: Path, backend: str) -> None:
    """on_change(name, call): each change of that file calls ``call`` as it is read, another file's never;
    after close() nothing more is called."""
    mine, other = tmp_path / "t.jsonl", tmp_path / "u.jsonl"
    async with DirWatcher(tmp_path, backend=backend) as w:
        calls: list[Change] = []
        stream = w.on_change(mine.name, calls.append)
        every = w.changes()
        append(other, "x\n")
        append(mine, "y\n")
        await wait_for_change(every, Change(ChangeKind.CREATED, mine.name))
        assert calls == [Change(ChangeKind.CREATED, mine.name)]
        stream.close()
        append(mine, "z\n")
        await wait_for_change(every, Change(ChangeKind.MODIFIED, mine.name))
        assert calls == [Change(ChangeKind.CREATED, mine.name)]


# --- ending ----------------------------------------------------------------------------------------------


async def test_removing_the_directory_ends_every_iterator(tmp_path: Path, backend: str) -> None:
    """A follower of a live file, one waiting for a file that never comes, and a change stream all end."""
    directory = tmp_path / "workers"
    directory.mkdir()
    live = directory / "live.events.jsonl"
    append(live, "a\n")
    async with DirWatcher(directory, backend=backend) as w:
        live_lines = w.follow(live.name)
        never = w.follow("never.events.jsonl")
        changes = w.changes()
        assert await take(live_lines, 1) == [(1, "a")]
        shutil.rmtree(directory)
        async with asyncio.TaskGroup() as tg:
            t_live = tg.create_task(drain(live_lines))
            t_never = tg.create_task(drain(never))
            t_changes = tg.create_task(drain(changes))
        assert t_live.result() == []
        assert t_never.result() == []
        assert Change(ChangeKind.DELETED, live.name) in t_changes.result()
        assert w.closed


async def test_leaving_the_watcher_ends_waiting_followers(tmp_path: Path, backend: str) -> None:
    async with DirWatcher(tmp_path, backend=backend) as w:
        waiting = asyncio.create_task(drain(w.follow("never.events.jsonl")))
        stream = asyncio.create_task(drain(w.changes()))
        await asyncio.sleep(0)  # let both start waiting: this is the state under test, not a sync point
    assert await waiting == []
    assert await stream == []


async def test_closing_a_follower_ends_it(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "s.events.jsonl"
    append(path, "a\nb\n")
    async with DirWatcher(tmp_path, backend=backend) as w:
        lines = w.follow(path.name)
        assert await take(lines, 1) == [(1, "a")]
        await lines.aclose()
        assert await drain(lines) == []


# --- overflow ----------------------------------------------------------------------------------------------


def _max_queued_events() -> int:
    try:
        return int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    except OSError:
        return 1 << 30


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
@pytest.mark.skipif(_max_queued_events() > 100_000, reason="max_queued_events too large to overflow cheaply")
async def test_queue_overflow_is_recovered_by_a_rescan(tmp_path: Path) -> None:
    """Overflow the real kernel queue, then create a file whose events are dropped: only the rescan sees it.

    The loop cannot read the inotify fd while this coroutine does not await, so alternating writes to two
    files (alternating, because the kernel merges an event identical to the last one queued) fill the queue.
    """
    limit = _max_queued_events()
    a, b = tmp_path / "a.events.jsonl", tmp_path / "b.events.jsonl"
    async with DirWatcher(tmp_path, backend="inotify") as w:
        changes = w.changes()
        late = w.follow("late.events.jsonl")
        fd_a = os.open(a, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fd_b = os.open(b, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            for _ in range(limit // 2 + 100):
                os.write(fd_a, b"x\n")
                os.write(fd_b, b"y\n")
        finally:
            os.close(fd_a)
            os.close(fd_b)
        # The queue is full: these events are lost, and only a rescan can report them.
        (tmp_path / "late.meta").write_text("{}")
        append(tmp_path / "late.events.jsonl", "hello\n")
        assert await take(late, 1) == [(1, "hello")]
        await wait_for_change(changes, Change(ChangeKind.CREATED, "late.meta"))
        assert w.rescans == 1


async def test_a_watch_for_directories_sees_one_made_and_a_file_watch_does_not(tmp_path: Path, backend: str) -> None:
    """DirWatcher(dirs=True) reports a subdirectory made (what watch.wait_dir waits on: Claude Code's project dir,
    the remote records' dir); a watch of files never does."""
    async with DirWatcher(tmp_path, backend=backend, dirs=True) as dirs, DirWatcher(tmp_path, backend=backend) as files:
        made, seen = dirs.changes(), files.changes()
        (tmp_path / "sub").mkdir()
        append(tmp_path / "f.jsonl", "x\n")
        await wait_for_change(made, Change(ChangeKind.CREATED, "sub"))
        got: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            while "f.jsonl" not in got:  # the file comes after the directory: the directory would be first
                got.append((await anext(seen)).name)
        assert "sub" not in got


async def test_wait_dir_returns_once_the_directory_is_made(tmp_path: Path, backend: str) -> None:
    from csd.watch import wait_dir

    target = tmp_path / "a" / "b"
    waiting = asyncio.ensure_future(wait_dir(target, backend))
    for _ in range(10):  # let it set up its watch (no event says so); made before or after, it must not miss them
        await asyncio.sleep(0)
    assert not waiting.done()
    (tmp_path / "a").mkdir()
    target.mkdir()
    async with asyncio.timeout(TIMEOUT):
        await waiting


async def test_wait_dir_waits_on_when_the_watched_parent_is_removed(tmp_path: Path, backend: str) -> None:
    """The parent removed while it is watched (the workers dir removed under ``csd watch`` waiting for the remote
    records' dir): wait_dir goes on waiting for the parent, and returns only once the directory is there."""
    from csd.watch import wait_dir

    parent = tmp_path / "a"
    parent.mkdir()
    target = parent / "b"
    waiting = asyncio.ensure_future(wait_dir(target, backend))
    for _ in range(10):  # let it set up its watch on ``a`` (no event says so)
        await asyncio.sleep(0)
    parent.rmdir()
    # the removal seen (a rescan of tmp_path proves the watcher had its turn), it is still waiting
    async with DirWatcher(tmp_path, backend=backend, dirs=True) as w:
        changes = w.changes()
        (tmp_path / "marker").mkdir()
        await wait_for_change(changes, Change(ChangeKind.CREATED, "marker"))
    await asyncio.sleep(0)
    assert not waiting.done() and not target.exists()
    parent.mkdir()
    target.mkdir()
    async with asyncio.timeout(TIMEOUT):
        await waiting
    assert target.is_dir()
