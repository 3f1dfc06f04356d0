"""``csd completion bash|zsh|fish``: the scripts run in the real shells, complete commands, options, event
types and the names of the workers that exist when TAB is pressed, and stay in step with the parsers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csd.commands.table import parsers
from csd.completion import script
from csd.events import EVENT_NAMES
from support import Env, csd, launch

HAVE = {sh: shutil.which(sh) for sh in ("bash", "zsh", "fish")}
needs = {sh: pytest.mark.skipif(not HAVE[sh], reason=f"{sh} is not installed (.ci/run installs it)") for sh in HAVE}

# (what is typed before TAB, what bash offers); the workers dir holds api-fix, api-docs and billing
CASES = [
    ("csd ", " ".join(parsers()[0])),
    ("csd l", "launch list"),
    ("csd -", "--worker --workers-dir --tmux-socket --help --version"),
    ("csd --tmux-socket ", ""),
    ("csd --tmux-socket /tmp/s --worker api-f", "api-fix"),
    ("csd --worker api-", "api-docs api-fix"),
    ("csd --worker api-f", "api-fix"),
    ("csd --worker api-fix ", " ".join(parsers()[1])),
    ("csd --worker api-fix st", "status stop"),
    ("csd --worker api-fix read-events --", "--last --type --follow"),
    ("csd --worker api-fix read-events --type s", "session_start stop stop_failure subagent_stop session_end"),
    ("csd --worker api-fix read-events --last ", ""),
    ("csd --worker api-fix converse --with-turn ", ""),
    ("csd wait-for-turn --", "--any --all --settled"),
    ("csd wait-for-turn --all api-fix b", "billing"),
    ("csd wait-for-turn --any --settled a", "api-docs api-fix"),
    ("csd list --json ", "api-docs api-fix billing"),
    ("csd watch bi", "billing"),
    ("csd completion ", "bash zsh fish"),
    ("csd prune --", "--dry-run"),
    ("csd launch new-one /nonexistent-dir -- --mo", ""),
    ("csd demo --workers ", ""),
]


def workers_dir(root: Path, *names: str) -> Path:
    """A workers dir with a shim per name, as launch leaves it."""
    (root / "bin").mkdir(parents=True, mode=0o700)
    for n in names:
        (root / "bin" / n).write_text("#!/bin/sh\n")
    return root


def bash_complete(line: str, wdir: Path, setup: str = "") -> list[str]:
    """COMPREPLY from the generated script's function in a real bash, for the words of ``line``."""
    words = line.split(" ")
    prog = (f'{setup}\nCOMP_LINE={_q(line)}; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({" ".join(_q(w) for w in words)}); '
            f'COMP_CWORD={len(words) - 1}; _csd; printf "%s\\n" "${{COMPREPLY[@]}}"')
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", f'eval "$(csd completion bash)"\n{prog}'],
                          capture_output=True, text=True, env=_env(wdir), timeout=20)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [w for w in proc.stdout.split("\n") if w]


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def _env(wdir: Path) -> dict[str, str]:
    return {**os.environ, "CSD_WORKERS_DIR": str(wdir), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


@needs["bash"]
def test_bash_registers_the_function() -> None:
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", 'eval "$(csd completion bash)"; complete -p csd'],
                          capture_output=True, text=True, env=_env(Path("/nonexistent")), timeout=20)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "complete -F _csd csd\n", "")


@needs["bash"]
@pytest.mark.parametrize(("line", "offered"), CASES)
def test_bash_offers(line: str, offered: str, tmp_path: Path) -> None:
    wdir = workers_dir(tmp_path / "w", "api-fix", "api-docs", "billing")
    assert sorted(bash_complete(line, wdir)) == sorted(offered.split())


@needs["bash"]
def test_bash_completes_a_directory_for_launch(tmp_path: Path) -> None:
    """The CWD of launch/adopt is a directory: the script hands it to bash's own directory completion."""
    wdir = workers_dir(tmp_path / "w")
    got = bash_complete("csd launch x /nonexistent-dir", wdir, setup="compopt() { echo \"compopt $*\"; }")
    assert got == ["compopt -o dirnames"]


BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")


@pytest.mark.skipif(not BASH_COMPLETION.is_file(), reason="bash-completion is not installed (.ci/run installs it)")
def test_bash_completion_loads_the_saved_script_on_first_use(tmp_path: Path) -> None:
    """Saved in bash-completion's user dir, the script is loaded the first time csd is completed."""
    (tmp_path / "data" / "bash-completion" / "completions").mkdir(parents=True)
    (tmp_path / "data" / "bash-completion" / "completions" / "csd").write_text(script("bash"))
    prog = f"source {BASH_COMPLETION}; complete -p csd 2>/dev/null || echo none; _completion_loader csd; complete -p csd"
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", prog], capture_output=True, text=True, timeout=20,
                          env={**_env(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")})
    assert (proc.returncode, proc.stdout) == (0, "none\ncomplete -F _csd csd\n"), proc.stderr


@needs["bash"]
def test_bash_reads_the_workers_dir_named_on_the_line(tmp_path: Path) -> None:
    """A shim runs csd --workers-dir DIR ...: names come from that dir, not $CSD_WORKERS_DIR."""
    env_dir = workers_dir(tmp_path / "env", "from-env")
    other = workers_dir(tmp_path / "other", "from-line")
    assert bash_complete(f"csd --workers-dir {other} --worker from-", env_dir) == ["from-line"]
    assert bash_complete(f"csd --workers-dir={other} wait-for-turn --any ", env_dir) == ["from-line"]
    assert bash_complete("csd --worker from-", env_dir) == ["from-env"]
    got = bash_complete("csd --workers-dir /nonexistent", env_dir, setup="compopt() { echo \"compopt $*\"; }")
    assert got == ["compopt -o dirnames"]


@needs["bash"]
def test_bash_completes_the_names_of_workers_as_they_come_and_go(env: Env) -> None:
    """Names are read from the workers dir at TAB time: a launched worker appears, a stopped one is gone."""
    launch(env, "api-fix")
    docs = launch(env, "api-docs")
    assert sorted(bash_complete("csd --worker api-", env.wdir.path)) == ["api-docs", "api-fix"]
    assert subprocess.run([str(docs), "stop"], capture_output=True).returncode == 0
    assert bash_complete("csd --worker api-", env.wdir.path) == ["api-fix"]
    assert bash_complete("csd wait-for-turn --any ", env.wdir.path) == ["api-fix"]


def test_workers_dir_missing_offers_nothing(tmp_path: Path) -> None:
    if HAVE["bash"]:
        assert bash_complete("csd --worker ", tmp_path / "none") == []
    if HAVE["fish"]:
        assert fish_complete("csd --worker ", tmp_path / "none") == []


def fish_complete(line: str, wdir: Path) -> list[str]:
    """What fish's own completion engine offers for ``line`` with the generated script loaded."""
    proc = subprocess.run(["fish", "--no-config", "-c", f"csd completion fish | source; complete -C {_q(line)}"],
                          capture_output=True, text=True, env=_env(wdir), timeout=20)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return [w.split("\t")[0] for w in proc.stdout.split("\n") if w]


@needs["fish"]
@pytest.mark.parametrize(("line", "offered"), [c for c in CASES if not c[0].startswith("csd launch")])
def test_fish_offers(line: str, offered: str, tmp_path: Path) -> None:
    wdir = workers_dir(tmp_path / "w", "api-fix", "api-docs", "billing")
    assert sorted(fish_complete(line, wdir)) == sorted(offered.split())


@needs["fish"]
def test_fish_completes_worker_equals_and_directories(tmp_path: Path) -> None:
    wdir = workers_dir(tmp_path / "w", "api-fix")
    (tmp_path / "proj").mkdir()
    assert fish_complete("csd --worker=ap", wdir) == ["--worker=api-fix"]
    assert fish_complete(f"csd launch x {tmp_path}/pr", wdir) == [f"{tmp_path}/proj/"]
    other = workers_dir(tmp_path / "other", "from-line")
    assert fish_complete(f"csd --workers-dir {other} --worker from-", wdir) == ["from-line"]


def type_tab(env: Env, shell: list[str], rc: str, typed: str, want: str, extra_env: dict[str, str]) -> None:
    """Run an interactive shell in a tmux pane, type ``typed`` and TAB, until its line reads ``want``."""
    env_args = [f"{k}={v}" for k, v in {**extra_env, "PATH": _env(env.wdir.path)["PATH"], "CSD_WORKERS_DIR": str(env.wdir.path)}.items()]
    env.tmux("new-session", "-d", "-s", "sh", "-x", "150", "-y", "20", "--", "env", *env_args, *shell)
    env.tmux("send-keys", "-t", "=sh:", rc, "Enter")
    env.tmux("send-keys", "-t", "=sh:", "clear", "Enter")
    env.tmux("send-keys", "-t", "=sh:", "-l", typed)
    env.tmux("send-keys", "-t", "=sh:", "Tab")
    wait_line(env, want)


def wait_line(env: Env, want: str) -> None:
    """Until a line of the shell's screen ends with ``want`` (the screen is the shell's only output)."""
    deadline = time.monotonic() + 15
    screen = ""
    while time.monotonic() < deadline:
        screen = env.tmux("capture-pane", "-p", "-t", "=sh:").stdout
        if any(line.rstrip().endswith(want) for line in screen.splitlines()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the line never read {want!r}:\n{screen}")


@needs["bash"]
def test_tab_in_an_interactive_bash(env: Env) -> None:
    """Readline splits '--worker=NAME' at '='; the script puts it back together."""
    launch(env, "api-fix")
    type_tab(env, ["bash", "--norc", "--noprofile", "-i"], 'eval "$(csd completion bash)"', "csd --worker=api-", "csd --worker=api-fix", {"PS1": "$ "})
    env.tmux("send-keys", "-t", "=sh:", "read-events --type session_s", "Tab")
    wait_line(env, "csd --worker=api-fix read-events --type session_start")


@needs["zsh"]
def test_tab_in_an_interactive_zsh(env: Env, tmp_path: Path) -> None:
    (tmp_path / "zdot").mkdir()
    (tmp_path / "zdot" / ".zshrc").write_text("autoload -Uz compinit && compinit -u -D\nPS1='$ '\n")
    launch(env, "api-fix")
    type_tab(env, ["zsh", "-i"], 'eval "$(csd completion zsh)"', "csd --worker api-", "csd --worker api-fix", {"ZDOTDIR": str(tmp_path / "zdot")})
    env.tmux("send-keys", "-t", "=sh:", "read-events --type session_s", "Tab")
    wait_line(env, "csd --worker api-fix read-events --type session_start")


@needs["zsh"]
def test_zsh_script_autoloads_from_fpath(env: Env, tmp_path: Path) -> None:
    """Saved as _csd in a directory on $fpath, compinit picks it up by its #compdef line."""
    fdir = tmp_path / "zfunc"
    fdir.mkdir()
    (fdir / "_csd").write_text(script("zsh"))
    (tmp_path / "zdot").mkdir()
    (tmp_path / "zdot" / ".zshrc").write_text(f"fpath=({fdir} $fpath)\nautoload -Uz compinit && compinit -u -D\nPS1='$ '\n")
    launch(env, "billing")
    type_tab(env, ["zsh", "-i"], "true", "csd wait-for-turn --all bil", "csd wait-for-turn --all billing", {"ZDOTDIR": str(tmp_path / "zdot")})


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_every_command_option_and_event_is_in_the_script(shell: str) -> None:
    text = csd("completion", shell).stdout.decode()
    top, per = parsers()
    for name, parser in [*top.items(), *per.items()]:
        assert name in text, name
        for action in parser._actions:
            for opt in action.option_strings:
                assert opt in text or opt in ("-h", "--help"), (name, opt)
    for event in EVENT_NAMES:
        assert event in text


def test_an_unknown_shell_is_one_clear_line() -> None:
    proc = csd("completion", "tcsh")
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode() == "csd: error: csd completion: argument shell: invalid choice: 'tcsh' (choose from 'bash', 'zsh', 'fish')\n"
