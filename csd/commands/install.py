"""The commands that print what the package carries: help, plugin-dir, skill, completion."""

from __future__ import annotations

import argparse
import sys

from csd.errors import OK


def help(args: argparse.Namespace) -> int:
    from csd.commands.table import help_text

    print(help_text(), end="")
    return OK


def plugin_dir(args: argparse.Namespace) -> int:
    from csd.bundled import plugin_dir

    print(plugin_dir())
    return OK


def skill(args: argparse.Namespace) -> int:
    from csd.bundled import skill_text

    sys.stdout.write(skill_text())
    return OK


def completion(args: argparse.Namespace) -> int:
    from csd.completion import script

    sys.stdout.write(script(args.shell))
    return OK
