"""The one-line form of an exception, as every user-facing error message quotes it."""

from __future__ import annotations


def first_line(exc: BaseException, *, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (at most ``limit`` characters), or its class name
    when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


class RunError(Exception):
    """A run cannot start (no inputs, a model is unavailable, the run folder is unusable); the
    message is one line."""
