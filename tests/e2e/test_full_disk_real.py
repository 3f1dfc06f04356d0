"""The real Claude Code with a hook that cannot write (a full disk): the hook exits 1, Claude Code goes on.

csd's hook exits 1 (never 2, which would block the prompt or the stop) when it cannot append a line whole.
This checks what Claude Code 2.1.330 makes of that, against the mock Messages API: the prompt is not
blocked, the turn runs to its end, the worker takes the next prompt once space is back, and the line cut
short by the full disk stays a bad line of its own.
"""

from __future__ import annotations

import json
import time

from support import fill, tmpfs  # tests/support.py


def test_a_hook_that_cannot_write_blocks_nothing(real) -> None:
    with tmpfs(real.workers, "size=512k,mode=0700") as workers:
        real.launch("fd")
        try:
            before = real.shim("fd", "converse", "before the disk fills", "60")
            assert (before.returncode, before.stdout) == (0, "ECHO: before the disk fills\n"), before.stderr
            events_file = workers / f"{real.shim('fd', 'session-id').stdout.strip()}.events.jsonl"
            filler = fill(workers, events_file, room=100)

            refused = real.shim("fd", "send", "hello blind")
            assert refused.returncode == 1 and "events file could not be written" in refused.stderr, refused.stderr

            # typed by hand, as a person in a handoff would: every hook of this turn fails
            real.tmux("send-keys", "-t", "=fd:", "-l", "hello blind")
            real.tmux("send-keys", "-t", "=fd:", "Enter")
            # no event can say when the turn is over (that is the point): read the transcript until it does
            deadline = time.monotonic() + 60
            while "ECHO: hello blind" not in (turn := real.shim("fd", "read-turn").stdout):
                assert time.monotonic() < deadline, turn
                time.sleep(0.2)
            # Claude Code 2.1.330 shows the failure under the prompt, with the hook's stderr, and goes on; the
            # Stop hook runs after the reply reaches the transcript, so its line is drawn a moment later
            deadline = time.monotonic() + 30
            while not ("UserPromptSubmit hook failed" in (screen := real.tmux("capture-pane", "-p", "-t", "=fd:").stdout)
                       and "Stop hook failed" in screen):
                assert time.monotonic() < deadline, screen
                time.sleep(0.2)
            assert "csd hook: could not record user_prompt_submit in " in screen
            assert not events_file.read_bytes().endswith(b"\n")  # the user_prompt_submit, cut short

            filler.unlink()
            after = real.shim("fd", "converse", "after the disk has room", "60")
            assert (after.returncode, after.stdout) == (0, "ECHO: after the disk has room\n"), after.stderr
            read = real.shim("fd", "read-events")
            names = [json.loads(line)["event"] for line in read.stdout.splitlines()]
            assert names[-2:] == ["user_prompt_submit", "stop"]
            assert read.stderr.count("skipping line") == 1 and "not JSON" in read.stderr, read.stderr
        finally:
            real.shim("fd", "stop")
