"""The environment hand-over (csd/envfile.py) against the real Claude Code: the worker gets the controller's
credentials and uses them, while no process's arguments ever show them (``ps -eo args`` is world-readable).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path


def ps_args() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def test_the_real_claude_gets_its_token_and_no_process_argument_shows_it(real) -> None:
    secret = f"tok-private-{uuid.uuid4().hex}"
    env = {**real.env, "ANTHROPIC_AUTH_TOKEN": secret}
    launcher = subprocess.Popen([sys.executable, "-m", "csd", "launch", "k", str(real.proj)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = 0
    while launcher.poll() is None:  # the whole launch: tmux client, the server it starts, the pane's processes
        assert secret not in ps_args()
        samples += 1
    out, err = launcher.communicate()
    real.started("k", subprocess.CompletedProcess(launcher.args, launcher.returncode, out, err))
    assert samples > 0 and secret not in ps_args()
    assert list(real.workers.glob("*.env")) == []  # the 0600 hand-over file was taken

    # Claude Code itself runs with it (the pane's process is claude: the hand-over execs it)...
    pid = real.pane_pid("k")
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"claude.exe")
    assert f"ANTHROPIC_AUTH_TOKEN={secret}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    # ...and uses it: the mock saw it as the bearer token (logged masked: its first 10 characters and length)
    start = len(real.api.requests)
    conv = real.shim("k", "converse", "hello with a private token", "60")
    assert (conv.returncode, conv.stdout) == (0, "ECHO: hello with a private token\n"), conv.stderr
    req = real.api.wait_for(lambda r: r.get("last_user_text") == "hello with a private token", start=start)
    auth = next(v for k, v in req["headers"].items() if k.lower() == "authorization")
    assert auth == f"Bearer tok...({len('Bearer ' + secret)} chars)"
    assert secret not in ps_args()
    # nor does the tmux server keep it for later sessions (the user's own shells on that server)
    assert secret not in real.tmux("show-environment", "-g").stdout
