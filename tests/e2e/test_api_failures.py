"""The real Claude Code when its API calls fail: the mock answers ERROR:<status>[x<n>] (see mockapi.py).

Observed on 2.1.330 (FACTS §7, "Shortening API retries"): a 400 ends the turn at once with StopFailure
``unknown``; a 500 is retried, here only twice because the worker runs with ``CLAUDE_CODE_MAX_RETRIES=2`` (three
requests, about 2 s), then StopFailure ``server_error``. Each request leaves one ``api-request`` transcript line,
which is what ``status --json`` counts as ``attempts``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

RETRIES = {"CLAUDE_CODE_MAX_RETRIES": "2"}


def status_json(real, name: str) -> dict:  # type: ignore[no-untyped-def]
    proc = real.shim(name, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def retrier(real):  # type: ignore[no-untyped-def]
    """A worker whose environment shortens Claude Code's retries (the setting is read at start-up)."""
    return real.started("retrier", real.csd("launch", "retrier", str(real.proj), env={**real.env, **RETRIES}))


def test_a_400_ends_the_turn_at_once_with_exit_4(real) -> None:  # type: ignore[no-untyped-def]
    real.worker("a")
    proc = real.shim("a", "converse", "ERROR:400 please", "60")
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("csd: error: 'a': the turn ended in an API error (unknown: API Error: 400")
    (failure,) = real.events("a", "stop_failure")
    assert failure["error"] == "unknown" and failure["last_assistant_message"].startswith("API Error: 400")
    st = status_json(real, "a")
    assert (st["state"], st["turn_outcome"], st["turn_error"], st["retrying"]) == ("idle", "api_error", "unknown", False)
    # Claude Code sent the request a few times in a fraction of a second (variants of it, no backoff); each is a line
    assert st["attempts"] == len([r for r in real.api.messages() if "ERROR:400 please" in r.get("last_user_text", "")])
    # the worker takes the next prompt normally
    ok = real.shim("a", "converse", "after the error", "60")
    assert (ok.returncode, ok.stdout) == (0, "ECHO: after the error\n"), ok.stderr
    assert status_json(real, "a")["turn_outcome"] == "ok"


def watch_until(watch: subprocess.Popen[str], wanted: str, timeout: float = 30) -> list[str]:
    """The rows ``csd watch`` printed up to the first holding ``wanted`` (bounded: never a hang)."""
    assert watch.stdout is not None
    rows: list[str] = []
    deadline = time.monotonic() + timeout
    while not rows or wanted not in rows[-1]:
        assert select.select([watch.stdout], [], [], max(0.0, deadline - time.monotonic()))[0], f"no {wanted!r} in {rows}"
        line = watch.stdout.readline()
        assert line, f"watch ended; rows {rows}"
        rows.append(line.rstrip("\n"))
    return rows


def test_a_retried_500_shows_retrying_then_ends_with_exit_4(real, retrier) -> None:  # type: ignore[no-untyped-def]
    """While Claude Code retries, status --json says so, and so does a running ``csd watch`` (which follows the
    transcript as it grows); the mock holds the third request until the test has looked, so the retrying state is
    observed without sleeping."""
    prompt = "ERROR:500 retried"
    watch = subprocess.Popen([sys.executable, "-m", "csd", "watch", "retrier"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=real.env)
    try:
        watch_until(watch, "\tretrier\tidle\t")
        _retried_500(real, prompt, watch)
    finally:
        watch.send_signal(signal.SIGINT)
        watch.communicate(timeout=30)


def _retried_500(real, prompt: str, watch: subprocess.Popen[str]) -> None:  # type: ignore[no-untyped-def]
    seen: list[dict] = []
    release = threading.Event()

    def hold_third(body: dict) -> None:
        from mockapi import last_user_message, user_text

        if prompt in user_text(last_user_message(body)):
            seen.append(body)
            if len(seen) == 3:
                release.wait(30)
        return None  # the default scripting answers (with the 500)

    real.api.script = hold_third
    try:
        conv = real.popen_shim("retrier", "converse", prompt, "60")

        def retrying() -> dict | None:
            st = status_json(real, "retrier")
            return st if st["attempts"] == 3 else None

        deadline = time.monotonic() + 30
        while (st := retrying()) is None:
            assert conv.poll() is None and time.monotonic() < deadline, conv.communicate()
        assert (st["state"], st["retrying"], st["turn_outcome"]) == ("working", True, None)  # no turn ended yet
        row = json.loads(real.csd("list", "--json", "retrier").stdout)
        assert (row["retrying"], row["attempts"]) == (True, 3)
        watch_until(watch, "\tretrier\tworking\tAPI retrying: attempt 3")
        release.set()
        out, err = conv.communicate(timeout=60)
    finally:
        release.set()
        real.api.script = None
    assert conv.returncode == 4, err
    assert "the turn ended in an API error (server_error: API Error: 500" in err
    assert "a server-side error, usually transient: resend the prompt" in err
    st = status_json(real, "retrier")
    assert (st["turn_outcome"], st["turn_error"], st["attempts"], st["retrying"]) == ("api_error", "server_error", 3, False)
    assert len(seen) == 3  # CLAUDE_CODE_MAX_RETRIES=2: three requests


def test_a_500_that_clears_on_the_last_retry_is_an_ordinary_turn(real, retrier) -> None:  # type: ignore[no-untyped-def]
    proc = real.shim("retrier", "converse", "ERROR:500x2 flaky", "60")
    assert (proc.returncode, proc.stdout) == (0, "ECHO: ERROR:500x2 flaky\n"), proc.stderr
    st = status_json(real, "retrier")
    assert (st["turn_outcome"], st["turn_error"], st["retrying"], st["attempts"]) == ("ok", None, False, None)


# ---------------------------------------------------------------------------------------------- an older release

OLD = os.environ.get("CSD_E2E_CLAUDE_OLD", "")
LONG = "".join(f"{i:05d} " for i in range(600)).strip()  # 3599 characters: the hook keeps 2000


@pytest.fixture(scope="module")
def old_real(real, mock_api, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A world whose workers run an older Claude Code (``CSD_E2E_CLAUDE_OLD``: e.g. 2.1.112's ``cli.js``,
    installed with ``npm install --prefix DIR @anthropic-ai/claude-code@2.1.112``). Opt-in: only the
    pinned release is installed by .ci."""
    if not OLD or not os.access(OLD, os.X_OK):
        pytest.skip("an older Claude Code: set CSD_E2E_CLAUDE_OLD to its executable (e.g. 2.1.112's cli.js)")
    world = type(real)(tmp_path_factory.mktemp("old"), OLD, mock_api)  # conftest.Real, for the older binary
    try:
        yield world
    finally:
        world.close()


def test_an_older_release_without_prompt_id_gets_whole_replies(old_real) -> None:  # type: ignore[no-untyped-def]
    """2.1.112 has no prompt_id anywhere: a reply the hook truncated is completed from the transcript's
    lines after the send, and --with-turn shows this turn, not an earlier one."""
    from mockapi import Reply, last_user_message, user_text

    old_real.api.script = lambda body: Reply.text("long", LONG) if "LONGREPLY" in user_text(last_user_message(body)) else None
    try:
        old_real.launch("o")
        plain = old_real.shim("o", "converse", "hello old", "60")
        assert (plain.returncode, plain.stdout) == (0, "ECHO: hello old\n"), plain.stderr
        long = old_real.shim("o", "converse", "LONGREPLY please", "60")
        assert (long.returncode, long.stdout, long.stderr) == (0, LONG + "\n", "")
        stop = old_real.events("o", "stop")[-1]
        assert "prompt_id" not in stop and "…[truncated " in stop["last_assistant_message"]
        turn = old_real.shim("o", "converse", "--with-turn", "TOOL:Bash:echo hi", "60")
        assert turn.returncode == 0 and turn.stdout.startswith("**Prompt:** TOOL:Bash:echo hi"), turn.stderr
        assert turn.stdout.rstrip().endswith("DONE: hi")
        failed = old_real.shim("o", "converse", "ERROR:400 old", "60")
        assert failed.returncode == 4 and "(unknown: API Error: 400" in failed.stderr
        # 2.1.112 writes no api-request lines: the attempts are unknown, not 0
        st = status_json(old_real, "o")
        assert (st["turn_outcome"], st["turn_error"], st["attempts"]) == ("api_error", "unknown", None)
    finally:
        old_real.api.script = None
