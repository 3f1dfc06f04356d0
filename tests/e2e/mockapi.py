"""A standard-library mock of the Anthropic Messages API for csd's end-to-end tests.

The real Claude Code CLI is pointed at it with ``ANTHROPIC_BASE_URL=http://127.0.0.1:<port>`` (see
``offline.py``).  It binds 127.0.0.1 only.

Command line::

    python tests/e2e/mockapi.py --port 0 --port-file F --log L      # prints "PORT n", runs until SIGTERM/SIGINT

In process::

    with MockAPI(log_path=...) as api:
        env["ANTHROPIC_BASE_URL"] = api.url
        ...
        api.requests              # list of logged requests (dicts), newest last
        api.wait_for(lambda r: r["reply"]["kind"] == "done", timeout=10)

Endpoints: ``POST /v1/messages`` (SSE when ``stream`` is true, one JSON message otherwise),
``POST /v1/messages/count_tokens``, ``GET /v1/models[/<id>]``, ``HEAD *`` -> 200, anything else -> 404 JSON.
Query strings (the CLI sends ``?beta=true``) are ignored for routing.

Scripting, by the last ``role: "user"`` message (searched backwards: the CLI appends a ``role: "system"``
message after it; ``<system-reminder>`` text blocks are skipped):

==============================================  =====================================================
last user message                               reply
==============================================  =====================================================
carries a ``tool_result`` block                 text ``DONE: <first 200 chars of the result>`` (unless the
                                                message is a new prompt after an Esc-interrupted tool
                                                call: then the prompt is scripted as below)
contains ``TOOL:Bash:<cmd>`` (cmd = rest of     text ``Calling Bash.`` + tool_use Bash
the text) and the request offers Bash           ``{"command": cmd, "description": "mock tool call"}``
contains ``TOOL:<Name>:<json object>`` and the  text ``Calling <Name>.`` + tool_use <Name> with that input
request offers <Name>                           (``Agent`` runs in the background by default)
anything else                                   text ``ECHO: <prompt>``
==============================================  =====================================================

``ERROR:<status>`` anywhere in the text makes every request for that prompt fail with that HTTP status and the
Messages API's error body for it (``ERROR_TYPES``: 400 invalid_request_error, 401 authentication_error, 429
rate_limit_error with ``retry-after: 0``, 500 api_error, 529 overloaded_error); ``ERROR:<status>x<n>`` fails only
the first ``n`` requests for that prompt (Claude Code's retries), then answers as usual. Log kind ``error``.

``SLEEP:<seconds>`` anywhere in the text delays the reply (combined with the above).  While delaying, a
streaming reply has already sent ``message_start`` and ``ping`` and keeps sending ``ping`` every 0.5 s, so an
aborted request (Esc in the TUI) is noticed and logged as ``"aborted": true``.

Safety rules so background work always finishes:

* A sub-agent's request (system prompt carries ``cc_is_subagent=true``) never gets an ``Agent`` tool_use:
  ``TOOL:Agent:`` there is answered with ECHO, so an agent cannot spawn agents forever.
* A ``<task-notification>`` message (the synthetic prompt after a background agent finishes; 2.1.330 sends it
  wrapped in a ``<system-reminder>`` block) is never parsed for directives; it is answered with
  ``ECHO: task-notification: <its summary>`` (log kind ``task_notification``).
* A ``/compact`` summarisation request (its last user text contains ``CRITICAL: Respond with TEXT ONLY``) is
  answered with a fixed ``<summary>…</summary>`` text (log kind ``compact``), never with a tool_use.
* The prompt text is the message's last text block that is not a ``<system-reminder>``, a local-command record
  (``<local-command-caveat>``, ``<command-name>``, ``<local-command-stdout>`` …), the Esc marker
  ``[Request interrupted by user…`` or the post-/compact summary: the CLI packs those into the same message as
  the next prompt.  Prompts queued while busy arrive joined in one block (separated by a blank line).  ECHO is capped at
  ``ECHO_LIMIT`` characters.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["MockAPI", "Reply", "decide", "last_user_message", "user_text"]

HOST = "127.0.0.1"
DEFAULT_MODEL = "claude-opus-5-5"
ECHO_LIMIT = 4000
DONE_LIMIT = 200
MAX_SLEEP = 600.0
SECRET_HEADERS = {"x-api-key", "authorization", "proxy-authorization", "cookie"}

_TOOL_BASH = re.compile(r"TOOL:Bash:(.*)", re.S)
_TOOL_ANY = re.compile(r"TOOL:([A-Za-z_][A-Za-z0-9_]*):")
_SLEEP = re.compile(r"SLEEP:(\d+(?:\.\d+)?)")
_SUMMARY = re.compile(r"<summary>(.*?)</summary>", re.S)
_ERROR = re.compile(r"ERROR:(\d{3})(?:x(\d+))?")
#: HTTP status -> the Messages API's error type for it (the body is {"type": "error", "error": {type, message}}).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               529: "overloaded_error"}


# --------------------------------------------------------------------------------------------------------------
# Scripting


class Reply:
    """What the mock answers: a list of content blocks plus stop_reason, after an optional delay."""

    def __init__(self, kind: str, blocks: list[dict], stop_reason: str = "end_turn", delay: float = 0.0,
                 status: int = 200, times: int | None = None):
        self.kind = kind
        self.blocks = blocks
        self.stop_reason = stop_reason
        self.delay = delay
        self.status = status  # not 200: an error reply (kind "error"), no blocks
        self.times = times  # an error reply: for this many requests of the prompt only (None: every one)

    @classmethod
    def error(cls, status: int, times: int | None = None) -> "Reply":
        return cls("error", [], "", 0.0, status, times)

    def error_body(self) -> dict:
        kind = ERROR_TYPES.get(self.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"mock: {kind} ({self.status}) on request"}}

    @classmethod
    def text(cls, kind: str, text: str, delay: float = 0.0) -> "Reply":
        return cls(kind, [{"type": "text", "text": text}], "end_turn", delay)

    def summary(self) -> dict:
        out: dict[str, Any] = {"kind": self.kind, "stop_reason": self.stop_reason}
        if self.status != 200:
            out["status"] = self.status
        if self.delay:
            out["delay"] = self.delay
        for b in self.blocks:
            if b["type"] == "text":
                out.setdefault("text", b["text"][:300])
            elif b["type"] == "tool_use":
                out["tool"] = b["name"]
                out["tool_input"] = b["input"]
        return out


def last_user_message(body: dict) -> dict | None:
    """The last message with role "user" (the CLI puts a role "system" message after it)."""
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return m
    return None


def _blocks(msg: dict | None) -> list[dict]:
    if not msg:
        return []
    c = msg.get("content")
    if isinstance(c, str):
        return [{"type": "text", "text": c}]
    return [b for b in (c or []) if isinstance(b, dict)]


# After Esc during a tool call the next prompt shares a message with the rejected tool_result and this marker.
INTERRUPTED_MARKER = "[Request interrupted by user"
# Text blocks the CLI adds to a user message that are not the person's prompt: reminders, and the record of a
# local slash command (/compact ...) that gets merged into the next prompt's message.
_META_PREFIXES = ("<system-reminder>", "<local-command-caveat>", "<command-name>", "<command-message>",
                  "<command-args>", "<local-command-stdout>", "<local-command-stderr>", INTERRUPTED_MARKER,
                  "This session is being continued from a previous conversation")
COMPACT_MARKER = "CRITICAL: Respond with TEXT ONLY"


def user_text(msg: dict | None) -> str:
    """The prompt of a user message: its last text block that is not a ``<system-reminder>``, a local-command
    record, an interruption marker or a compaction summary (the CLI can pack all of those, and after /compact
    the whole earlier conversation, into the same message as the prompt)."""
    for b in reversed(_blocks(msg)):
        if b.get("type") != "text":
            continue
        t = (b.get("text") or "").strip()
        if t and not t.startswith(_META_PREFIXES):
            return t
    return ""


def _tool_result_text(block: dict) -> str:
    c = block.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return "\n".join(str(x.get("text", "")) for x in c if isinstance(x, dict) and x.get("type") == "text")
    return "" if c is None else str(c)


def _system_text(body: dict) -> str:
    s = body.get("system")
    if isinstance(s, str):
        return s
    if isinstance(s, list):
        return "\n".join(str(b.get("text", "")) for b in s if isinstance(b, dict))
    return ""


def is_subagent(body: dict) -> bool:
    return "cc_is_subagent=true" in _system_text(body)


def _tool_names(body: dict) -> set[str]:
    return {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}


def decide(body: dict, ids: Callable[[], str] | None = None) -> Reply:
    """Pick the reply for a /v1/messages request body (pure function apart from ``ids``)."""
    ids = ids or (lambda: "toolu_mock000000")
    msg = last_user_message(body)
    blocks = _blocks(msg)
    text = user_text(msg)
    if COMPACT_MARKER in text:
        # /compact's summariser (its instruction can share a message with the last tool_result)
        return Reply.text("compact", "<summary>Mock summary: the conversation so far was a csd e2e test.</summary>")
    results = [b for b in blocks if b.get("type") == "tool_result"]
    interrupted = any(str(b.get("text") or "").startswith(INTERRUPTED_MARKER) for b in blocks if b.get("type") == "text")
    if results and not (interrupted and text):
        return Reply.text("done", "DONE: " + _tool_result_text(results[0])[:DONE_LIMIT])

    if not text:
        # A background agent's completion arrives as a user message whose only text block is a
        # <system-reminder> wrapping <task-notification>...; never parse it for directives.
        raw = "\n".join(str(b.get("text") or "") for b in blocks if b.get("type") == "text")
        if "<task-notification>" in raw:
            m = _SUMMARY.search(raw)
            return Reply.text("task_notification", "ECHO: task-notification: " + (m.group(1) if m else "?"))
    delay = 0.0
    m = _SLEEP.search(text)
    if m:
        delay = min(float(m.group(1)), MAX_SLEEP)

    directives = not text.startswith("<task-notification>")
    tools = _tool_names(body)
    m = _ERROR.search(text) if directives else None
    if m and not is_subagent(body):
        return Reply.error(int(m.group(1)), int(m.group(2)) if m.group(2) else None)
    if directives:
        m = _TOOL_BASH.search(text)
        if m and "Bash" in tools:
            cmd = m.group(1).strip()
            return _tool_reply("Bash", {"command": cmd, "description": "mock tool call"}, ids(), delay)
        for m in _TOOL_ANY.finditer(text):
            name = m.group(1)
            if name == "Bash" or name not in tools:
                continue
            if name == "Agent" and is_subagent(body):
                continue
            try:
                value, _ = json.JSONDecoder().raw_decode(text, m.end())
            except ValueError:
                continue
            if isinstance(value, dict):
                return _tool_reply(name, value, ids(), delay)

    echo = text if len(text) <= ECHO_LIMIT else text[:ECHO_LIMIT] + "…"
    return Reply.text("echo", "ECHO: " + echo, delay)


def _tool_reply(name: str, tool_input: dict, tool_id: str, delay: float) -> Reply:
    return Reply(
        "tool_use",
        [
            {"type": "text", "text": f"Calling {name}."},
            {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input},
        ],
        "tool_use",
        delay,
    )


# --------------------------------------------------------------------------------------------------------------
# HTTP


def _mask(headers) -> dict:
    out = {}
    for k, v in headers.items():
        if k.lower() in SECRET_HEADERS:
            v = f"{v[:10]}...({len(v)} chars)"
        out[k] = v
    return out


def _rough_tokens(obj: Any) -> int:
    return max(1, len(json.dumps(obj, ensure_ascii=False)) // 4)


class _Aborted(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, fmt, *args):  # keep stderr quiet; everything goes to the request log
        pass

    # ---- helpers
    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _read_body(self) -> tuple[bytes, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return raw, None
        try:
            return raw, json.loads(raw)
        except ValueError:
            return raw, raw.decode("utf-8", "replace")

    def _send_json(self, code: int, obj: Any, head_only: bool = False, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_mock%06d" % next(self.server.counter))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only:
            self.wfile.write(data)

    def _not_found(self) -> None:
        self._send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": f"mock: no route {self.command} {self.path}"}})

    # ---- verbs
    def do_HEAD(self):
        entry = self.server.api._log(self, None)
        entry["status"] = 200
        self._send_json(200, {}, head_only=True)

    def do_GET(self):
        entry = self.server.api._log(self, None)
        p = self._path()
        if p == "/v1/models":
            entry["status"] = 200
            return self._send_json(200, {"data": [_model(m) for m in self.server.api.models], "has_more": False,
                                         "first_id": self.server.api.models[0], "last_id": self.server.api.models[-1]})
        if p.startswith("/v1/models/"):
            entry["status"] = 200
            return self._send_json(200, _model(p.rsplit("/", 1)[1]))
        entry["status"] = 404
        self._not_found()

    def do_DELETE(self):
        self._read_body()
        self.server.api._log(self, None)["status"] = 404
        self._not_found()

    do_PUT = do_PATCH = do_DELETE

    def do_POST(self):
        _, body = self._read_body()
        entry = self.server.api._log(self, body)
        p = self._path()
        if p == "/v1/messages/count_tokens":
            entry["status"] = 200
            return self._send_json(200, {"input_tokens": _rough_tokens(body)})
        if p != "/v1/messages":
            entry["status"] = 404
            return self._not_found()
        if not isinstance(body, dict):
            entry["status"] = 400
            return self._send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "mock: body is not a JSON object"}})
        api = self.server.api
        reply = api.decide(body)
        entry["reply"] = reply.summary()
        entry["status"] = reply.status
        if reply.status != 200:
            extra = {"retry-after": "0"} if reply.status == 429 else {}
            self._send_json(reply.status, reply.error_body(), headers=extra)
            entry["t_end"] = time.time()
            api._flush(entry)
            return
        model = body.get("model") or DEFAULT_MODEL
        msg_id = "msg_mock%06d" % next(self.server.counter)
        usage_in = _rough_tokens(body.get("messages"))
        try:
            if body.get("stream"):
                self._stream(reply, model, msg_id, usage_in)
            else:
                self._sleep(reply.delay, None)
                self._send_json(200, {
                    "id": msg_id, "type": "message", "role": "assistant", "model": model,
                    "content": reply.blocks, "stop_reason": reply.stop_reason, "stop_sequence": None,
                    "usage": {"input_tokens": usage_in, "output_tokens": _rough_tokens(reply.blocks)},
                })
        except (_Aborted, BrokenPipeError, ConnectionResetError):
            entry["aborted"] = True
            self.close_connection = True
        entry["t_end"] = time.time()
        api._flush(entry)

    # ---- SSE
    def _event(self, name: str, data: dict) -> None:
        chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.flush()

    def _sleep(self, delay: float, ping: Callable[[], None] | None) -> None:
        end = time.monotonic() + delay
        while not self.server.api._stopping.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.5, left))
            if ping is not None:
                try:
                    ping()
                except (BrokenPipeError, ConnectionResetError) as e:
                    raise _Aborted() from e

    def _stream(self, reply: Reply, model: str, msg_id: str, usage_in: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("request-id", "req_" + msg_id)
        self.end_headers()
        self._event("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 1}}})
        self._event("ping", {"type": "ping"})
        if reply.delay:
            self._sleep(reply.delay, lambda: self._event("ping", {"type": "ping"}))
        for i, b in enumerate(reply.blocks):
            if b["type"] == "text":
                self._event("content_block_start", {"type": "content_block_start", "index": i,
                                                    "content_block": {"type": "text", "text": ""}})
                self._event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                    "delta": {"type": "text_delta", "text": b["text"]}})
            else:
                self._event("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}})
                self._event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(b["input"])}})
            self._event("content_block_stop", {"type": "content_block_stop", "index": i})
        self._event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                                      "usage": {"output_tokens": _rough_tokens(reply.blocks)}})
        self._event("message_stop", {"type": "message_stop"})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _model(mid: str) -> dict:
    return {"type": "model", "id": mid, "display_name": mid, "created_at": "2026-01-01T00:00:00Z"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: "MockAPI"
    counter: itertools.count


class MockAPI:
    """The mock server, usable as a context manager (serves from a background thread)."""

    def __init__(self, port: int = 0, log_path: str | os.PathLike | None = None,
                 script: Callable[[dict], Reply | None] | None = None,
                 models: list[str] | None = None, log_bodies: bool = True):
        """``script(body)`` may return a Reply to override the default scripting (None: use the default)."""
        self.port = port
        self.log_path = os.fspath(log_path) if log_path else None
        self.script = script
        self.models = models or [DEFAULT_MODEL]
        self.log_bodies = log_bodies
        self.requests: list[dict] = []
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._errors_sent: dict[str, int] = {}  # prompt -> error replies sent for an ERROR:<status>x<n> directive
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def bind(self) -> "_Server":
        """Create the listening socket (so .port/.url are known) without serving yet."""
        if self._httpd is None:
            httpd = _Server((HOST, self.port), _Handler)
            httpd.api = self
            httpd.counter = itertools.count(1)
            self._httpd = httpd
            self.port = httpd.server_address[1]
        return self._httpd

    def start(self) -> "MockAPI":
        """Serve from a daemon thread."""
        httpd = self.bind()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"mockapi-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            if self._thread is not None:
                self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until stop() (from another thread or a signal handler)."""
        httpd = self.bind()
        try:
            httpd.serve_forever(poll_interval=0.1)
        finally:
            httpd.server_close()

    def __enter__(self) -> "MockAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # ---- scripting / log
    def decide(self, body: dict) -> Reply:
        if self.script is not None:
            r = self.script(body)
            if r is not None:
                return r
        reply = decide(body, ids=lambda: "toolu_mock%06d" % next(self._ids))
        if reply.status != 200 and reply.times is not None:
            key = user_text(last_user_message(body))
            with self._lock:
                sent = self._errors_sent.get(key, 0)
                self._errors_sent[key] = sent + 1
            if sent >= reply.times:
                # the prompt's errors are used up: answer it as if there were no ERROR directive
                return Reply.text("echo", "ECHO: " + key[:ECHO_LIMIT])
        return reply

    def _log(self, handler: _Handler, body: Any) -> dict:
        entry: dict[str, Any] = {"t": time.time(), "method": handler.command, "path": handler.path,
                                 "headers": _mask(handler.headers)}
        if isinstance(body, dict) and handler._path() == "/v1/messages":
            msg = last_user_message(body)
            entry["last_user_text"] = user_text(msg)[:1000]
            entry["last_user_block_types"] = [b.get("type") for b in _blocks(msg)]
            entry["subagent"] = is_subagent(body)
            entry["tools"] = sorted(n for n in _tool_names(body) if n)
        if self.log_bodies:
            entry["body"] = body
        with self._lock:
            self.requests.append(entry)
            self._lock.notify_all()
        if handler.command != "POST" or handler._path() != "/v1/messages":
            self._flush(entry)
        return entry

    def _flush(self, entry: dict) -> None:
        with self._lock:
            self._lock.notify_all()
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    def messages(self) -> list[dict]:
        """The logged POST /v1/messages requests."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST" and r["path"].split("?")[0] == "/v1/messages"]

    def wait_for(self, pred: Callable[[dict], bool], timeout: float = 10.0, start: int = 0) -> dict:
        """Block until a logged request (index >= start) satisfies pred; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for r in self.requests[start:]:
                    try:
                        if pred(r):
                            return r
                    except (KeyError, TypeError):
                        pass
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching request within {timeout}s ({len(self.requests)} logged)")
                self._lock.wait(left)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    ap.add_argument("--port-file", help="write the chosen port here (atomically)")
    ap.add_argument("--log", help="append one JSON line per request here")
    ap.add_argument("--no-bodies", action="store_true", help="leave request bodies out of the log")
    args = ap.parse_args(argv)

    api = MockAPI(port=args.port, log_path=args.log, log_bodies=not args.no_bodies)
    httpd = api.bind()  # bind first so the port is known before announcing it

    def _term(signum, frame):
        api._stopping.set()
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{api.port}\n")
        os.replace(tmp, args.port_file)
    print(f"PORT {api.port}", flush=True)
    api.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
