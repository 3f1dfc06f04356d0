"""A finished turn's reply, and the worker's transcript: where it is, reading it, and waiting (bounded, woken
by the file's changes) until Claude Code has written a turn's last lines to it.

The engine's (csd.supervisor's ``converse``) and the read side's (``read-turn``): the hooks say when a turn
ended; the transcript says what it said when the stop event's copy is not whole.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from csd.errors import CsdError
from csd.events import BadLine, Event, failure_line, failure_text, parse_line
from csd.value import Value
from csd.workers import Meta, WorkersDir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from csd.transcript import Transcript, Turn

# csd.transcript and csd.transcriptfile are imported where a transcript is read: a send, a wait or a converse
# whose stop event holds the whole reply reads none (~7 ms of imports spared). asyncio and csd.watch where a
# transcript is waited for: csd.waiter's wait-for-turn runs with no event loop (a waiting process stays small).

#: Claude Code runs the Stop hook before the turn's last lines reach its transcript (2.1.330 and older
#: releases: the tool result and final text land 30-70 ms after the stop event); converse waits this long at most.
TRANSCRIPT_LAG_LIMIT = 2.0
#: The marker csd's hook puts at the end of a value it cut (hook.cap).
TRUNCATED_MARK = "…[truncated "


def file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


async def transcript_caught_up(path: Path | None, complete: Callable[[], bool], backend: str | None) -> None:
    """Until ``complete()`` says the transcript holds what is awaited: woken by the file's changes, bounded."""
    import asyncio

    from csd.watch import DirWatcher, wait_dir

    if path is None:
        return
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(TRANSCRIPT_LAG_LIMIT):
            if not path.parent.is_dir():
                # nothing written yet in this project dir (a release that creates it late): wait for it
                await wait_dir(path.parent, backend)
            async with DirWatcher(path.parent, backend=backend) as watcher:
                changes = watcher.changes()  # before the first read: a line written after it is not missed
                if complete():
                    return
                async for change in changes:
                    if change.name == path.name and complete():
                        return


class Reply(Value):
    """One finished turn: its prompt event, the stop that ended it, and where its transcript is.

    ``offset`` is the transcript's size before the prompt was sent: the turn is the first one after it
    (by ``prompt_id`` where the release has one), so an earlier turn is never taken for this one.
    (A csd.value.Value, not a dataclass: this module is imported after a wait-for-turn's wait, where
    ``dataclasses`` would cost ~10 ms.)
    """

    _fields = ("meta", "prompt", "stop", "transcript", "backend", "offset")
    meta: Meta
    prompt: Event
    stop: Event
    transcript: Path | None
    backend: str | None
    offset: int

    def __init__(self, meta: Meta, prompt: Event, stop: Event, transcript: Path | None, backend: str | None = None,
                 offset: int = 0) -> None:
        self._set(meta=meta, prompt=prompt, stop=stop, transcript=transcript, backend=backend, offset=offset)

    @property
    def needs_transcript(self) -> bool:
        """The stop event does not carry the whole reply: absent (Claude Code before 2.1.47), truncated by
        the hook, or text that may be the synthetic API error message of a release without StopFailure."""
        last = self.stop.data.get("last_assistant_message")
        return not isinstance(last, str) or TRUNCATED_MARK in last[-40:] or self.stop.may_hide_api_error

    def turn(self) -> Turn | None:
        """This turn as the transcript has it now (None when it has no line of it yet)."""
        from csd.transcript import turn_after

        if self.transcript is None:
            return None
        from csd.transcriptfile import read_transcript

        return turn_after(read_transcript(self.transcript, self.offset), self.prompt.prompt_id)

    async def wait_transcript(self) -> Reply:
        """Until the transcript holds this whole turn (bounded by TRANSCRIPT_LAG_LIMIT, woken by the file's
        changes); call before ``markdown()``, or before ``text()`` when ``needs_transcript``."""

        def complete() -> bool:
            turn = self.turn()
            return turn is not None and turn.complete

        if self.prompt.name == "user_prompt_submit":
            await transcript_caught_up(self.transcript, complete, self.backend)
        return self

    def _last(self) -> str | None:
        last = self.stop.data.get("last_assistant_message")
        return last if isinstance(last, str) else None

    def text(self) -> str:
        """The turn's final reply: the stop event's ``last_assistant_message`` (Claude Code's own answer to
        that question) when it is whole, else the transcript's, else what the stop event has."""
        last = self._last()
        if not self.needs_transcript:
            return last or ""  # the common case: converse needs no transcript module (bench/: its overhead)
        from csd.transcript import final_text

        text = final_text(self.turn())
        cut = last.rfind(TRUNCATED_MARK) if last is not None else -1
        if text and (last is None or cut < 0 or text.startswith(last[:cut])):
            return text
        return last or ""

    def truncated(self, text: str) -> bool:
        """``text`` is the hook's truncated copy (the transcript did not give the whole reply)."""
        last = self._last()
        return last is not None and text == last and TRUNCATED_MARK in last[-40:]

    def why_empty(self) -> str:
        """Why there is no reply text, for the error line and the diagnostic file."""
        last = self._last()
        said = "the stop event has no last_assistant_message" if last is None else "the stop event's last_assistant_message is empty"
        if self.transcript is None or not self.transcript.is_file():
            return f"{said} and there is no transcript ({self.transcript})"
        turn = self.turn()
        if turn is None:
            where = f"no prompt line after byte {self.offset}" + (f" with promptId {self.prompt.prompt_id}" if self.prompt.prompt_id else "")
            return f"{said} and the transcript {self.transcript} has {where} within {TRANSCRIPT_LAG_LIMIT:g}s of the stop"
        return f"{said} and this turn in the transcript {self.transcript} has no assistant text within {TRANSCRIPT_LAG_LIMIT:g}s of the stop"

    def markdown(self, full: bool = False) -> str:
        from csd.transcript import turn_markdown

        turn = self.turn()
        if turn is None:
            return f"**Prompt:** {self.prompt.data.get('prompt', '')}\n\n{self.text()}"
        return turn_markdown(turn, full)


def transcript_file(wdir: WorkersDir, meta: Meta, hint: Event | None = None) -> Path | None:
    """The worker's transcript: the path the hook recorded (preferred), else Claude Code's encoded path."""
    candidates: list[str] = []
    if hint is not None and isinstance(hint.data.get("transcript_path"), str):
        candidates.append(hint.data["transcript_path"])
        if os.path.isfile(candidates[0]):
            return Path(candidates[0])  # no need to read the events file for it
    from csd.workers import last_line_with

    raw = last_line_with(wdir.events_path(meta.session_id), b'"transcript_path"')
    if raw is not None:
        try:
            ev = parse_line(raw.decode("utf-8", "replace"), 0)
            if isinstance(ev.data.get("transcript_path"), str):
                candidates.append(ev.data["transcript_path"])
        except BadLine:
            pass
    from csd.transcriptfile import session_transcript

    candidates.append(session_transcript(meta.cwd, wdir.current_session_id(meta)))
    for c in candidates:
        if os.path.isfile(c):
            return Path(c)
    return Path(candidates[0]) if candidates else None


def turn_failure(wdir: WorkersDir, meta: Meta, ev: Event) -> str | None:
    """The one-line failure of the turn that ``ev`` ended, or None when it did not end in an API error:
    a stop_failure, or a ``stop`` of a release without StopFailure (before 2.1.78) whose transcript ends
    with Claude Code's synthetic API error line (read once, backwards from the end of the file)."""
    name = meta.tmux_name
    if ev.error is not None:
        return failure_line(name, ev)
    if not ev.may_hide_api_error:
        return None
    from csd.transcriptfile import read_api_state

    path = transcript_file(wdir, meta, ev)
    api = read_api_state(path) if path is not None else None
    if api is None or api.error is None:
        return None
    return failure_text(name, api.error, api.message)


def last_turn_markdown(wdir: WorkersDir, meta: Meta, full: bool = False) -> str:
    """The last turn of the worker's transcript as markdown (``read-turn``)."""
    from csd.transcript import last_turn, turn_markdown

    turn = last_turn(transcript_of(wdir, meta))
    if turn is None:
        raise CsdError(f"worker {meta.tmux_name!r} has no turn in its transcript yet; run: {wdir.shim_path(meta.tmux_name)} converse PROMPT")
    return turn_markdown(turn, full)


def transcript_of(wdir: WorkersDir, meta: Meta) -> Transcript:
    path = transcript_file(wdir, meta)
    if path is None or not path.is_file():
        raise CsdError(f"no transcript for worker {meta.tmux_name!r} yet (looked for {path})")
    from csd.transcriptfile import read_transcript

    return read_transcript(path)
