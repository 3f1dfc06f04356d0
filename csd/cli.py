"""The csd command line's entry: the global options, one dispatch through the command table
(csd/commands/table.py) to the command's handler, running an engine command's coroutine, and turning
errors into exit codes (csd/errors.py has the table) and one line on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from csd import __version__, config
from csd.commands import run_async, table
from csd.console import err
from csd.errors import FAILURE, INTERRUPTED, OK, USAGE, CsdError, UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    import argparse

#: every per-worker command of a remote worker goes to its host (csd/commands/remote.py)
REMOTE_WORKER = "csd.commands.remote:worker_command"
GLOBAL_OPTIONS = "--worker NAME, --host HOST, --workers-dir DIR, --tmux-socket SOCKET, --help, --version"


class Globals:
    """The options before the command: ``--worker``, ``--host`` and the pinning ones (config.PINNING_OPTIONS)."""

    def __init__(self) -> None:
        self.worker: str | None = None
        self.host: str | None = None
        self.own_dir = False  # the workers dir was named on the command line (a shim always names its own)

    def take(self, opt: str, argv: list[str]) -> None:
        """Take ``opt`` (and its value from ``argv`` when not ``--opt=VALUE``)."""
        key, eq, inline = opt.partition("=")
        if key == "--worker":
            self.worker = inline if eq else argv.pop(0) if argv else None
            if self.worker is None:
                raise UsageError("--worker needs a worker name or session id")
            if not self.worker:
                raise UsageError("--worker needs a worker name or session id, got ''")
        elif key == "--host":
            self.host = inline if eq else (argv.pop(0) if argv else "")
            if not self.host:
                raise UsageError("--host needs a host name from the hosts file")
        elif key in config.PINNING_OPTIONS:
            if not eq and not argv:
                raise UsageError(f"{key} needs a value")
            value = inline if eq else argv.pop(0)
            if key == "--workers-dir" and not value:
                raise UsageError("--workers-dir needs a directory, got ''")
            config.pin(key, value)
            self.own_dir = self.own_dir or key == "--workers-dir"
        else:
            raise UsageError(f"unknown option {opt!r}; valid before the command: {GLOBAL_OPTIONS}")


def dispatch(argv: Sequence[str]) -> int:
    argv = list(argv)
    g = Globals()
    while argv and argv[0].startswith("-") and argv[0] != "-":
        opt = argv.pop(0)
        if opt in ("-h", "--help"):
            print(table.help_text(), end="")
            return OK
        if opt == "--version":
            print(f"csd {__version__}")
            return OK
        g.take(opt, argv)
    if not argv:
        if g.worker:
            raise UsageError(f"missing command for worker {g.worker!r}; valid: {' '.join(table.commands(table.PER))}")
        print(table.help_text(), end="")
        return USAGE
    command = table.find(argv[0], g.worker, plain=g.worker is None and g.host is None)
    rest = argv[1:]
    if rest and rest[0] in ("-h", "--help"):
        command.parser().print_help(sys.stdout)
        return OK
    args = command.parse(rest)
    if g.worker is None and g.host is not None:
        raise UsageError(f"--host goes with --worker NAME (a remote worker's shim), or after launch: csd launch --host {g.host} NAME CWD")
    args.command, args.worker, args.own_dir, args.invocation = command.name, g.worker, g.own_dir, ["csd", *argv]
    handler = command.handler
    if g.worker is not None:
        host = g.host if g.host is not None else _remote_host(g.worker)
        if host is not None:
            args.host, args.rest, handler = host, rest, REMOTE_WORKER
    return run(handler, args)


def _remote_host(worker: str) -> str | None:
    """The host of a remote worker of that name; one stat for a local one (the read path stays cheap)."""
    from csd.workers import WorkersDir

    wdir = WorkersDir()
    if not wdir.remote_path(worker).is_file():
        return None
    from csd.remoteworkers import host_of

    return host_of(wdir, worker)


def run(handler: str, args: argparse.Namespace) -> int:
    """Import the handler (``module:function``) and run it; an engine handler's coroutine runs to its exit code."""
    module, _, name = handler.partition(":")
    result = getattr(__import__(module, fromlist=[name]), name)(args)
    return result if isinstance(result, int) else run_async(result)


def main(argv: Sequence[str] | None = None) -> int:
    """Run csd; returns the exit code (the console script exits with it)."""
    try:
        try:
            code = dispatch(sys.argv[1:] if argv is None else argv)
        except BaseExceptionGroup as group:
            raise _first_leaf(group) from group
    except KeyboardInterrupt:
        err("csd: interrupted")
        code = INTERRUPTED
    except CsdError as exc:
        err(f"csd: error: {exc}")
        code = exc.exit_code
    except BrokenPipeError:
        code = FAILURE
    except OSError as exc:
        # what the host refused (no space, no descriptors, no inotify, a file that is not one): one line
        err(f"csd: error: {os_error_line(exc)}")
        code = FAILURE
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return code


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: what failed, on which file, and what to do where there is something to do."""
    import errno

    what = exc.strerror or str(exc)
    where = f"{exc.filename}: " if exc.filename else ""
    hint = {
        errno.EMFILE: "; too many open files for this process: raise the limit (ulimit -n) or track fewer workers at once",
        errno.ENFILE: "; the system is out of open files",
        errno.ENOSPC: "; the file system is full (or out of inotify watches): free some space",
        errno.EROFS: "; the file system is read-only",
        errno.EACCES: "; check the permissions of the workers dir and its parent (CSD_WORKERS_DIR)",
    }.get(exc.errno or 0, "")
    return f"{where}{what}{hint}"


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group: a csd error or an interrupt first, else the first one."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    for kind in (KeyboardInterrupt, CsdError):
        for e in leaves:
            if isinstance(e, kind):
                return e
    return leaves[0] if leaves else group


def entry() -> None:
    """The console script: exit at once once the answer is out. Tearing the interpreter down (modules,
    garbage) costs 10-20 ms after the answer is printed, which a waiting controller would pay on every
    wake-up (bench/). Everything csd opened is closed by then; the streams are flushed here.

    csd speaks no TLS, but asyncio imports ssl when it can, and mapping OpenSSL costs every waiting process
    ~4.5 MB of its RSS (bench/: a blocked wait-for-turn); None in sys.modules makes that import fail the
    way asyncio expects (it then has no ssl support). Only in csd's own process, only if nothing loaded it."""
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
