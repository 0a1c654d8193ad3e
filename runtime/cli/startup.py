"""Ctrl-C while a command starts: exit 130 without a traceback, from the first import to the end.

A command spends its first second or more importing (typer, numpy, onnxruntime, rich for
``--help``). A ``KeyboardInterrupt`` raised in Python code there is caught by the module's guard,
but one raised while a C extension initialises is not: onnxruntime's module init imports numpy
from C, which prints the interrupted import's traceback itself and then fails with
``ImportError: initialization failed``. So :class:`guarded_imports` holds SIGINT back while the
imports run and raises it once they are done, where the guard catches it; Ctrl-C then ends the
command a moment later, as it would have at its next line of Python. This module imports only
``signal`` and ``sys``: what runs before the guard must be quick (Python's own start, ~0.1 s,
comes before any of it and cannot be guarded).
"""

from __future__ import annotations

import signal
import sys

EXIT_INTERRUPTED = 130  # as runtime/cli/errors.py, which imports typer


class guarded_imports:  # noqa: N801 (used as ``with guarded_imports():``, like a function)
    """Run a module's imports with Ctrl-C held back; a Ctrl-C during them ends the process
    with exit code 130 and a line break on stderr once they are done (or as they fail)."""

    def __enter__(self) -> None:
        # Per thread: in a thread that is not the main one SIGINT is never handled anyway.
        self._held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def __exit__(self, kind: object, exc: object, traceback: object) -> None:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._held)
            _raise_pending()  # a Ctrl-C that was held is raised here, inside this guard
        except KeyboardInterrupt:
            exc = KeyboardInterrupt()
        if isinstance(exc, KeyboardInterrupt):
            sys.stderr.write("\n")
            raise SystemExit(EXIT_INTERRUPTED) from None


def _raise_pending() -> None:
    """Nothing: calling a Python function is where the interpreter runs a pending signal's
    handler."""
