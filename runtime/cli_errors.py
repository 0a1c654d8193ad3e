"""How every gpt2-edge command reports a user's mistake: one sentence on stderr, no traceback.

The libraries raise :class:`EdgeError`; only the commands turn it into a message and an exit code,
and they all do it here so the three CLIs cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from .errors import EdgeError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT


def report(exc: EdgeError) -> None:
    """Print one user error as a single ``Error: ...`` line on stderr."""
    typer.echo(f"Error: {exc}", err=True)


@contextmanager
def user_errors(interrupted: str = "") -> Iterator[None]:
    """Exit 1 on :class:`EdgeError` and 130 on Ctrl-C, printing one line instead of a traceback.

    Args:
        interrupted: what to print on Ctrl-C (default an empty line, ending the partial output).
    """
    try:
        yield
    except EdgeError as exc:
        report(exc)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        typer.echo(interrupted, err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
