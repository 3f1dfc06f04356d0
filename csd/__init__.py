"""csd: drive Claude Code CLI sessions as workers in tmux."""

__version__ = "0.1.0"
