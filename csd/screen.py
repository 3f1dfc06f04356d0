"""What a worker's screen says, read from captured pane text (pure): the start-up dialogs and how to answer
them, why a worker that exited at start-up did, and its last lines for an error message. (The input line
at the bottom of the TUI is csd.prompt's.)"""

from __future__ import annotations

from csd.value import Value


class Dialog(Value):
    """A start-up dialog of Claude Code: ``key`` names it, ``yes_text`` is the option to choose, ``keys``
    what moves the selection marker onto it (empty: Enter only)."""

    _fields = ("key", "yes_text", "keys")
    key: str
    yes_text: str
    keys: tuple[str, ...]

    def __init__(self, key: str, yes_text: str, keys: tuple[str, ...]) -> None:
        self._set(key=key, yes_text=yes_text, keys=keys)


DIALOGS = (
    Dialog("workspace-trust", "Yes, I trust this folder", ("Down",)),
    Dialog("bypass-permissions", "Yes, I accept", ("Down",)),
    Dialog("api-key", "Yes", ("Up",)),
)
ONBOARDING = Dialog("onboarding", "", ())


def detect_dialog(screen: str) -> Dialog | None:
    """Which start-up dialog the screen shows, if any."""
    if "Yes, I trust this folder" in screen and "No, exit" in screen:
        return DIALOGS[0]
    if "Bypass Permissions mode" in screen and "Yes, I accept" in screen:
        return DIALOGS[1]
    if "Do you want to use this API key?" in screen:
        return DIALOGS[2]
    if "Choose the text style" in screen or "Press Enter to continue" in screen:
        return ONBOARDING
    return None


def marker_on(screen: str, option: str) -> bool:
    """Is the selection marker (❯) on the line of ``option``?"""
    for line in screen.splitlines():
        if option in line:
            return "❯" in line.split(option)[0]
    return False


def last_lines(screen: str, n: int = 15) -> str:
    """The pane's last ``n`` lines that say something, as the tail of an error message."""
    # blank rows and tmux's own "Pane is dead" banner say nothing about why the worker exited
    lines = [ln.rstrip() for ln in screen.splitlines() if ln.strip() and not ln.startswith("Pane is dead")][-n:]
    if not lines:
        return " The pane showed nothing."
    return " Last lines of the pane:\n" + "\n".join("  | " + ln for ln in lines)


def startup_hint(screen: str) -> str:
    """What to do about a worker that exited at start-up, where its screen says why ("" otherwise)."""
    if "root/sudo" in screen or "--dangerously-skip-permissions cannot be used" in screen:
        return " Claude Code refuses --dangerously-skip-permissions as root: set IS_SANDBOX=1 in the controller's environment (only inside a sandbox)."
    if "already in use" in screen:
        return " That session id is already in use: use csd adopt (--resume) for an existing session."
    if "No conversation found" in screen:
        return " No conversation with that session id exists in this HOME/cwd."
    return ""


def exit_words(status: str) -> str:
    """`` (exit status N)`` for an error message, "" when the status is unknown."""
    return f" (exit status {status})" if status else ""
