"""csd's error types and the exit-code table; cli.main turns each error into its exit code and one line on stderr."""

from __future__ import annotations

OK, FAILURE, USAGE, NOT_RUNNING, TURN_FAILED, HOST_UNREACHABLE, HOST_CSD, INTERRUPTED, TERMINATED = 0, 1, 2, 3, 4, 5, 6, 130, 143

#: every exit code csd uses and what it means (``csd help`` prints it; the controller skill lists it)
EXIT_CODES = (
    (OK, "ok"),
    (FAILURE, "failure, including a timeout"),
    (USAGE, "usage error (unknown command, option, event type, state or bad value)"),
    (NOT_RUNNING, "the worker is not running (terminated or gone) and the command needs a live one"),
    (TURN_FAILED, "the turn ended in an API error (stop_failure); the line on stderr names the error and what to do"),
    (HOST_UNREACHABLE, "a remote host cannot be reached over SSH (network, authentication refused, host key, connection lost)"),
    (HOST_CSD, "csd is missing on a remote host, or of an incompatible version"),
    (INTERRUPTED, f"interrupted (Ctrl-C); {TERMINATED} for SIGTERM. Either way locks are released and a half-made worker removed"),
)


class CsdError(Exception):
    """A failure the user can act on; the message is the one line printed after ``csd: error:``."""

    exit_code = FAILURE


class UsageError(CsdError):
    exit_code = USAGE


class NotRunning(CsdError):
    """The worker is terminated or gone and the command needs a live one."""

    exit_code = NOT_RUNNING


class UnknownWorker(CsdError):
    exit_code = FAILURE

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.suggestions = suggestions  # known names close to the unknown one (a likely typo)


class EmptyReply(CsdError):
    """The turn ended but neither its stop event nor its transcript holds any reply text."""

    exit_code = FAILURE

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # what was looked at and missing, for the diagnostic file


class TimedOut(CsdError):
    """A converse's time ran out (csd.waiter); the message says what the worker was doing, and the command's
    line says for how long it waited."""


class TmuxNotAnswering(CsdError):
    """The tmux server took no notice of a command within ``CSD_TMUX_TIMEOUT`` (stopped, or swamped)."""


class TurnFailed(CsdError):
    """The turn ended in an API error (Claude Code's StopFailure); ``event`` is its stop_failure line."""

    exit_code = TURN_FAILED

    def __init__(self, message: str, event: object = None) -> None:
        super().__init__(message)
        self.event = event


class HostUnreachable(CsdError):
    """A remote host cannot be reached over SSH: network, authentication, host key, or the connection
    dropped and could not be re-established. The message names the host and what to do."""

    exit_code = HOST_UNREACHABLE


class HostCsd(CsdError):
    """csd is missing on a remote host, or is a version this csd cannot drive."""

    exit_code = HOST_CSD


class Terminated(CsdError):
    """SIGTERM ended a command; its clean-up ran (locks released, a half-made worker removed)."""

    exit_code = TERMINATED
