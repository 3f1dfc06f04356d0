"""The pure readers of what tmux shows: csd.screen (start-up dialogs, exit reasons, last lines) on the real
Claude Code's captured screens (../shared/claude-code/samples), and tmux.parse_panes on list-panes output."""

from __future__ import annotations

from pathlib import Path

import pytest

from csd.screen import DIALOGS, ONBOARDING, detect_dialog, exit_words, last_lines, marker_on, startup_hint
from csd.tmux import PANE_FORMAT, Pane, parse_panes, worker_pane

SAMPLES = Path(__file__).resolve().parent.parent.parent / "shared" / "claude-code" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared samples not present")


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


@needs_samples
@pytest.mark.parametrize(("name", "key"), [
    ("dialog-workspace-trust.txt", "workspace-trust"),
    ("dialog-onboarding-3-trust.txt", "workspace-trust"),
    ("dialog-bypass-permissions.txt", "bypass-permissions"),
    ("dialog-api-key.txt", "api-key"),
    ("dialog-onboarding-1-theme.txt", "onboarding"),
])
def test_each_real_dialog_is_recognised(name: str, key: str) -> None:
    dialog = detect_dialog(sample(name))
    assert dialog is not None and dialog.key == key


@needs_samples
@pytest.mark.parametrize("name", ["screen-1-idle-after-start.txt", "screen-2-after-plain-and-tool-prompts.txt",
                                  "screen-3-busy.txt", "screen-6-slash-exit-autocomplete.txt"])
def test_a_working_session_s_screen_is_no_dialog(name: str) -> None:
    assert detect_dialog(sample(name)) is None


@needs_samples
@pytest.mark.parametrize(("name", "dialog"), [("dialog-workspace-trust.txt", DIALOGS[0]), ("dialog-bypass-permissions.txt", DIALOGS[1]),
                                              ("dialog-api-key.txt", DIALOGS[2])])
def test_the_marker_starts_on_the_refusing_option(name: str, dialog) -> None:
    """Claude Code puts ❯ on "No" first: csd must move it (dialog.keys) before it presses Enter."""
    screen = sample(name)
    assert not marker_on(screen, dialog.yes_text)
    assert dialog.keys


def test_marker_on_reads_the_line_of_the_option_only() -> None:
    frame = "  ❯ 1. No, exit\n    2. Yes, I trust this folder\n"
    moved = "    1. No, exit\n  ❯ 2. Yes, I trust this folder\n"
    assert not marker_on(frame, "Yes, I trust this folder") and marker_on(moved, "Yes, I trust this folder")
    assert not marker_on(moved, "not on the screen")
    assert not marker_on("  Yes, I trust this folder ❯\n", "Yes, I trust this folder")  # after the text is not on it


def test_onboarding_takes_enter_only() -> None:
    assert detect_dialog("Press Enter to continue") is ONBOARDING and ONBOARDING.keys == ()


def test_last_lines_drop_blanks_and_tmux_s_dead_pane_banner() -> None:
    screen = "\n".join(["", "one  ", "", *(f"line {i}" for i in range(20)), "Pane is dead (status 1, Sun Nov 29)", ""])
    tail = last_lines(screen, n=3)
    assert tail == " Last lines of the pane:\n  | line 17\n  | line 18\n  | line 19"
    assert last_lines("\n\n  \nPane is dead (status 1)\n") == " The pane showed nothing."


@pytest.mark.parametrize(("screen", "says"), [
    ("--dangerously-skip-permissions cannot be used with root/sudo privileges", "IS_SANDBOX=1"),
    ("Error: Session ID 1234 is already in use.", "csd adopt"),
    ("No conversation found with session ID: 1234", "No conversation with that session id"),
    ("something else entirely", ""),
])
def test_startup_hint_says_what_to_do(screen: str, says: str) -> None:
    hint = startup_hint(screen)
    assert (says in hint) if says else hint == ""


def test_exit_words() -> None:
    assert exit_words("1") == " (exit status 1)" and exit_words("") == ""


def test_parse_panes_takes_each_session_s_first_pane_and_each_pane_by_its_id() -> None:
    assert PANE_FORMAT.count("\t") == 4  # the fields parse_panes reads, in this order
    out = "api\t%1\t4242\t0\t\napi\t%2\t4343\t0\t\nweb\t%3\t77\t1\t137\n"
    panes = parse_panes(out)
    a1, a2, w = Pane("api", "%1", 4242, False, ""), Pane("api", "%2", 4343, False, ""), Pane("web", "%3", 77, True, "137")
    assert panes == {"api": a1, "%1": a1, "%2": a2, "web": w, "%3": w}
    # a worker whose meta names its pane is that pane, or gone with it; an older meta's is the session's first
    assert (worker_pane(panes, "api", "%2"), worker_pane(panes, "api", "%7"), worker_pane(panes, "api")) == (a2, None, a1)


def test_parse_panes_tolerates_what_is_not_a_pane_line() -> None:
    out = "garbage\nx\t%9\tnot-a-pid\t0\nold\t%4\t12\t0\n\n"  # an unparsable pid is 0; a 4-field line (no status) ok
    x, old = Pane("x", "%9", 0, False, ""), Pane("old", "%4", 12, False, "")
    assert parse_panes(out) == {"x": x, "%9": x, "old": old, "%4": old}
    assert parse_panes("") == {}


def test_a_session_name_with_spaces_survives() -> None:
    assert parse_panes("my worker\t%5\t10\t0\t\n")["my worker"].pid == 10
