"""csd's error types; cli.main turns each into its exit code and one line on stderr."""

from __future__ import annotations

OK, FAILURE, USAGE, NOT_RUNNING, TURN_FAILED, HOST_UNREACHABLE, HOST_CSD, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130


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
