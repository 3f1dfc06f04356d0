"""Imports point one way: the pure core does no I/O-framework imports, and the hook imports no csd at all."""

from __future__ import annotations

import ast
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
    assert {n.split(".")[0] for n in imports(PKG / f"{module}.py")} <= {"__future__", "_json", "errno", "json", "os", "select", "stat", "sys", "time"}


def test_status_does_not_pay_for_asyncio_or_rich() -> None:
    code = "import sys; from csd import cli; print(sorted(m for m in ('asyncio', 'rich', 'inotify_simple') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
