"""Following a transcript's end (csd/transcriptfile.py ApiFollower) over a real file: after every append,
truncation or replacement it says what csd.transcript.api_state says of the whole file."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from csd.transcript import ApiState, api_state
from csd.transcriptfile import ApiFollower, read_api_state

USER = {"type": "user", "message": {"role": "user", "content": "go"}}
REQUEST = {"type": "api-request", "id": "r"}
ANSWER = {"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}}
FAILED = {"type": "assistant", "isApiErrorMessage": True, "error": "server_error",
          "message": {"content": [{"type": "text", "text": "API Error: 500"}]}}
SIDE = {**ANSWER, "isSidechain": True}
NOISE = {"type": "last-prompt"}
KINDS = [USER, REQUEST, REQUEST, ANSWER, FAILED, SIDE, NOISE]


def whole(lines: list[dict]) -> ApiState:
    return api_state(reversed(lines))


def test_the_follower_folds_each_append_as_a_read_of_the_whole_file_would(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"")
    follower = ApiFollower(path)
    lines: list[dict] = []
    rng = random.Random(15)
    states = set()
    for step in range(600):
        batch = [rng.choice(KINDS) for _ in range(rng.choice((1, 1, 1, 2, 5)))]
        data = b"".join(json.dumps(entry).encode() + b"\n" for entry in batch)
        cut = rng.randrange(len(data)) if rng.random() < 0.2 else len(data)
        with open(path, "ab") as f:
            f.write(data[:cut])
        # a line cut short is still being written: not read yet
        assert follower.read() == whole(lines + batch[: data[:cut].count(b"\n")]), step
        with open(path, "ab") as f:
            f.write(data[cut:])
        lines += batch
        got = follower.read()
        assert got == whole(lines) == read_api_state(path), step
        states.add(got)
    # the run went through calls in flight, retries and failed calls, not one state
    assert any(s.retrying for s in states) and any(s.error for s in states) and ApiState(0) in states


def test_the_follower_reads_a_truncated_or_replaced_file_from_its_end(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in [USER, REQUEST, REQUEST, FAILED]))
    follower = ApiFollower(path)
    assert follower.read() == ApiState(2, "server_error", "API Error: 500")
    path.write_text(json.dumps(USER) + "\n")  # truncated in place, shorter
    assert follower.read() == ApiState(0)
    other = tmp_path / "new.jsonl"
    other.write_text("".join(json.dumps(e) + "\n" for e in [USER, REQUEST, NOISE, REQUEST, REQUEST]))
    os.rename(other, path)  # another file under the name
    assert follower.read() == ApiState(3)
    path.unlink()
    assert follower.read() == ApiState()
    path.write_text(json.dumps(USER) + "\n" + json.dumps(REQUEST) + "\n")
    assert follower.read() == ApiState(1)


def test_a_last_line_longer_than_a_block_is_read_once_complete(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    big = {**USER, "message": {"role": "user", "content": "x" * 200_000}}
    text = json.dumps(big) + "\n"
    path.write_text(json.dumps(USER) + "\n" + json.dumps(REQUEST) + "\n" + text[:150_000])
    follower = ApiFollower(path)
    assert follower.read() == ApiState(1)
    with open(path, "a") as f:
        f.write(text[150_000:] + json.dumps(REQUEST) + "\n" + json.dumps(REQUEST) + "\n")
    assert follower.read() == ApiState(2)
