"""The one exception type a user is meant to read.

Anything raised as :class:`EmbforgeError` is a problem with the user's input (a path, a flag, a
record); the CLI prints it as a single line and exits non-zero. Anything else is a bug in embforge
and keeps its traceback.
"""

from __future__ import annotations


class EmbforgeError(Exception):
    """A user-facing error: what went wrong, where, and what was expected."""


def where(path: object, line: int | None = None) -> str:
    """Format a location the way compilers do, so editors can jump to it."""
    return f"{path}:{line}" if line is not None else str(path)
