"""``python -m csd``; ``entry`` is also the ``csd`` console script's and a shim's (csd/run_cli.py)."""

import sys


def entry() -> None:
    """csd's command line, imported here so that a Ctrl-C while it imports (tens of ms, before csd could take
    it) gives csd's one line and exit 130, not a traceback."""
    try:
        from csd.cli import entry as run
    except KeyboardInterrupt:
        sys.stderr.write("csd: interrupted\n")
        sys.exit(130)  # csd.errors.INTERRUPTED
    run()


if __name__ == "__main__":
    entry()
