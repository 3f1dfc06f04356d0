"""The pure rules of prompt delivery (csd/prompt.py) and the simulated worker's input line, plus the injection fuzzer.

The fuzzer builds hostile prompts from paste markers, key sequences and control characters, nested inside each
other, and checks that what `send` types reaches the simulated worker's key parser as nothing but pastes and line
breaks that rebuild the cleaned prompt exactly: no Enter, no Ctrl-U, no Escape, no text outside a paste.
"""

from __future__ import annotations

import random

import pytest

from csd.prompt import CHUNK_UNITS, InputLine, clean_prompt, input_line, input_stream, unknown_command
from csd.sim.keys import InputBox, Key, KeyParser

SEED = 20261129
ROUNDS = 3000
# Pieces an attacker has to build with: both paste markers, their fragments, key sequences, every kind of control.
PIECES = [
    "\x1b[200~", "\x1b[201~", "\x1b[20", "\x1b[201", "0~", "1~", "~", "\x1b", "\x1b[", "[", "\x00", "\x9b", "\x9b201~",
    "\r", "\n", "\r\n", "\t", "\x15", "\x03", "\x04", "\x7f", "\x08", "\x01", "\x05", "\x1bO", "\x1b]0;t\x07",
    "\x1b[3~", "\x1b[D", "\x1b[13;2u", "/exit", "REPLY:x", "!", "\\", " ", "é", "😀", "a", "[Pasted text #1]",
]
FORBIDDEN = {chr(c) for c in range(0x20) if c != 0x0A} | {chr(c) for c in range(0x7F, 0xA0)}


def hostile(rng: random.Random, depth: int = 0) -> str:
    """A random string of pieces, some of them spliced into the middle of others (nesting)."""
    parts = [rng.choice(PIECES) for _ in range(rng.randint(0, 12))]
    if depth < 3 and rng.random() < 0.5:
        inner = hostile(rng, depth + 1)
        host = rng.choice(PIECES[:6])
        cut = rng.randint(0, len(host))
        parts.insert(rng.randint(0, len(parts)), host[:cut] + inner + host[cut:])
    return "".join(parts)


def typed(stream: bytes) -> tuple[list[Key], InputBox]:
    """What the simulated worker makes of a stream: its keys, and its input line after them."""
    keys = KeyParser().feed(stream.decode("utf-8"))
    box = InputBox()
    for key in keys:
        if key.kind in ("text", "paste"):
            box.insert(key.text, pasted=key.kind == "paste")
        elif key.kind == "newline":
            box.insert("\n")
        elif key.kind == "delete":
            box.delete()
        elif key.kind in ("left", "ctrl_a"):
            box.move(key.kind)
    return keys, box


def test_the_cleaner_reaches_its_fixed_point_in_one_pass_and_leaves_no_control_character() -> None:
    rng = random.Random(SEED)
    for _ in range(ROUNDS):
        raw = hostile(rng)
        once = clean_prompt(raw)
        assert clean_prompt(once) == once, repr(raw)
        assert not FORBIDDEN & set(once), repr(raw)


@pytest.mark.parametrize("shell", [False, True])
def test_fuzzed_prompts_type_nothing_but_pastes_and_line_breaks(shell: bool) -> None:
    """Invariant: every byte of the stream is inside a paste, a line break, or csd's own fixed keys for a leading
    ``!`` and a trailing backslash; the worker's input line then holds exactly the cleaned prompt."""
    rng = random.Random(SEED + shell)
    allowed = {"paste", "newline"} | ({"ctrl_a", "delete", "left"} if not shell else {"left"})
    for _ in range(ROUNDS):
        text = clean_prompt(hostile(rng))
        if not text:
            continue
        keys, box = typed(input_stream(text, shell=shell))
        assert {k.kind for k in keys} <= allowed, (repr(text), keys)
        assert not any(k.kind == "paste" and len(k.text.encode("utf-16-le")) > 2 * CHUNK_UNITS for k in keys)
        assert not any(k.kind == "paste" and "\n" in k.text for k in keys)
        if shell:
            assert (box.mode, box.submitted()) == ("shell", text)
        else:
            assert (box.mode, box.submitted()) == ("prompt", text), repr(text)


@pytest.mark.parametrize(
    "attack",
    [
        "REPLY:hello\x1b[201\x00~\x15/exit\r",  # issue 14: a marker rebuilt by removing the NUL afterwards
        "REPLY:hello\x1b[20\x1b[201~1~\x15/exit\r",  # issue 14: a marker rebuilt by removing the inner marker
        "x\x9b201~\x15/exit\r",  # the one-byte CSI
    ],
)
def test_the_attacks_of_issue_14_leave_plain_text(attack: str) -> None:
    text = clean_prompt(attack)
    assert "\x1b" not in text and "\x15" not in text and "\x00" not in text and "\x9b" not in text
    keys, box = typed(input_stream(text))
    assert {k.kind for k in keys} <= {"paste", "newline"} and box.submitted() == text


def test_clean_prompt_rules() -> None:
    """What Claude Code 2.1.330 does to pasted text, done by csd so that it is predictable (see csd/prompt.py)."""
    assert clean_prompt("a\r\nb\rc\nd") == "a\nb\nc\nd"  # a CR is a line break of its own there: CRLF arrived doubled
    assert clean_prompt("a\tb") == "a    b"  # a tab arrives as four spaces
    assert clean_prompt("  lead kept, trail trimmed \n\n") == "  lead kept, trail trimmed"
    assert clean_prompt("\nfirst line empty") == "\nfirst line empty"
    assert clean_prompt("bell\x07 esc\x1b[31m red") == "bell esc[31m red"


def test_long_lines_are_cut_into_pastes_of_at_most_800_utf16_units() -> None:
    text = "a" * 1700 + "😀" * 500 + "\n\n" + "b" * 10
    keys, box = typed(input_stream(text))
    pastes = [k.text for k in keys if k.kind == "paste"]
    assert [len(p.encode("utf-16-le")) // 2 for p in pastes] == [800, 800, 800, 300, 10]
    assert [k.kind for k in keys].count("newline") == 2 and box.submitted() == text


def test_a_leading_bang_is_text_unless_shell() -> None:
    keys, box = typed(input_stream("!touch F"))
    assert [k.kind for k in keys] == ["paste", "ctrl_a", "paste", "delete", "paste"]
    assert (box.mode, box.submitted()) == ("prompt", "!touch F")
    _, box = typed(input_stream("touch F", shell=True))
    assert (box.mode, box.submitted()) == ("shell", "touch F")
    _, box = typed(input_stream("!"))
    assert (box.mode, box.submitted()) == ("prompt", "!")


def test_a_trailing_backslash_is_followed_by_left() -> None:
    stream = input_stream("C:\\")
    assert stream.endswith(b"\x1b[D")
    _, box = typed(stream)
    assert not box.enter_is_newline() and box.submitted() == "C:\\"


IDLE = """\
✻ Worked for 0s · done 7:43 PM

────────────────────────────────────────
❯\u00a0
────────────────────────────────────────
  ⏵⏵ bypass permissions on (shift+tab to cycle)
"""


def test_input_line_reads_the_box_between_the_last_two_rules() -> None:
    assert input_line(IDLE) == InputLine("prompt", "")
    assert input_line(IDLE).clean  # type: ignore[union-attr]
    two = IDLE.replace("❯\u00a0\n", "❯\u00a0first line\n  second line\n")
    assert input_line(two) == InputLine("prompt", "first line\nsecond line")
    shell = IDLE.replace("❯\u00a0\n", "! ls -la\n").replace("⏵⏵ bypass", "! for shell mode")
    assert input_line(shell) == InputLine("shell", "ls -la")
    assert not input_line(shell.replace("! ls -la", "! ")).clean  # type: ignore[union-attr]
    # an earlier frame in the history above the box does not count
    stale = "❯\u00a0old text\n" + "─" * 40 + "\n" + IDLE
    assert input_line(stale) == InputLine("prompt", "")


def test_input_line_is_none_without_a_box_and_unknown_when_its_top_scrolled_off() -> None:
    assert input_line("  ❯ Yes, I trust this folder\n    No, exit\n") is None
    tall = "  line 40\n  line 41\n" + "─" * 40 + "\n  ⏵⏵ bypass permissions on\n"
    assert input_line(tall) == InputLine("prompt", "…")
    # 2.1.330 marks a box taller than the screen in its top rule (seen with 10 000 lines left in it)
    scrolled = "● ECHO: hi\n" + "─" * 40 + "\n" + "─── ↑ 5626 more " + "─" * 30 + "\n  line 5627\n  line 5628\n" + IDLE[IDLE.index("─" * 40 + "\n  ⏵⏵"):]
    assert input_line(scrolled) == InputLine("prompt", "…")


def test_unknown_command_quotes_the_screen_only_for_a_new_refusal() -> None:
    before = "● Unknown command: /nope\n"
    after = before + "\n● ECHO: hi\n\n● Unknown command: /nope\n\n● Args from unknown skill: foo bar\n"
    assert unknown_command(before, after, "/nope") == "Unknown command: /nope / Args from unknown skill: foo bar"
    assert unknown_command(after, after, "/nope") is None
    assert unknown_command("", "● Unknown command: /other\n", "/nope") is None


def test_past_the_exact_limit_the_prompt_goes_as_one_paste() -> None:
    keys, box = typed(input_stream("!a\nb\n" + "c" * 900, exact=False))
    assert [k.kind for k in keys] == ["paste", "ctrl_a", "paste", "delete", "paste"]
    assert box.submitted().startswith('!\n\n<pasted_content id="')  # the simulated TUI wraps it, as the real one does


def test_the_simulated_input_line_edits_as_the_real_one_was_seen_to() -> None:
    """Each rule as measured on 2.1.330 in tmux (csd/prompt.py's docstring)."""
    box = InputBox()
    box.insert("first line\nsecond line", pasted=True)
    box.kill_line_before()  # C-u: back to the start of the line...
    assert box.text == "first line\n"
    box.kill_line_before()  # ...and at its start, the line break before it
    assert box.text == "first line"
    box.insert("!ls")  # not at the start of an empty line: text
    assert (box.mode, box.text) == ("prompt", "first line!ls")
    box.clear()  # Esc Esc
    box.insert("!ls -la", pasted=True)  # first in an empty line: bash mode, the ! not kept
    assert (box.mode, box.text) == ("shell", "ls -la")
    box.clear()
    assert box.mode == "shell"  # Esc Esc keeps bash mode...
    box.backspace()
    assert box.mode == "prompt"  # ...Backspace on the empty line leaves it
    box.insert("a\tb\n\n\n\nc", pasted=True)  # more than 2 line breaks at 50 rows: a placeholder
    assert box.text == "[Pasted text #1 +4 lines]"
    box.clear()
    box.insert("ends with \\")
    assert box.enter_is_newline() and box.text == "ends with \n"
    box.set("ends with \\")
    box.move("left")
    assert not box.enter_is_newline() and box.submitted() == "ends with \\"
