"""Tests for csd.transcript: real Claude Code transcripts from tests/data plus hand-made edge cases."""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from csd import transcript as tr
from csd.transcript import (
    Interrupt,
    Text,
    Thinking,
    ToolResult,
    ToolUse,
    Transcript,
    encode_cwd,
    final_text,
    last_turn,
    parse_lines,
    transcript_path,
    turn_for_prompt,
    turn_markdown,
    turns,
)
from csd.transcriptfile import read_transcript, session_transcript

DATA = Path(__file__).parent / "data"
BASIC = DATA / "transcript-basic-session.jsonl"
AGENT_COMPACT = DATA / "transcript-agent-compact-session.jsonl"
SUBAGENT = DATA / "transcript-subagent-agent-a05806d38f3fbce1d.jsonl"
BY_KIND = DATA / "transcript-examples-by-line-kind.jsonl"

# prompt_id values of the UserPromptSubmit hook payloads recorded in the same sessions.
BASIC_PROMPT_IDS = (
    "da079239-9934-433f-99bb-ea6f0c88f16f",
    "bd7aea2b-7214-4337-8629-e1caa7e2beb9",
    "098d38d3-172a-4160-92da-737a668a009c",
)
TASK_NOTIFICATION_PROMPT_ID = "ff9f5a5f-b6fa-42d7-8b74-34520fbf3c78"
AGENT_PROMPT_ID = "152aa1c7-6c85-4853-82a9-87c803b46781"
COMPACT_PROMPT_ID = "928332ae-11b2-40f2-bf95-5d459f873610"


# --------------------------------------------------------------------------------------------------
# Hand-made lines, shaped like the real ones (FACTS §6): one assistant line per content block.

_uuids = itertools.count(1)


def _uuid() -> str:
    return f"00000000-0000-4000-8000-{next(_uuids):012d}"


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "user", "message": {"role": "user", "content": content}, "uuid": _uuid(), **extra}


def prompt(text: Any, prompt_id: str, **extra: Any) -> dict[str, Any]:
    return user(text, promptId=prompt_id, origin={"kind": "human"}, promptSource="typed", **extra)


def assistant(
    message_id: str, *blocks: Any, stop_reason: str | None = "end_turn", content: Any = None
) -> list[dict[str, Any]]:
    if content is not None or not blocks:
        return [_assistant_line(message_id, content, stop_reason)]
    return [_assistant_line(message_id, [b], stop_reason) for b in blocks]


def _assistant_line(message_id: str, content: Any, stop_reason: str | None) -> dict[str, Any]:
    return {
        "type": "assistant",
        "uuid": _uuid(),
        "message": {"id": message_id, "role": "assistant", "content": content, "stop_reason": stop_reason},
    }


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def tool_use(name: str, tool_input: Any, tool_id: str = "toolu_1") -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}


def tool_result(
    content: Any, tool_id: str = "toolu_1", is_error: bool | None = False, **extra: Any
) -> dict[str, Any]:
    block: dict[str, Any] = {"tool_use_id": tool_id, "type": "tool_result", "content": content}
    if is_error is not None:
        block["is_error"] = is_error
    return user([block], **extra)


def flat(*parts: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        out.extend(p if isinstance(p, list) else [p])
    return out


def jsonl(entries: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


# --------------------------------------------------------------------------------------------------
# encode_cwd / transcript_path


def utf16_units(s: str) -> list[int]:
    """The UTF-16 code units JavaScript sees, with surrogate pairs computed by hand."""
    units: list[int] = []
    for ch in s:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            units += [0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)]
        else:
            units.append(cp)
    return units


def java_hash_reference(s: str) -> int:
    """Java's String.hashCode written out independently: over UTF-16 units, explicit int32 wrap."""
    h = 0
    for u in utf16_units(s):
        h = h * 31 + u
        h = ((h + 2**31) % 2**32) - 2**31  # int32 overflow, as Java does it
    return h


def base36_reference(n: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
        if n == 0:
            return digits


def test_java_hash_reference_matches_known_java_values() -> None:
    """The reference itself agrees with values Java prints, so the long-path test checks something real."""
    assert java_hash_reference("") == 0
    assert java_hash_reference("hello") == 99162322
    assert java_hash_reference("polygenelubricants") == -(2**31)
    assert base36_reference(2**31) == "zik0zk"


@pytest.mark.parametrize(
    ("cwd", "expected"),
    [
        ("/tmp/ccx/my.proj_dir with space", "-tmp-ccx-my-proj-dir-with-space"),  # FACTS §6
        ("/tmp/ccx/proj2", "-tmp-ccx-proj2"),
        ("/Home/User", "-Home-User"),  # no lowercasing
        ("/a//b__c", "-a--b--c"),  # runs of dashes are not merged
        ("/tmp/café", "-tmp-caf-"),  # a BMP non-ASCII character is one UTF-16 unit
        ("/tmp/😀", "-tmp---"),  # outside the BMP: two UTF-16 units, two dashes
        ("", ""),
    ],
)
def test_encode_cwd_replaces_every_non_alphanumeric_utf16_unit(cwd: str, expected: str) -> None:
    assert encode_cwd(cwd) == expected


def test_encode_cwd_leaves_exactly_200_chars_alone() -> None:
    cwd = "/" + "a" * 199
    assert encode_cwd(cwd) == "-" + "a" * 199


@pytest.mark.parametrize(
    "cwd",
    [
        "/" + "a" * 200,
        "/home/user/" + "/".join(f"dir{i}.x" for i in range(40)),
        "/tmp/" + "😀" * 120,
        "\0" * 250 + "polygenelubricants",  # "\0"* hashes to 0, so this hashes to Integer.MIN_VALUE
    ],
)
def test_encode_cwd_long_path_gets_cut_and_hash_suffix(cwd: str) -> None:
    """Over 200 chars: the first 200 encoded chars, '-', base36 of abs(the Java hash of the raw cwd)."""
    alnum = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    plain = "".join(chr(u) if u in alnum else "-" for u in utf16_units(cwd))
    assert len(plain) > 200
    expected = plain[:200] + "-" + base36_reference(abs(java_hash_reference(cwd)))
    assert encode_cwd(cwd) == expected


def test_encode_cwd_min_int_hash_is_positive_like_js_math_abs() -> None:
    assert encode_cwd("\0" * 250 + "polygenelubricants").endswith("-zik0zk")


def test_transcript_path_matches_the_hook_payload_paths() -> None:
    sid = "33333333-2222-4333-8444-555555555555"
    assert transcript_path("/tmp/ccx/home3/.claude", "/tmp/ccx/my.proj_dir with space", sid) == (
        f"/tmp/ccx/home3/.claude/projects/-tmp-ccx-my-proj-dir-with-space/{sid}.jsonl"
    )
    sid2 = "11111111-2222-4333-8444-555555555555"
    assert transcript_path("/tmp/ccx/home2/.claude", "/tmp/ccx/proj2", sid2) == (
        f"/tmp/ccx/home2/.claude/projects/-tmp-ccx-proj2/{sid2}.jsonl"
    )


def test_session_transcript_takes_claude_code_s_config_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert session_transcript("/w", "s") == "/home/someone/.claude/projects/-w/s.jsonl"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", "/etc/claude-cfg")
    assert session_transcript("/w", "s") == "/etc/claude-cfg/projects/-w/s.jsonl"
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", "")  # empty counts as unset
    assert session_transcript("/w", "s") == "/home/someone/.claude/projects/-w/s.jsonl"


# --------------------------------------------------------------------------------------------------
# parse_lines / read_transcript


def test_parse_lines_skips_blank_and_reports_bad_lines() -> None:
    parsed = parse_lines(['{"type":"mode"}\n', "\n", "not json\n", "[1, 2]\n", '"str"', '{"type":"user"}'])
    assert [e["type"] for e in parsed.entries] == ["mode", "user"]
    assert parsed.bad_lines == (3, 4, 5)
    assert parsed.partial_tail is False


def test_parse_lines_reports_an_unparseable_last_line_as_partial_not_bad() -> None:
    parsed = parse_lines(['{"type":"mode"}', "oops", '{"type":"user","mess', "", "  "])
    assert [e["type"] for e in parsed.entries] == ["mode"]
    assert parsed.bad_lines == (2,)
    assert parsed.partial_tail is True


def test_parse_lines_empty() -> None:
    assert parse_lines([]) == Transcript()


def test_read_transcript_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_transcript(tmp_path / "nope.jsonl") == Transcript()
    assert read_transcript(tmp_path / "not-a-dir.txt" / "x.jsonl") == Transcript()
    assert turns(read_transcript(tmp_path / "nope.jsonl")) == []
    assert last_turn(read_transcript(tmp_path / "nope.jsonl")) is None


def test_read_transcript_tolerates_a_half_written_last_line(tmp_path: Path) -> None:
    """A reader racing the writer sees a cut line, even one cut inside a UTF-8 character."""
    entries = flat(prompt("hi", "p1"), assistant("m1", text("hello")))
    full_last = json.dumps(prompt("café ünïcode", "p2"), ensure_ascii=False).encode()
    cut = full_last[: full_last.index("é".encode()) + 1]  # ends in the middle of "é"
    path = tmp_path / "t.jsonl"
    path.write_bytes(jsonl(entries).encode() + cut)
    parsed = read_transcript(path)
    assert parsed.partial_tail is True
    assert parsed.bad_lines == ()
    assert len(parsed.entries) == 2
    turn = last_turn(parsed)
    assert turn is not None and turn.prompt == "hi" and final_text(turn) == "hello"


def test_read_transcript_does_not_split_on_unicode_line_separators(tmp_path: Path) -> None:
    """JSON.stringify leaves U+2028 raw inside strings; only "\\n" ends a JSONL line."""
    entries = flat(prompt("a\u2028b\x85c", "p1"), assistant("m1", text("x\u2029y")))
    path = tmp_path / "t.jsonl"
    raw = jsonl(entries).replace("\\u2028", "\u2028").replace("\\u2029", "\u2029")
    path.write_text(raw, encoding="utf-8")
    parsed = read_transcript(path)
    assert parsed.bad_lines == () and not parsed.partial_tail
    turn = last_turn(parsed)
    assert turn is not None and turn.prompt == "a\u2028b\x85c" and final_text(turn) == "x\u2029y"


def test_read_transcript_real_samples_parse_cleanly() -> None:
    for path in (BASIC, AGENT_COMPACT, SUBAGENT, BY_KIND):
        parsed = read_transcript(path)
        assert parsed.bad_lines == () and not parsed.partial_tail, path
        assert len(parsed.entries) == len(path.read_text(encoding="utf-8").splitlines())


# --------------------------------------------------------------------------------------------------
# Real samples


def test_basic_session_turns() -> None:
    ts = turns(read_transcript(BASIC))
    assert [t.prompt_id for t in ts] == list(BASIC_PROMPT_IDS)
    assert [t.prompt for t in ts] == [
        "hello from paste",
        "please run TOOL:Bash:echo tool-ok; uname -s",
        "multi line\nsecond line via paste-buffer",
    ]
    assert [final_text(t) for t in ts] == [
        "ECHO: hello from paste",
        "DONE: tool-ok\nLinux",
        "ECHO: multi line\nsecond line via paste-buffer",
    ]
    assert not any(t.synthetic for t in ts)
    assert all(t.complete for t in ts)
    assert ts[1].items == (
        Text("Calling Bash.", "msg_mock000007"),
        ToolUse(
            "Bash", {"command": "echo tool-ok; uname -s", "description": "mock tool call"}, "toolu_mock000005"
        ),
        ToolResult("tool-ok\nLinux", False, "toolu_mock000005"),
        Text("DONE: tool-ok\nLinux", "msg_mock000009"),
    )
    assert ts[1].uuid == "7635a616-a54e-43f5-92f7-09267cde6b6a"
    assert ts[1].timestamp == "2026-11-23T19:48:45.878Z"


def test_basic_session_tool_turn_markdown() -> None:
    turn = turn_for_prompt(read_transcript(BASIC), BASIC_PROMPT_IDS[1])
    assert turn is not None
    assert turn_markdown(turn) == (
        "**Prompt:** please run TOOL:Bash:echo tool-ok; uname -s\n"
        "\n"
        "Calling Bash.\n"
        "\n"
        "**Tool: Bash**\n"
        "```json\n"
        "{\n"
        '  "command": "echo tool-ok; uname -s",\n'
        '  "description": "mock tool call"\n'
        "}\n"
        "```\n"
        "\n"
        "**Result:**\n"
        "```\n"
        "tool-ok\n"
        "Linux\n"
        "```\n"
        "\n"
        "DONE: tool-ok\n"
        "Linux\n"
    )


def test_turn_for_prompt_finds_each_turn_and_none_for_unknown() -> None:
    parsed = read_transcript(BASIC)
    for pid in BASIC_PROMPT_IDS:
        turn = turn_for_prompt(parsed, pid)
        assert turn is not None and turn.prompt_id == pid
    assert turn_for_prompt(parsed, "no-such-prompt") is None
    assert last_turn(parsed) == turn_for_prompt(parsed, BASIC_PROMPT_IDS[-1])


def test_agent_compact_session_turns() -> None:
    parsed = read_transcript(AGENT_COMPACT)
    ts = turns(parsed)
    assert [t.prompt for t in ts][:3] == [
        "hello special dir",
        "TOOL:Bash:pwd; echo $HOME; ls -la",
        'TOOL:Agent:{"description":"probe","prompt":"sub task hello","subagent_type":"general-purpose"}',
    ]
    assert [t.synthetic for t in ts] == [False, False, False, True]
    assert ts[2].prompt_id == AGENT_PROMPT_ID
    # The agent tool result is a list of text blocks.
    result = next(i for i in ts[2].items if isinstance(i, ToolResult))
    assert result.content.startswith("Async agent launched successfully.")
    assert result.is_error is False  # is_error absent in the sample


def test_task_notification_turn_is_synthetic() -> None:
    parsed = read_transcript(AGENT_COMPACT)
    turn = turn_for_prompt(parsed, TASK_NOTIFICATION_PROMPT_ID)
    assert turn is not None
    assert turn.synthetic is True
    assert turn.prompt.startswith("<task-notification>")
    assert final_text(turn) == "ECHO: "
    assert last_turn(parsed) == turn
    human = last_turn(parsed, include_synthetic=False)
    assert human is not None and human.prompt_id == AGENT_PROMPT_ID


def test_compact_summary_and_slash_compact_are_not_turns() -> None:
    parsed = read_transcript(AGENT_COMPACT)
    ts = turns(parsed)
    assert len(ts) == 4
    assert turn_for_prompt(parsed, COMPACT_PROMPT_ID) is None
    for t in ts:
        assert not t.prompt.startswith("This session is being continued")
        md = turn_markdown(t, full=True)
        assert "<command-name>" not in md and "<local-command" not in md and "Compacted" not in md


def test_subagent_transcript_is_all_sidechain_and_still_has_its_turn() -> None:
    ts = turns(read_transcript(SUBAGENT))
    assert len(ts) == 1
    assert ts[0].prompt == "sub task hello"
    assert final_text(ts[0]) == "ECHO: sub task hello"


def _by_kind() -> list[tuple[str, dict[str, Any]]]:
    wrapped = [json.loads(line) for line in BY_KIND.read_text(encoding="utf-8").splitlines()]
    return [(w["_kind"], w["line"]) for w in wrapped]


def test_every_line_kind_alone_is_handled() -> None:
    """Each observed line kind, on its own, yields at most one turn and renders without error."""
    kinds = _by_kind()
    assert len(kinds) == 42
    prompts = {}
    for kind, line in kinds:
        ts = turns([line])
        for t in ts:
            turn_markdown(t)
            turn_markdown(t, full=True)
            final_text(t)
        prompts[kind] = [t.prompt for t in ts]
    assert prompts["user/None/content:str"] == ["hello from paste"]
    assert prompts["user/None/content:str/sidechain"] == ["sub task hello"]
    for kind in (
        "user/None/content:str/compactSummary",
        "user/None/content:str/meta",
        "user/None/content:tool_result",
    ):
        assert prompts[kind] == [], kind
    assert all(not v for k, v in prompts.items() if not k.startswith("user/"))


def test_all_line_kinds_together() -> None:
    """Mixed main-session and subagent lines: sidechain lines are dropped, the rest fold into turns."""
    ts = turns([line for _, line in _by_kind()])
    assert [t.prompt for t in ts] == ["hello from paste"]
    items = ts[0].items
    assert [type(i) for i in items] == [Text, ToolUse, ToolResult]
    assert final_text(ts[0]) == "ECHO: hello from paste"


# --------------------------------------------------------------------------------------------------
# Hand-made edge cases


def test_null_and_string_content_everywhere() -> None:
    entries = flat(
        prompt("q", "p1"),
        user(None),  # a user line with null content is nobody's prompt
        assistant("m1", content="plain string reply"),
        assistant("m2", content=None),
        {"type": "assistant", "uuid": _uuid(), "message": None},
        {"type": "user", "uuid": _uuid()},
        tool_result(None),
        tool_result("   "),
        assistant("m3", text("after")),
    )
    turn = last_turn(entries)
    assert turn is not None
    assert turn.items == (
        Text("plain string reply", "m1"),
        ToolResult("", False, "toolu_1"),
        ToolResult("   ", False, "toolu_1"),
        Text("after", "m3"),
    )
    assert final_text(turn) == "after"
    md = turn_markdown(turn)
    assert md.count("**Result:**\n```\n(no output)\n```") == 2


def test_prompt_as_text_blocks_with_image() -> None:
    image = {"type": "image", "source": {}}
    entries = flat(prompt([text("look at this"), image], "p1"), assistant("m1", text("ok")))
    turn = last_turn(entries)
    assert turn is not None and turn.prompt == "look at this\n[image]" and not turn.synthetic


def test_tool_result_list_content_with_image_and_other_blocks() -> None:
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", tool_use("Read", {"file_path": "/x.png"}), stop_reason="tool_use"),
        tool_result(
            [
                text("line a"),
                {"type": "image", "source": {"data": "..."}},
                "bare",
                {"type": "tool_reference", "tool_name": "X"},
            ]
        ),
        assistant("m2", text("done")),
    )
    turn = last_turn(entries)
    assert turn is not None
    assert turn.items[1] == ToolResult("line a\n[image]\nbare\n[tool_reference]", False, "toolu_1")


def test_thinking_is_quoted_line_by_line() -> None:
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", {"type": "thinking", "thinking": "first\n\nthird", "signature": "s"}, text("answer")),
        assistant("m0", {"type": "redacted_thinking", "data": "xx"}, {"type": "thinking", "thinking": ""}),
    )
    turn = turns(entries)[0]
    assert turn.items[0] == Thinking("first\n\nthird")
    md = turn_markdown(turn)
    assert "> **Thinking:** first\n>\n> third\n\nanswer" in md
    assert "> **Thinking:** [redacted]" in md
    assert md.count("**Thinking:**") == 2  # the empty one is not rendered


def test_tool_error_is_rendered_as_tool_error() -> None:
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", tool_use("Bash", {"command": "false"}), stop_reason="tool_use"),
        tool_result("Exit code 1", is_error=True),
        assistant("m2", text("it failed")),
    )
    turn = last_turn(entries)
    assert turn is not None
    assert turn.items[1] == ToolResult("Exit code 1", True, "toolu_1")
    md = turn_markdown(turn)
    assert "**Tool Error:**\n```\nExit code 1\n```" in md
    assert "**Result:**" not in md


def test_long_result_is_truncated_unless_full() -> None:
    output = "\n".join(f"line {i}" for i in range(1, 13)) + "\n"
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", tool_use("Bash", {"command": "seq"}), stop_reason="tool_use"),
        tool_result(output),
        assistant("m2", tool_use("Bash", {"command": "fail"}, "toolu_2"), stop_reason="tool_use"),
        tool_result(output, tool_id="toolu_2", is_error=True),
        assistant("m3", text("done")),
    )
    turn = last_turn(entries)
    assert turn is not None
    short = turn_markdown(turn)
    head = "line 1\nline 2\nline 3\nline 4\nline 5\n... (12 lines total)\n```"
    assert f"**Result:**\n```\n{head}" in short
    assert f"**Tool Error:**\n```\n{head}" in short
    assert "line 6" not in short
    full = turn_markdown(turn, full=True)
    body = output.rstrip("\n")
    assert f"**Result:**\n```\n{body}\n```" in full
    assert f"**Tool Error:**\n```\n{body}\n```" in full
    assert "lines total" not in full


def test_result_of_exactly_five_lines_is_not_marked() -> None:
    entries = flat(prompt("q", "p1"), assistant("m1", tool_use("B", {})), tool_result("1\n2\n3\n4\n5"))
    turn = last_turn(entries)
    assert turn is not None
    assert "**Result:**\n```\n1\n2\n3\n4\n5\n```" in turn_markdown(turn)


def test_fence_grows_past_backticks_in_the_content() -> None:
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", tool_use("Write", {"content": "x"}), stop_reason="tool_use"),
        tool_result("```python\nprint(1)\n```"),
    )
    turn = last_turn(entries)
    assert turn is not None
    assert "**Result:**\n````\n```python\nprint(1)\n```\n````" in turn_markdown(turn)


def test_tool_input_json_is_indented_and_keeps_unicode() -> None:
    entries = flat(prompt("q", "p1"), assistant("m1", tool_use("Edit", {"a": ["é", 1], "b": None})))
    turn = last_turn(entries)
    assert turn is not None
    expected = '**Tool: Edit**\n```json\n{\n  "a": [\n    "é",\n    1\n  ],\n  "b": null\n}\n```'
    assert expected in turn_markdown(turn)


def test_final_text_joins_text_blocks_of_the_last_message_only() -> None:
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", text("earlier"), tool_use("B", {}), stop_reason="tool_use"),
        tool_result("r"),
        assistant("m2", {"type": "thinking", "thinking": "hm"}, text("part one"), text("part two")),
    )
    turn = last_turn(entries)
    assert turn is not None
    assert final_text(turn) == "part one\n\npart two"


def test_final_text_of_a_turn_without_text_is_empty() -> None:
    entries = flat(prompt("q", "p1"), assistant("m1", tool_use("B", {}), stop_reason="tool_use"))
    turn = last_turn(entries)
    assert turn is not None and final_text(turn) == "" and not turn.complete
    assert final_text(None) == ""


def test_final_text_never_comes_from_another_turn() -> None:
    entries = flat(prompt("one", "p1"), assistant("m1", text("reply one")), prompt("two", "p2"))
    assert final_text(turn_for_prompt(entries, "p2")) == ""
    assert final_text(turn_for_prompt(entries, "p1")) == "reply one"


def test_complete_tracks_whether_the_closing_message_is_written() -> None:
    base = flat(prompt("q", "p1"), assistant("m1", text("Calling Bash."), stop_reason="tool_use"))
    turn = last_turn(base)
    assert turn is not None and not turn.complete  # the tool_use line is still to come
    more = base + flat(assistant("m1", tool_use("B", {}), stop_reason="tool_use"), tool_result("ok"))
    turn = last_turn(more)
    assert turn is not None and not turn.complete
    done = more + assistant("m2", text("DONE"))
    turn = last_turn(done)
    assert turn is not None and turn.complete and turn.stop_reason == "end_turn"
    # Lines written before the message's stop reason is known carry null: the text still counts as final.
    turn = last_turn(flat(prompt("q", "p1"), assistant("m1", text("x"), stop_reason=None)))
    assert turn is not None and turn.complete


def test_interrupt_is_an_item_not_a_prompt() -> None:
    entries = flat(
        prompt("long job", "p1"),
        assistant("m1", tool_use("Bash", {"command": "sleep 99"}), stop_reason="tool_use"),
        tool_result("The user doesn't want to proceed with this tool use.", is_error=True),
        user([text("[Request interrupted by user for tool use]")]),
    )
    ts = turns(entries)
    assert len(ts) == 1
    assert ts[0].items[-1] == Interrupt("[Request interrupted by user for tool use]")
    assert ts[0].complete
    assert turn_markdown(ts[0]).endswith("*[Request interrupted by user for tool use]*\n")


def test_meta_and_local_command_lines_are_skipped() -> None:
    entries = flat(
        prompt("q", "p1"),
        user("<system-reminder>ctx</system-reminder>", isMeta=True, promptId="p1"),
        assistant("m1", text("a")),
        user("<local-command-caveat>caveat</local-command-caveat>", isMeta=True, promptId="p2"),
        user(
            "<command-name>/model</command-name>\n<command-message>model</command-message>\n"
            "<command-args></command-args>",
            promptId="p2",
        ),
        user("<local-command-stdout>Set model to x</local-command-stdout>", promptId="p2"),
        user("<bash-input>ls</bash-input>", promptId="p3"),
        user("<bash-stdout>a b</bash-stdout><bash-stderr></bash-stderr>", promptId="p3"),
    )
    ts = turns(entries)
    assert [t.prompt for t in ts] == ["q"]
    assert final_text(ts[0]) == "a"
    md = turn_markdown(ts[0])
    assert "command" not in md and "bash" not in md and "system-reminder" not in md


def test_a_slash_command_the_model_answers_becomes_its_own_turn() -> None:
    """A custom command or skill gets a reply: it must not be appended to the previous turn."""
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", text("a")),
        user(
            "<command-message>review is running…</command-message>\n<command-name>/review</command-name>\n"
            "<command-args>src/</command-args>",
            promptId="p2",
        ),
        user("Review the code in src/ ...", isMeta=True, promptId="p2"),
        assistant("m2", text("review done")),
    )
    ts = turns(entries)
    assert [(t.prompt, final_text(t)) for t in ts] == [("q", "a"), ("/review src/", "review done")]
    assert turn_for_prompt(entries, "p2") == ts[1] and not ts[1].synthetic


def test_a_command_inside_the_turn_keeps_the_turn_whole() -> None:
    """Lines a skill invocation writes mid-turn share the turn's promptId (or have none)."""
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", tool_use("Skill", {"skill": "x"}), stop_reason="tool_use"),
        tool_result("Launching skill: x", promptId="p1"),
        user("<command-message>x is running…</command-message>\n<command-name>x</command-name>", promptId="p1"),
        user("<command-name>/y</command-name>"),
        assistant("m2", text("end")),
    )
    ts = turns(entries)
    assert len(ts) == 1 and final_text(ts[0]) == "end"


def test_compact_summary_closes_the_turn_and_is_not_one() -> None:
    entries = flat(
        prompt("q", "p1"),
        assistant("m1", text("a")),
        {"type": "system", "subtype": "compact_boundary", "content": "Conversation compacted"},
        user("This session is being continued from a previous conversation", isCompactSummary=True, promptId="p2"),
        assistant("m9", text("stray")),  # nothing after a compact summary belongs to the old turn
        prompt("next", "p3"),
        assistant("m2", text("b")),
    )
    ts = turns(entries)
    assert [(t.prompt, final_text(t)) for t in ts] == [("q", "a"), ("next", "b")]


def test_task_notification_detected_by_text_alone() -> None:
    notification = user("<task-notification>\n<task-id>x</task-id>\n</task-notification>", promptId="p9")
    entries = flat(notification, assistant("m", text("ok")))
    turn = last_turn(entries)
    assert turn is not None and turn.synthetic
    assert last_turn(entries, include_synthetic=False) is None


def test_duplicate_lines_are_counted_once() -> None:
    entries = flat(prompt("q", "p1"), assistant("m1", text("a")))
    turn = last_turn(entries + [entries[1]])
    assert turn is not None and turn.items == (Text("a", "m1"),)


def test_lines_before_the_first_prompt_and_other_kinds_are_ignored() -> None:
    entries = flat(
        {"type": "mode", "mode": "normal"},
        assistant("m0", text("orphan")),
        tool_result("orphan result"),
        {"type": "attachment", "attachment": {"type": "date"}},
        prompt("q", "p1"),
        {"type": "system", "subtype": "turn_duration"},
        assistant("m1", text("a")),
        {"type": "last-prompt"},
    )
    ts = turns([*entries, "not a dict", None])  # type: ignore[list-item]
    assert [(t.prompt, t.items) for t in ts] == [("q", (Text("a", "m1"),))]


def test_sidechain_lines_in_a_main_transcript_are_ignored() -> None:
    entries = flat(
        prompt("q", "p1"),
        prompt("sub prompt", "p1", isSidechain=True),
        assistant("m1", text("a")),
    )
    entries[-1]["isSidechain"] = False
    ts = turns(entries)
    assert [(t.prompt, final_text(t)) for t in ts] == [("q", "a")]


def test_turns_accepts_a_transcript_or_plain_entries() -> None:
    entries = flat(prompt("q", "p1"), assistant("m1", text("a")))
    parsed = parse_lines(jsonl(entries).splitlines())
    assert turns(parsed) == turns(entries) == turns(iter(entries))


def test_markdown_layout() -> None:
    reply = assistant("m1", text("para one\n\npara two\n"), text(""))
    entries = flat(prompt("multi\nline prompt", "p1"), reply)
    turn = last_turn(entries)
    assert turn is not None
    assert turn_markdown(turn) == "**Prompt:** multi\nline prompt\n\npara one\n\npara two\n"


def test_module_is_pure() -> None:
    """transcript.py imports only the standard library (none of its I/O-driving parts) and csd's pure core (tests/test_layering.py checks which)."""
    source = Path(tr.__file__).read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "json", "posixpath", "collections", "dataclasses", "typing", "csd"}, imported
