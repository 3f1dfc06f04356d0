"""csd: drive Claude Code CLI sessions as workers in tmux."""

# The one place the version is written: pyproject.toml reads it (dynamic), csd --version prints it.
__version__ = "0.2.0"
