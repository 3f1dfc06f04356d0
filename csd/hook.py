"""The hook Claude Code runs on each lifecycle event: it appends one capped JSON line to the worker's events file.

Standard library only and no csd imports, so it starts fast (run as ``python -I -S hook.py``).
It never hangs on an unclosed stdin, and writes each line with a single ``write`` on an ``O_APPEND``
descriptor so concurrent hooks (parallel tool calls) never interleave.

Exit status: 0, whatever the payload or the session, except when a line for a managed worker could not
be written (a full disk): then it says so on stderr and exits 1, which Claude Code reports as a hook
error and otherwise ignores (never 2: that would block the prompt, the tool call or the stop). The
event is lost then; csd sees the full disk itself (``workers.events_unwritable``). A write cut short
leaves a partial line: the next hook starts its line with a newline, so the partial line stays a bad
line of its own and never swallows the next event.

Which file: a worker csd launched carries ``CSD_EVENTS_FILE`` in its environment (it survives
``/clear``, which gives the session a new id); that file must already exist (launch creates it,
stop removes it), so a late hook never resurrects a stopped worker's file. Otherwise a session is
managed when ``<workers dir>/<session_id>.meta`` exists (the bash v3 rule). Anything else is ignored.
Either way nothing is written into a dir csd would refuse to read (``dir_refusal``: another user's, or
one others may write to), nor into anything but a regular file (a planted FIFO must not block the hook).

``hook.py --statusline`` is csd's statusLine command (launch's settings). Claude Code runs it with the
session's JSON at start-up, ~0.3 s after each Stop/StopFailure, after ``/clear`` and ``/compact``: it keeps
the worker's cost file (``<first session id>.cost.json`` beside the events file, replaced atomically) and
prints nothing (the TUI shows no status line). The file holds, per session id, the largest
``cost.total_cost_usd`` seen (``/clear`` starts a new session at 0, ``--resume`` continues one, so the
worker's cost is the sum of the per-session maxima) and the tokens of that session's transcript: the
``message.usage`` of its assistant lines, each API message once (Claude Code repeats a message's usage on
each of its content-block lines), read on from the offset where the previous run stopped, at most
``COST_READ_LIMIT`` bytes per run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import sys
import time

try:  # json's C halves: `import json` also loads re, enum and collections, which doubles the hook's start-up (bench/)
    import _json
except ImportError:  # not CPython
    _json = None  # type: ignore[assignment]

STDIN_LIMIT = 16 << 20  # bytes; a payload bigger than this is not a hook payload
STDIN_SECONDS = 2.0  # total time allowed to read stdin
CAP = 2000  # longest string kept in an events line
ID_CAP = 4096  # the identifying fields (session_id, cwd, transcript_path, prompt_id): a path's length
LINE_LIMIT = 64 << 10  # longest events line; beyond it the big fields are summarised
DEFAULT_WORKERS_DIR = "/tmp/claude-workers"

# Claude Code hook name -> csd event name (snake_case). The first five are the bash v3 vocabulary.
HOOK_TO_EVENT = {
    "SessionStart": "session_start",
    "UserPromptSubmit": "user_prompt_submit",
    "PreToolUse": "pre_tool_use",
    "PostToolUse": "post_tool_use",
    "Notification": "notification",
    "Stop": "stop",
    "StopFailure": "stop_failure",
    "SubagentStop": "subagent_stop",
    "PreCompact": "pre_compact",
    "SessionEnd": "session_end",
}
# Fields copied (capped) per event, besides ts/event/session_id/cwd/transcript_path/prompt_id.
FIELDS = {
    "session_start": ("source", "model"),
    "user_prompt_submit": ("prompt",),
    "pre_tool_use": ("tool_use_id",),
    "post_tool_use": ("tool_use_id", "tool_response", "duration_ms"),
    "notification": ("notification_type", "message"),
    "stop": ("last_assistant_message", "stop_hook_active"),
    "stop_failure": ("error", "error_details", "last_assistant_message"),
    "subagent_stop": ("agent_id", "agent_type", "agent_transcript_path", "last_assistant_message"),
    "pre_compact": ("trigger", "custom_instructions"),
    "session_end": ("reason",),
}


class _Decoding:
    """What json.JSONDecoder hands its C scanner (the same defaults: strict, NaN and Infinity accepted)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


_WS = " \t\n\r"


def loads(text: str) -> object:
    """``json.loads(text)`` (ValueError on bad JSON) without importing json."""
    if _json is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _json.make_scanner(_Decoding())(text, start)
    except StopIteration:
        raise ValueError(f"no JSON value at character {start}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data after character {end}")
    return value


def _refuse(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: object, separators: tuple[str, str] = (", ", ": ")) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=separators)`` without importing json."""
    if _json is None:
        import json

        return json.dumps(value, ensure_ascii=False, separators=separators)
    enc = _json.make_encoder({}, _refuse, _json.encode_basestring, None, separators[1], separators[0], False, False, True)
    return "".join(enc(value, 0))


def read_stdin(fd: int = 0, limit: int = STDIN_LIMIT, seconds: float = STDIN_SECONDS) -> bytes:
    """Read until EOF, ``limit`` bytes, ``seconds``, or a complete JSON object — whichever comes first."""
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + seconds
    while size < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            ready, _, _ = select.select([fd], [], [], left)
        except (OSError, ValueError):
            break
        if not ready:
            break
        try:
            chunk = os.read(fd, min(1 << 16, limit - size))
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        # A caller that never closes stdin must not cost us the whole deadline once the object is in.
        if chunk.rstrip().endswith(b"}"):
            data = b"".join(chunks)
            try:
                loads(data.decode("utf-8", "replace"))
                return data
            except (ValueError, RecursionError):
                pass
    return b"".join(chunks)


def cap(value: object, limit: int = CAP, depth: int = 0) -> object:
    """Truncate long strings (saying so) and deep or wide structures, so an events line stays small."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return value[:limit] + f"…[truncated {len(value) - limit} chars]"
    if depth >= 6:
        return "…[truncated nesting]"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k): cap(v, limit, depth + 1) for k, v in items[:50]}
        if len(items) > 50:
            out["…"] = f"[truncated {len(items) - 50} keys]"
        return out
    if isinstance(value, list):
        out_list = [cap(v, limit, depth + 1) for v in value[:50]]
        if len(value) > 50:
            out_list.append(f"…[truncated {len(value) - 50} items]")
        return out_list
    return value


def snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def record(payload: dict, now: float | None = None) -> dict:
    """The events line for one hook payload (v3 fields kept: cwd, tool, tool_input)."""
    now = time.time() if now is None else now
    hook = str(payload.get("hook_event_name") or "")
    name = HOOK_TO_EVENT.get(hook) or snake(hook) or "unknown"
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % int((now % 1) * 1000)
    rec: dict = {"ts": ts, "event": name}
    for key in ("session_id", "cwd", "transcript_path", "prompt_id"):
        if payload.get(key) is not None:
            # capped like the rest: a nested prompt_id would otherwise make a line too deep to parse
            rec[key] = cap(payload[key], ID_CAP)
    if name in ("pre_tool_use", "post_tool_use"):
        rec["tool"] = payload.get("tool_name")
        rec["tool_input"] = cap(payload.get("tool_input"))
    for key in FIELDS.get(name, ()):
        if key in payload:
            rec[key] = cap(payload[key])
    if name not in FIELDS:  # an event this version does not know: keep its small scalar fields
        for key, value in payload.items():
            if key not in rec and key != "hook_event_name" and isinstance(value, (str, int, float, bool)):
                rec[key] = cap(value, 200)
    if name in ("stop", "subagent_stop"):
        tasks = payload.get("background_tasks")
        tasks = tasks if isinstance(tasks, list) else []
        running = [t for t in tasks if isinstance(t, dict) and t.get("status") == "running"]
        rec["bg_running"] = len(running)
        if tasks:
            rec["background_tasks"] = cap(
                [{k: t.get(k) for k in ("id", "status", "description", "agent_type")} for t in tasks if isinstance(t, dict)],
                200,
            )
    return rec


def encode(rec: dict) -> bytes:
    line = dumps(rec, (",", ":")) + "\n"
    data = line.encode("utf-8", "replace")
    if len(data) > LINE_LIMIT:
        for key in ("tool_input", "tool_response", "last_assistant_message", "prompt", "background_tasks"):
            if key in rec:
                rec[key] = cap(dumps(rec[key]), 500)
        data = (dumps(rec, (",", ":")) + "\n").encode("utf-8", "replace")
    return data


def dir_refusal(st: os.stat_result) -> str | None:
    """Pure: why csd refuses a workers dir with this ``lstat``, or None when it is private to us.

    The one rule both sides keep: csd never reads, and the hook never writes, where another user
    could plant, swap or read files (a dir they own, or one they may write to).
    """
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if st.st_uid != os.geteuid():
        return "owner"
    if st.st_mode & 0o022:
        return "mode"
    return None


def _private_dir(path: str) -> bool:
    """The workers dir and, when it has one, its bin/ pass ``dir_refusal`` (what WorkersDir.check reads)."""
    try:
        if dir_refusal(os.lstat(path)) is not None:
            return False
    except OSError:
        return False
    try:
        return dir_refusal(os.lstat(os.path.join(path, "bin"))) is None
    except FileNotFoundError:
        return True
    except OSError:
        return False


def target(payload: dict, environ: dict) -> tuple[str, int] | None:
    """(path, extra open flags) of the events file this event belongs to, or None when unmanaged
    (or when its dir is one csd would refuse to read: then nothing is written)."""
    events_file = environ.get("CSD_EVENTS_FILE")
    if events_file:
        return (events_file, 0) if _private_dir(os.path.dirname(os.path.abspath(events_file))) else None
    sid = payload.get("session_id")
    if not isinstance(sid, str) or not sid or "/" in sid or sid.startswith("."):
        return None
    wdir = environ.get("CSD_WORKERS_DIR") or DEFAULT_WORKERS_DIR
    if not _private_dir(wdir):
        return None
    try:
        meta = os.lstat(os.path.join(wdir, sid + ".meta"))
    except OSError:
        return None
    if not stat.S_ISREG(meta.st_mode) or meta.st_uid != os.geteuid():
        return None
    return os.path.join(wdir, sid + ".events.jsonl"), os.O_CREAT


def append(path: str, data: bytes, extra_flags: int) -> None:
    """One write of one line; OSError when it could not be written whole (e.g. ENOSPC)."""
    # O_NONBLOCK: a FIFO planted as the events file is refused at once instead of blocking the hook
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | extra_flags, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            # a refusal, not a failed write (ValueError, not OSError): said on stderr, exit 0
            raise ValueError(f"{path}: not a regular file; nothing written")
        # Held until close: another hook's write of a long line is seen half-done by fstat (the size grows page
        # by page), and its last byte read then would make this line start with a newline, an empty line.
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # an earlier write was cut short: end its partial line first
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (wrote {written} of {len(data)} bytes)", path)
    finally:
        os.close(fd)


COST_READ_LIMIT = 8 << 20  # transcript bytes read per statusLine run; the rest waits for the next run
TOKEN_KEYS = (("input", "input_tokens"), ("output", "output_tokens"),
              ("cache_read", "cache_read_input_tokens"), ("cache_creation", "cache_creation_input_tokens"))


def cost_path(events_file: str) -> str | None:
    """The cost file of a worker's events file (``<sid>.events.jsonl`` -> ``<sid>.cost.json``)."""
    suffix = ".events.jsonl"
    return events_file[: -len(suffix)] + ".cost.json" if events_file.endswith(suffix) else None


def load_costs(path: str) -> dict:
    """The cost file's ``sessions`` object ({} when there is none or it is not ours to read)."""
    import json  # the statusLine path only (the hook's own path avoids importing json)

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return {}
        # as much as the file holds (it is replaced, never appended to): a 1 MB read buffer per call was most
        # of what reading it cost a watch over many workers
        data = json.loads(os.read(fd, min(st.st_size, 1 << 20)).decode("utf-8", "replace"))
    except (OSError, ValueError):
        return {}
    finally:
        os.close(fd)
    sessions = data.get("sessions") if isinstance(data, dict) else None
    return sessions if isinstance(sessions, dict) else {}


def add_usage(entry: dict, transcript: str, limit: int = COST_READ_LIMIT) -> None:
    """Add the usage of the complete transcript lines after ``entry["offset"]`` to ``entry["tokens"]``."""
    import json  # the statusLine path only (the hook's own path avoids importing json)

    if entry.get("transcript") != transcript:  # a session's transcript does not move; a new path starts over
        entry.update(transcript=transcript, offset=0, last_message=None, tokens=dict.fromkeys((k for k, _ in TOKEN_KEYS), 0))
    try:
        with open(transcript, "rb") as f:
            f.seek(int(entry.get("offset") or 0))
            data = f.read(limit)
    except (OSError, ValueError):
        return
    end = data.rfind(b"\n") + 1
    tokens = entry["tokens"]
    for raw in data[:end].splitlines():
        if b'"usage"' not in raw or b'"assistant"' not in raw:
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        msg = line.get("message") if isinstance(line, dict) and line.get("type") == "assistant" else None
        usage = msg.get("usage") if isinstance(msg, dict) else None
        if not isinstance(usage, dict) or (msg.get("id") is not None and msg.get("id") == entry.get("last_message")):
            continue
        entry["last_message"] = msg.get("id")
        for key, field in TOKEN_KEYS:
            value = usage.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                tokens[key] = int(tokens.get(key) or 0) + value
    entry["offset"] = int(entry.get("offset") or 0) + end


def update_costs(sessions: dict, payload: dict) -> bool:
    """Fold one statusLine payload into ``sessions``; False when it names no session."""
    sid = payload.get("session_id")
    if not isinstance(sid, str) or not sid:
        return False
    entry = sessions.setdefault(sid, {"cost_usd": None})
    cost = payload.get("cost")
    usd = cost.get("total_cost_usd") if isinstance(cost, dict) else None
    if isinstance(usd, (int, float)) and not isinstance(usd, bool) and usd >= 0:
        old = entry.get("cost_usd")
        entry["cost_usd"] = max(float(usd), old) if isinstance(old, (int, float)) else float(usd)
    transcript = payload.get("transcript_path")
    if isinstance(transcript, str) and transcript:
        add_usage(entry, transcript)
    return True


def write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        os.unlink(tmp)
        raise


def statusline(environ: dict) -> None:
    """csd's statusLine command: fold the payload on stdin into the worker's cost file."""
    import json  # the statusLine path only (the hook's own path avoids importing json)

    events_file = environ.get("CSD_EVENTS_FILE") or ""
    path = cost_path(events_file)
    if path is None or not _private_dir(os.path.dirname(os.path.abspath(events_file))):
        return
    try:
        payload = json.loads(read_stdin().decode("utf-8", "replace"))
    except ValueError:
        return
    if not isinstance(payload, dict):
        return
    # The events file exists while the worker does (a late run never resurrects a stopped worker's files);
    # its lock serialises two overlapping runs of the same worker.
    try:
        fd = os.open(events_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # the worker was stopped
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:
            return  # stopped while this run waited for the lock (WorkersDir.remove_files holds it to remove)
        sessions = load_costs(path)
        if update_costs(sessions, payload):
            write_atomic(path, json.dumps({"sessions": sessions}, separators=(",", ":")).encode())
    finally:
        os.close(fd)


def main() -> int:
    if sys.argv[1:] == ["--statusline"]:
        try:
            statusline(dict(os.environ))
        except Exception as exc:  # a status line must never disturb the TUI
            try:
                sys.stderr.write(f"csd statusline: {exc}\n")
            except Exception:
                pass
        return 0
    try:
        environ = dict(os.environ)
        # Without launch's variable and without any meta there is nothing to manage: skip reading stdin.
        if not environ.get("CSD_EVENTS_FILE"):
            wdir = environ.get("CSD_WORKERS_DIR") or DEFAULT_WORKERS_DIR
            try:
                if not any(e.name.endswith(".meta") for e in os.scandir(wdir)):
                    return 0
            except OSError:
                return 0
        raw = read_stdin()
        try:
            payload = loads(raw.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return 0
        if not isinstance(payload, dict) or not isinstance(payload.get("hook_event_name"), str):
            return 0
        where = target(payload, environ)
        if where is None:
            return 0
        rec = record(payload)
        try:
            append(where[0], encode(rec), where[1])
        except FileNotFoundError:
            return 0  # a late hook after stop removed the file: nobody is listening
        except OSError as exc:
            sys.stderr.write(f"csd hook: could not record {rec['event']} in {where[0]}: {exc.strerror or exc}\n")
            return 1
    except Exception as exc:  # the hook must never fail Claude Code's event
        try:
            sys.stderr.write(f"csd hook: {exc}\n")
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
