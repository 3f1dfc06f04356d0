"""Self-tests of the e2e scaffolding (mock Messages API, offline env). No Claude binary needed."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mockapi import MockAPI, decide  # noqa: E402
from offline import NO_TRAFFIC_VARS, offline_env  # noqa: E402

TOOLS = [{"name": n, "input_schema": {"type": "object"}} for n in ("Agent", "Bash", "Read")]
REMINDER = {"type": "text", "text": "<system-reminder>\nsomething TOOL:Bash:rm -rf / SLEEP:99\n</system-reminder>"}


def body(*user_blocks, stream=True, system="You are Claude Code, Anthropic's official CLI for Claude.", tools=TOOLS):
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 128000,
        "stream": stream,
        "system": [{"type": "text", "text": system}],
        "tools": tools,
        "messages": [
            {"role": "user", "content": list(user_blocks)},
            {"role": "system", "content": "# Environment"},  # the CLI appends this after the user message
        ],
    }


def text(t):
    return {"type": "text", "text": t}


def post(api, payload, path="/v1/messages?beta=true", method="POST"):
    c = http.client.HTTPConnection("127.0.0.1", api.port, timeout=20)
    data = json.dumps(payload) if payload is not None else None
    c.request(method, path, body=data, headers={"Content-Type": "application/json", "Authorization": "Bearer tok-secret-123"})
    r = c.getresponse()
    raw = r.read()
    c.close()
    return r.status, dict(r.getheaders()), raw


def sse_events(raw: bytes):
    out = []
    for chunk in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.strip().splitlines() if ": " in line)
        if "event" in lines:
            out.append((lines["event"], json.loads(lines["data"])))
    return out


# ---------------------------------------------------------------------------------------------- scripting


def test_echo_skips_reminders():
    r = decide(body(REMINDER, text("hello world")))
    assert (r.kind, r.blocks[0]["text"], r.delay) == ("echo", "ECHO: hello world", 0.0)


def test_bash_tool():
    r = decide(body(REMINDER, text("please run TOOL:Bash:echo tool-ok; uname -s")))
    assert r.stop_reason == "tool_use"
    assert r.blocks[0] == {"type": "text", "text": "Calling Bash."}
    assert r.blocks[1]["name"] == "Bash"
    assert r.blocks[1]["input"]["command"] == "echo tool-ok; uname -s"


def test_bash_needs_the_tool_offered():
    r = decide(body(text("TOOL:Bash:ls"), tools=[]))
    assert r.kind == "echo"


def test_generic_tool_json():
    spec = {"description": "probe", "prompt": "sub task hello", "subagent_type": "general-purpose"}
    r = decide(body(text("TOOL:Agent:" + json.dumps(spec) + " trailing words")))
    assert r.blocks[1]["name"] == "Agent" and r.blocks[1]["input"] == spec


def test_subagent_never_spawns_agents():
    sysprompt = "x-anthropic-billing-header: cc_version=2.1.330; cc_entrypoint=cli; cc_is_subagent=true;"
    r = decide(body(text('TOOL:Agent:{"prompt":"again"}'), system=sysprompt))
    assert r.kind == "echo"


def test_tool_result_done():
    b = body(text("x"))
    b["messages"].append({"role": "assistant", "content": [text("Calling Bash.")]})
    b["messages"].append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "a" * 300}]})
    r = decide(b)
    assert r.kind == "done" and r.blocks[0]["text"] == "DONE: " + "a" * 200


def test_prompt_after_interrupted_tool_is_scripted():
    rejected = {"type": "tool_result", "tool_use_id": "t", "is_error": True, "content": "The user doesn't want to proceed"}
    r = decide(body(rejected, text("[Request interrupted by user for tool use]\n"), text("after esc")))
    assert r.blocks[0]["text"] == "ECHO: after esc"


def test_task_notification_is_not_scripted():
    note = ("<system-reminder>\n[SYSTEM NOTIFICATION - NOT USER INPUT]\n<task-notification>\n<status>completed</status>\n"
            "<summary>Agent \"probe\" finished</summary>\n<result>ECHO: TOOL:Bash:echo loop</result>\n"
            "</task-notification>\n</system-reminder>")
    r = decide(body(text(note)))
    assert r.kind == "task_notification"
    assert r.blocks[0]["text"] == 'ECHO: task-notification: Agent "probe" finished'


def test_compact_summariser():
    result = {"type": "tool_result", "tool_use_id": "t", "content": "hi"}
    r = decide(body(result, text("CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.")))
    assert r.kind == "compact" and "<summary>" in r.blocks[0]["text"]


def test_prompt_after_compact_is_the_last_block():
    r = decide(body(REMINDER, text("This session is being continued from a previous conversation ..."),
                    text("<local-command-caveat>Caveat</local-command-caveat>"),
                    text("<command-name>/compact</command-name>"),
                    text("<local-command-stdout>Compacted</local-command-stdout>"), text("after compact")))
    assert r.blocks[0]["text"] == "ECHO: after compact"


def test_sleep():
    assert decide(body(text("SLEEP:2.5 busy"))).delay == 2.5


# ---------------------------------------------------------------------------------------------- HTTP


def test_stream_event_order_and_log(tmp_path):
    log = tmp_path / "mock.jsonl"
    with MockAPI(log_path=log) as api:
        assert api.url.startswith("http://127.0.0.1:")
        status, headers, raw = post(api, body(text("TOOL:Bash:echo hi")))
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        assert headers.get("Transfer-Encoding") == "chunked"
        ev = sse_events(raw)
        assert [e for e, _ in ev] == [
            "message_start", "ping",
            "content_block_start", "content_block_delta", "content_block_stop",
            "content_block_start", "content_block_delta", "content_block_stop",
            "message_delta", "message_stop",
        ]
        assert ev[3][1]["delta"]["type"] == "text_delta"
        assert ev[6][1]["delta"]["type"] == "input_json_delta"
        assert json.loads(ev[6][1]["delta"]["partial_json"])["command"] == "echo hi"
        assert ev[8][1]["delta"]["stop_reason"] == "tool_use"
        assert api.messages()[0]["reply"]["kind"] == "tool_use"
    entry = json.loads(log.read_text().splitlines()[0])
    assert entry["headers"]["Authorization"].endswith("chars)") and "secret" not in entry["headers"]["Authorization"]
    assert entry["last_user_text"] == "TOOL:Bash:echo hi"


def test_non_streaming_and_other_routes():
    with MockAPI() as api:
        status, _, raw = post(api, body(text("hi"), stream=False))
        msg = json.loads(raw)
        assert status == 200 and msg["content"] == [{"type": "text", "text": "ECHO: hi"}] and msg["stop_reason"] == "end_turn"
        status, _, raw = post(api, {"messages": [{"role": "user", "content": "abc"}]}, "/v1/messages/count_tokens")
        assert status == 200 and json.loads(raw)["input_tokens"] >= 1
        status, _, raw = post(api, None, "/v1/models", "GET")
        assert status == 200 and json.loads(raw)["data"][0]["id"]
        assert post(api, None, "/v1/models/claude-x", "GET")[0] == 200
        assert post(api, None, "/api/hello", "HEAD")[0] == 200
        status, _, raw = post(api, None, "/nope", "GET")
        assert status == 404 and json.loads(raw)["type"] == "error"


def test_sleep_delays_and_abort_is_logged():
    with MockAPI() as api:
        t = time.monotonic()
        post(api, body(text("SLEEP:1 slow")))
        assert time.monotonic() - t >= 1.0
        c = http.client.HTTPConnection("127.0.0.1", api.port, timeout=5)
        c.request("POST", "/v1/messages", body=json.dumps(body(text("SLEEP:5 abort me"))))
        r = c.getresponse()
        r.read1(64)  # message_start has been sent
        c.close()  # the client goes away, like Esc in the TUI
        entry = api.wait_for(lambda e: e.get("aborted"), timeout=5)
        assert entry["last_user_text"] == "SLEEP:5 abort me"


def test_command_line(tmp_path):
    pf, log = tmp_path / "port", tmp_path / "log.jsonl"
    p = subprocess.Popen([sys.executable, str(HERE / "mockapi.py"), "--port", "0", "--port-file", str(pf), "--log", str(log)],
                         stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("PORT ")
        port = int(line.split()[1])
        assert int(pf.read_text()) == port
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("HEAD", "/")
        assert c.getresponse().status == 200
        c.close()
    finally:
        p.terminate()
        assert p.wait(timeout=10) == 0
    assert json.loads(log.read_text().splitlines()[0])["method"] == "HEAD"


# ---------------------------------------------------------------------------------------------- offline env


def test_offline_env(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    env = offline_env("http://127.0.0.1:1234/", root=tmp_path / "w", trusted=[proj], sandbox=True,
                      extra={"CSD_WORKER": "w1"})
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:1234"
    assert env["ANTHROPIC_AUTH_TOKEN"] and "ANTHROPIC_API_KEY" not in env
    assert all(env[k] == v for k, v in NO_TRAFFIC_VARS.items()) and len(NO_TRAFFIC_VARS) == 5
    assert env["IS_SANDBOX"] == "1" and env["CSD_WORKER"] == "w1"
    assert env["TERM"] == "xterm-256color" and env["LANG"] == "C.UTF-8"
    assert os.stat(env["CLAUDE_CODE_TMPDIR"]).st_mode & 0o777 == 0o700
    cfg = json.loads((Path(env["HOME"]) / ".claude.json").read_text())
    assert cfg["hasCompletedOnboarding"] is True
    assert cfg["projects"][str(proj.resolve())]["hasTrustDialogAccepted"] is True
    assert "IS_SANDBOX" not in offline_env("http://x", root=tmp_path / "w2", sandbox=False)


def test_error_directive_answers_with_the_api_error_body_and_can_clear_after_n():
    r = decide(body(REMINDER, text("ERROR:429 slow down")))
    assert (r.kind, r.status, r.times, r.error_body()["error"]["type"]) == ("error", 429, None, "rate_limit_error")
    with MockAPI() as api:
        status, headers, raw = post(api, body(text("ERROR:429 now")))
        assert (status, headers.get("retry-after"), json.loads(raw)["error"]["type"]) == (429, "0", "rate_limit_error")
        for _ in range(2):  # x2: the first two requests of that prompt fail, the third is answered
            assert post(api, body(text("ERROR:500x2 flaky")))[0] == 500
        status, _, raw = post(api, body(text("ERROR:500x2 flaky"), stream=False))
        assert status == 200 and json.loads(raw)["content"][0]["text"] == "ECHO: ERROR:500x2 flaky"
        assert [r["status"] for r in api.messages()] == [429, 500, 500, 200]
