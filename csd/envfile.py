"""The worker's environment handed over in a private file, never on a command line.

``tmux new-session -e K=V`` would put every variable (API keys included) into the arguments of the
tmux client and, when that command starts the server, of the tmux server for its whole life, where
``ps -eo args`` shows them to every local user. Instead launch writes the environment to a file
created exclusively, mode 0600, in the (private) workers dir, and the pane runs this module first:
it reads the file, removes it, enters the working directory (failing loudly where tmux would fall
back silently to another one) and execs the worker with exactly that environment plus the variables
tmux sets for the pane itself.

Standard library only and no csd imports: the pane runs it as ``python -I -S envfile.py FILE CWD -- ARGV``.
"""

from __future__ import annotations

import json
import os
import stat
import sys

#: What tmux sets in the pane itself (TERM from default-terminal, TMUX, TMUX_PANE, TERM_PROGRAM*):
#: the pane's values, never the controller's.
PANE_VARS = ("TERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "TMUX", "TMUX_PANE")
#: Exit statuses of the pane when the hand-over fails (shown by launch with the pane's last lines).
BAD_FILE, BAD_CWD, BAD_EXEC = 125, 126, 127


def write(path: str, env: dict[str, str]) -> None:
    """Create ``path`` exclusively (never through a link), 0600, holding ``env``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        data = json.dumps(env).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def take(path: str) -> dict[str, str]:
    """Read and remove the file; refuse one that is not a regular file of ours, private to us."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise OSError(f"{path}: not a private regular file of uid {os.geteuid()}")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
        os.unlink(path)
    env = json.loads(b"".join(chunks))
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ValueError(f"{path}: not an environment")
    return env


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: envfile.py FILE CWD -- PROGRAM [ARGS...]\n")
        return BAD_FILE
    path, cwd, prog = argv[0], argv[1], argv[3:]
    try:
        env = take(path)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"csd: cannot read the worker's environment: {exc}\n")
        return BAD_FILE
    try:
        os.chdir(cwd)
    except OSError as exc:
        sys.stderr.write(f"csd: cannot enter the working directory {cwd!r}: {exc.strerror}\n")
        return BAD_CWD
    env.update({k: os.environ[k] for k in PANE_VARS if k in os.environ})
    try:
        os.execve(prog[0], prog, env)
    except OSError as exc:
        sys.stderr.write(f"csd: cannot run {prog[0]!r}: {exc.strerror}\n")
    return BAD_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
