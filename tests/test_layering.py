"""Imports point one way: the pure core does no I/O-framework imports, and the hook imports no csd at all."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "csd"
FORBIDDEN_IN_PURE = {"asyncio", "subprocess", "rich", "inotify_simple", "csd.supervisor", "csd.tmux", "csd.watch", "csd.cli"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ["events", "states", "transcript", "config", "errors", "prompt", "siminput"])
def test_pure_modules_import_no_io_frameworks(module: str) -> None:
    found = {n for n in imports(PKG / f"{module}.py") if n.split(".")[0] in {"asyncio", "subprocess", "rich", "inotify_simple"} or n in FORBIDDEN_IN_PURE}
    assert found == set()


@pytest.mark.parametrize("module", ["hook", "envfile"])
def test_what_runs_outside_csd_imports_only_the_standard_library(module: str) -> None:
    assert {n.split(".")[0] for n in imports(PKG / f"{module}.py")} <= {"__future__", "_json", "errno", "fcntl", "json", "os", "select", "stat", "sys", "time"}


#: What a read-side command must not import: each costs a command that only reads a file and asks tmux once
#: a large part of its start-up (bench/: status against the bare interpreter). asyncio, rich and inotify are
#: the engine's; transitions the driving supervisor's (states.py folds by the table); dataclasses brings
#: inspect, ast, dis and tokenize (csd/value.py instead); typing; shutil (bz2, lzma) is what argparse asks
#: for the terminal width (cli.Parser asks os). csd.transcript only when --json must read the transcript (a
#: working worker, a failed turn; the worker here is idle).
NOT_ON_THE_READ_PATH = ("asyncio", "rich", "inotify_simple", "transitions", "dataclasses", "inspect", "typing", "shutil",
                        "csd.supervisor", "csd.lifecycle", "csd.watch", "csd.commands", "csd.render", "csd.transcript")
READ_COMMANDS = (["status"], ["status", "--json"], ["session-id"], ["events-file"])


@pytest.mark.parametrize("argv", [["--version"], ["help"], ["list"], ["list", "--json"], *(["--worker", "api", *c] for c in READ_COMMANDS)],
                         ids=lambda a: " ".join(a))
def test_read_side_commands_import_only_what_they_use(env, argv: list[str]) -> None:
    """Each read-side command, run in a fresh interpreter on a real worker, loads none of NOT_ON_THE_READ_PATH."""
    env.add_worker("api", [{"event": "session_start", "source": "startup"}])
    code = ("import sys; from csd.cli import main; code = main(sys.argv[1:]); "
            f"print('LOADED', sorted(m for m in {NOT_ON_THE_READ_PATH!r} if m in sys.modules)); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-I", "-c", code, *argv], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "LOADED []"


def test_status_does_not_pay_for_asyncio_or_rich() -> None:
    code = "import sys; from csd import cli; print(sorted(m for m in ('asyncio', 'rich', 'inotify_simple') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_engine_command_does_not_load_openssl(env) -> None:
    """asyncio would import ssl (and map OpenSSL: ~4.5 MB of a waiting wait-for-turn); the console script blocks
    that import (cli.entry, which ends with os._exit: the check runs there)."""
    env.add_worker("api", [{"event": "session_start", "source": "startup"}])
    code = "import sys, atexit; from csd.cli import entry; sys.argv[0] = 'csd'; os = __import__('os'); " \
           "os._exit = lambda c, _exit=os._exit: (print('SSL', '_ssl' in sys.modules, flush=True), _exit(c)); entry()"
    proc = subprocess.run([sys.executable, "-I", "-c", code, "--worker", "api", "wait-for-turn", "5"], capture_output=True, text=True,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "SSL False"
