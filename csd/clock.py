"""Times as csd writes and reads them: ISO 8601 in UTC with milliseconds and a ``Z`` (the events file, metas,
locks, and the transcripts Claude Code writes all use it)."""

from __future__ import annotations

from datetime import datetime, timezone


def now_iso() -> str:
    """Now in UTC, e.g. 2026-11-23T19:48:40.434Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(iso: str) -> float | None:
    """An ISO time (an events line's ``ts``, a meta's ``started_at``, a transcript's ``timestamp``) as seconds
    since the epoch; None when it is not one."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (ValueError, TypeError, AttributeError):
        return None
