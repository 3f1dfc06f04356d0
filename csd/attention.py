"""Why an operator should look at a worker: the one rule behind ``attention`` in status/list --json, the
watch table's order and ``watch --notify``. Pure: the caller supplies the state and its age."""

from __future__ import annotations

from csd.states import State
from csd.value import Value


class Facts(Value):
    """What the rule needs of one worker, as its caller knows it now."""

    _fields = ("state", "seconds_in_state", "outcome", "error", "retrying", "attempts", "bg_running", "shim_exists")

    state: str
    seconds_in_state: float  # launching: since the meta was written
    outcome: str | None  # ok | api_error | exited (Worker.outcome, or the transcript's for older releases)
    error: str | None  # the failed turn's error
    retrying: bool  # an API call in flight was sent more than once
    attempts: int | None
    bg_running: int  # background tasks running at the last stop
    shim_exists: bool  # bin/NAME is still there

    def __init__(self, state: str, seconds_in_state: float, outcome: str | None, error: str | None, retrying: bool,
                 attempts: int | None, bg_running: int, shim_exists: bool) -> None:
        self._set(state=state, seconds_in_state=seconds_in_state, outcome=outcome, error=error, retrying=retrying,
                  attempts=attempts, bg_running=bg_running, shim_exists=shim_exists)


def attention(f: Facts, launch_timeout: float, bg_timeout: float) -> str | None:
    """The reason, or None. In order: retrying API calls, a launch past CSD_LAUNCH_TIMEOUT, terminated or gone
    while its shim still exists (nobody stopped it), the last turn failed, idle with background tasks that
    never reported back within CSD_BG_REPORT_TIMEOUT."""
    if f.state == State.WORKING and f.retrying:
        return f"retrying API calls (attempt {f.attempts})" if f.attempts else "retrying API calls"
    if f.state == State.LAUNCHING and f.seconds_in_state > launch_timeout:
        return f"launching for {int(f.seconds_in_state)}s, longer than CSD_LAUNCH_TIMEOUT ({launch_timeout:g}s)"
    if f.state in (State.TERMINATED, State.GONE) and f.shim_exists:
        return f"{f.state} while its shim still exists"
    if f.state == State.IDLE and f.outcome == "api_error":
        return f"last turn failed: {f.error or 'unknown'}"
    if f.state == State.IDLE and f.bg_running and f.seconds_in_state > bg_timeout:
        return f"idle with {f.bg_running} background task{'s' if f.bg_running != 1 else ''} that never reported back"
    return None


def changes_with_time(f: Facts) -> bool:
    """Whether ``attention(f)`` can change while nothing but time passes (the rules that compare
    ``seconds_in_state``); a caller may keep the reason of any other worker until its facts change."""
    return f.state == State.LAUNCHING or (f.state == State.IDLE and bool(f.bg_running))
