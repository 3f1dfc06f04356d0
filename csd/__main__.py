"""``python -m csd``."""

from csd.cli import entry

entry()
