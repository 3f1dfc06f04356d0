"""Imports point one way: the pure core does no I/O-framework imports, and the hook imports no csd at all."""

from __future__ import annotations

import ast
import os
import select
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "csd"
FORBIDDEN_IN_PURE = {"asyncio", "subprocess", "rich", "ctypes", "csd.inotify", "csd.supervisor", "csd.tmux", "csd.watch", "csd.cli"}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ["events", "states", "transcript", "config", "errors", "prompt", "sim/keys"])
def test_pure_modules_import_no_io_frameworks(module: str) -> None:
    found = {n for n in imports(PKG / f"{module}.py") if n.split(".")[0] in {"asyncio", "subprocess", "rich", "ctypes"} or n in FORBIDDEN_IN_PURE}
    assert found == set()


@pytest.mark.parametrize("module", ["hook", "envfile"])
def test_what_runs_outside_csd_imports_only_the_standard_library(module: str) -> None:
    assert {n.split(".")[0] for n in imports(PKG / f"{module}.py")} <= {"__future__", "_json", "errno", "fcntl", "json", "os", "select", "stat", "sys", "time"}


def test_run_hook_is_a_stub_that_imports_the_hook_only() -> None:
    """Claude Code runs csd/run_hook.py for each event: it is compiled on every run, so it holds nothing but
    the import of csd/hook.py (compiled once) and the call."""
    assert imports(PKG / "run_hook.py") == {"sys", "hook"}
    code = [ln for ln in (PKG / "run_hook.py").read_text().split('"""')[2].splitlines() if ln.strip()]
    assert len(code) == 4, code


#: What a read-side command must not import: each costs a command that only reads a file and asks tmux once
#: a large part of its start-up (bench/: status against the bare interpreter). asyncio, rich and inotify
#: (ctypes) are the engine's; transitions the driving supervisor's (states.py folds by the table); dataclasses brings
#: inspect, ast, dis and tokenize (csd/value.py instead); typing; shutil (bz2, lzma) is what argparse asks
#: for the terminal width (cli.Parser asks os). csd.transcript only when --json must read the transcript (a
#: working worker, a failed turn; the worker here is idle).
NOT_ON_THE_READ_PATH = ("asyncio", "rich", "csd.inotify", "ctypes", "transitions", "dataclasses", "inspect", "typing", "shutil",
                        "csd.supervisor", "csd.lifecycle", "csd.watch", "csd.commands.engine", "csd.commands.manage", "csd.render", "csd.transcript")
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
    code = "import sys; from csd import cli; print(sorted(m for m in ('asyncio', 'rich', 'csd.inotify', 'ctypes') if m in sys.modules))"
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


def _imported(importtime: str) -> set[str]:
    """The modules a PYTHONPROFILEIMPORTTIME=1 run imported (its lines on stderr)."""
    return {ln.rpartition("|")[2].strip() for ln in importtime.splitlines() if ln.startswith("import time:")}


def test_a_shim_runs_without_site_and_loads_it_when_an_import_needs_it(env) -> None:
    """A shim runs csd/run_cli.py under ``python -S -P``: status (and send, converse, wait-for-turn) never load
    ``site``; a command that imports a package from site-packages (watch: rich) loads it at that import and works."""
    env.add_worker("api", [{"event": "session_start", "source": "startup"}])
    shim = env.wdir.write_shim("api", env.socket)
    assert " -S -P " in shim.read_text() and "run_cli.py" in shim.read_text()
    timed = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([str(shim), "status"], capture_output=True, text=True, env=timed, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "idle\n"), proc.stderr
    loaded = _imported(proc.stderr)
    assert "csd.cli" in loaded and "site" not in loaded
    run_cli = next(word for word in shlex.split(shim.read_text().splitlines()[1]) if word.endswith("/run_cli.py"))
    watch = subprocess.Popen([sys.executable, "-S", "-P", run_cli, "--workers-dir", str(env.wdir.path), "watch"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=timed)
    try:
        assert select.select([watch.stdout], [], [], 30)[0], "watch printed no row within 30 s"
        row = watch.stdout.readline()
    finally:
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
    assert "\tapi\t" in row, (row, err)
    assert {"site", "rich"} <= _imported(err), err[-2000:]


# ---------------------------------------------------------------- the house, as the README's Design section draws it

#: Every module's layer. A module imports only from its own layer or the ones below it (lower number),
#: lazily or not; within a layer the import graph has no cycle; adapters do not import each other.
LAYERS: dict[str, int] = {}
PURE, BASE, ADAPTER, ENGINE, COMMANDS, ENTRY = range(6)
for _layer, _names in {
    # no I/O, no environment: what a test can call with values and check values; and the two programs that
    # run outside csd (standard library only, no csd import), whose tables the core reads
    PURE: ("csd", "value", "errors", "clock", "events", "states", "prompt", "attention", "transcript", "screen", "hook", "run_hook", "envfile"),
    # what every adapter may use: the environment (config), stderr (console), bounded line reading, /proc
    BASE: ("config", "console", "lines", "proc", "inotify"),
    # each talks to one outside thing
    ADAPTER: ("tmux", "watch", "workers", "transcriptfile", "remote", "bundled"),
    ENGINE: ("supervisor", "waiter", "sending", "reply", "startpane", "lifecycle", "fleet", "remoteworkers"),
    COMMANDS: ("commands", "render", "livetable", "demo", "completion"),
    ENTRY: ("cli", "__main__", "run_cli"),
}.items():
    LAYERS.update(dict.fromkeys(_names, _layer))
#: The simulated worker stands in for Claude Code: a separate program that may use the pure core only.
SIM_PREFIXES = ("sim",)
#: What the pure core may import besides csd: nothing that reads, writes or runs (transitions is the state
#: machine library, pure too).
PURE_STDLIB = {"__future__", "collections", "dataclasses", "datetime", "enum", "json", "posixpath", "re", "typing", "transitions"}
#: The programs that run outside csd: in the PURE layer for what they declare, but they do I/O when run.
OUTSIDE = ("hook", "run_hook", "envfile")


def csd_modules() -> dict[str, Path]:
    """{dotted name under csd ("supervisor", "sim.keys", "csd" for the package): its file}."""
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        found[".".join(parts) or "csd"] = path
    return found


def csd_imports(name: str, path: Path) -> set[str]:
    """The csd modules ``name`` imports anywhere in its file (a function-level import counts too)."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    out: set[str] = set()
    known = csd_modules()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1] if package != "csd" else []
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
                base = "csd." + base if base else "csd"
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t == "csd" or t.startswith("csd."):
                mod = t[4:] or "csd"
                while mod not in known and "." in mod:
                    mod = mod.rsplit(".", 1)[0]
                if mod in known and mod != name:
                    out.add(mod)
    return out


def top(name: str) -> str:
    return name.split(".")[0]


def is_sim(name: str) -> bool:
    return top(name) in SIM_PREFIXES


def test_every_module_has_a_place_in_the_house() -> None:
    homeless = [n for n in csd_modules() if not is_sim(n) and top(n) not in LAYERS]
    assert homeless == [], "add each to LAYERS (and to the README's Design section)"


def test_imports_point_down_the_layers() -> None:
    upward = []
    for name, path in csd_modules().items():
        if is_sim(name):
            continue
        for dep in csd_imports(name, path):
            if is_sim(dep) or LAYERS[top(dep)] > LAYERS[top(name)]:
                upward.append(f"{name} -> {dep}")
    assert upward == []


def test_adapters_do_not_import_each_other() -> None:
    crossing = [f"{name} -> {dep}" for name, path in csd_modules().items() if not is_sim(name) and LAYERS[top(name)] == ADAPTER
                for dep in csd_imports(name, path) if LAYERS[top(dep)] == ADAPTER and top(dep) != top(name)]
    assert crossing == []


def test_no_import_cycle() -> None:
    graph = {name: csd_imports(name, path) for name, path in csd_modules().items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep.startswith(node + ".") or node.startswith(dep + ".") and dep == "csd":
                continue  # a package and its own modules
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_simulated_worker_uses_only_the_pure_core() -> None:
    """It stands in for Claude Code: none of csd's engine may leak into what it does."""
    leaks = [f"{name} -> {dep}" for name, path in csd_modules().items() if is_sim(name)
             for dep in csd_imports(name, path) if not is_sim(dep) and LAYERS[top(dep)] != PURE]
    assert leaks == []


def _calls(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            names.append(f.id if isinstance(f, ast.Name) else f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else "?")
    return names


@pytest.mark.parametrize("module", sorted(n for n, layer in LAYERS.items() if layer == PURE and n not in OUTSIDE))
def test_pure_modules_do_no_io_and_read_no_environment(module: str) -> None:
    path = csd_modules()[module]
    tree = ast.parse(path.read_text())
    stdlib = {n.split(".")[0] for n in imports(path)} - {"csd"}
    assert stdlib <= PURE_STDLIB, f"{module} imports {sorted(stdlib - PURE_STDLIB)}"
    io_calls = [c for c in _calls(tree) if c in ("open", "print", "input", "exec", "eval", "__import__")]
    assert io_calls == []
    assert "environ" not in {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_only_tmux_py_runs_tmux() -> None:
    """A tmux command line (a list or call starting with "tmux") is built only in csd/tmux.py."""
    found = []
    for name, path in csd_modules().items():
        if name == "tmux":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            firsts = node.elts[:1] if isinstance(node, (ast.List, ast.Tuple)) else node.args[:1] if isinstance(node, ast.Call) else []
            if any(isinstance(f, ast.Constant) and f.value == "tmux" for f in firsts):
                found.append(f"{name}:{node.lineno}")
    assert found == []


def test_no_function_is_over_60_lines() -> None:
    """A function a newcomer can read at once: under 60 lines, the simulated worker's ``main`` excepted (its
    options and wiring, in the order the program runs)."""
    long = []
    for name, path in csd_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 60:
                if (name, node.name) != ("sim.main", "main"):
                    long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert long == []
