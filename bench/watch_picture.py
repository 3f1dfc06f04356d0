"""Render docs/watch.svg: the live table of a real run (simulated workers in a private tmux server), with a
worker whose turn failed on top. Run: ``python bench/watch_picture.py [OUT.svg]``; it leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from io import StringIO
from pathlib import Path

from rich.console import Console

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "watch.svg"


async def run(out: Path) -> None:
    from csd.render import WorkerRow, render_table, watch
    from csd.supervisor import Supervisor

    rows_seen: list[list[WorkerRow]] = []
    seen = asyncio.Event()

    def on_redraw(rows: list[WorkerRow]) -> None:
        rows_seen.append(rows)
        by = {r.name: r for r in rows}
        if (len(rows) == 4 and by["docs"].attention and by["tests"].state == "working"
                and all(by[n].cost_usd for n in ("api", "web"))):
            seen.set()

    task = asyncio.create_task(watch("", Console(file=StringIO(), force_terminal=True, width=200), on_redraw=on_redraw))
    async with Supervisor() as sup:
        for name in ("api", "docs", "tests", "web"):
            await sup.launch(name, os.environ["CSD_PICTURE_DIR"])
        await sup.converse("api", "TOOL:Bash:echo ran the tests\nREPLY:all 212 tests pass")
        await sup.converse("web", "REPLY:the page renders")
        await sup.converse("web", "REPLY:and the form validates")
        await sup.send("docs", "FAIL:rate_limit")
        await sup.wait_for_turn("docs")
        await sup.send("tests", "TOOL:Bash:sleep 60\nREPLY:done")
        async with asyncio.timeout(30):
            await seen.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        console = Console(record=True, width=170, file=StringIO(), force_terminal=True)
        console.print(render_table(rows_seen[-1], "12:00:00"))
        console.save_svg(str(out), title="csd watch")  # the workers end with the tmux server (main)


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="csd-pic-"))
    home, proj = root / "home", root / "src"
    (home / ".claude").mkdir(parents=True)
    proj.mkdir()
    from csd.workers import CONSENT_FILE

    (home / CONSENT_FILE).write_text("granted\n")
    socket = str(root / "s")
    os.environ.update(HOME=str(home), CSD_WORKERS_DIR=str(root / "workers"), CSD_TMUX_SOCKET=socket,
                      CSD_CLAUDE_BIN=str(Path(sys.executable).with_name("csd-simworker")), IS_SANDBOX="1",
                      CSD_SIM_IDLE_SECONDS="3600", CLAUDE_CODE_TMPDIR=str(root / "cctmp"), CSD_PICTURE_DIR=str(proj))
    try:
        asyncio.run(run(out))
    finally:
        subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
