"""How every gpt2-edge command reports a user's mistake: one line on stderr, no traceback.

The libraries raise :class:`EdgeError`; only the commands turn it into a message and an exit code,
and they all do it here so the CLIs cannot drift apart: a user error exits 1, a usage error (an
unknown flag, a value of the wrong type) exits 2 as click's convention has it, Ctrl-C exits 130.
Every command also takes ``--version`` from here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperCommand

from .errors import EdgeError

try:  # typer >= 0.2x carries its own click, whose errors derive from TyperException
    from typer import TyperException as _ClickError
except ImportError:  # pragma: no cover (older typer runs on click)
    from click import ClickException as _ClickError  # type: ignore[assignment,no-redef]

EXIT_USER_ERROR = 1
EXIT_USAGE_ERROR = 2  # click's convention for a command line it cannot parse
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT
DISTRIBUTION = "gpt2-edge"


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


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(text.split())


class EdgeCommand(TyperCommand):
    """A typer command whose usage errors are one ``Error: ...`` line (exit code 2).

    typer draws a box around them with rich, over several lines; a script reading stderr, and
    the house rule of one sentence per error, want one line.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except _ClickError as exc:
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else (prog_name or self.name)
            message = one_line(exc.format_message())
            end = "" if message.endswith((".", "!", "?")) else "."
            typer.echo(f"Error: {message}{end} See '{where} --help'.", err=True)
            sys.exit(getattr(exc, "exit_code", EXIT_USAGE_ERROR))
        except typer.Abort:  # typer turns an EOFError escaping the command into this
            typer.echo("Aborted.", err=True)
            sys.exit(EXIT_USER_ERROR)
        sys.exit(code if isinstance(code, int) else 0)


def package_version() -> str:
    """The installed gpt2-edge version ("unknown" when run from a source tree not installed)."""
    from importlib import metadata  # 15-20 ms to import, for --version only

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def show_version(ctx: typer.Context, value: bool) -> None:
    """``--version``'s callback: print ``<command> <version>`` and exit 0."""
    if value:
        typer.echo(f"{ctx.find_root().info_name} {package_version()}")
        raise typer.Exit()


VERSION_HELP = "Print the version and exit."
