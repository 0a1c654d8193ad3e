"""How every gpt2-edge command reports a user's mistake: one line on stderr, no traceback.

The libraries raise :class:`EdgeError`; only the commands turn it into a message and an exit code,
and they all do it here so the CLIs cannot drift apart: a user error exits 1, a usage error (an
unknown flag, a value of the wrong type) exits 2 as click's convention has it, Ctrl-C exits 130.
Standard output that cannot be written (a full disk) is one line and exit 1 as well; a closed pipe
(``| head``) exits 1 silently, as typer does. Every command also takes ``--version`` from here.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import typer
from typer.core import TyperCommand

from ..errors import EdgeError, Terminated

try:  # typer >= 0.2x carries its own click, whose errors derive from TyperException
    from typer import TyperException as _ClickError
except ImportError:  # pragma: no cover (older typer runs on click)
    from click import ClickException as _ClickError  # type: ignore[assignment]

EXIT_USER_ERROR = 1
EXIT_USAGE_ERROR = 2  # click's convention for a command line it cannot parse
EXIT_INTERRUPTED = 130  # the shell's convention for SIGINT
DISTRIBUTION = "gpt2-edge"
# Arguments that hold free text, which may well start with '-' (click then reads it as a flag).
FREE_TEXT_ARGUMENTS = ("prompt",)


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
    except KeyboardInterrupt as exc:
        typer.echo(interrupted, err=True)
        raise typer.Exit(interrupted_code(exc)) from None


def run_app(app: typer.Typer, **kwargs: Any) -> None:
    """Run a command's typer app (every entry point does): Ctrl-C while typer builds the command
    from its signature, before :class:`EdgeCommand` takes over, exits as one after does."""
    try:
        app(**kwargs)
    except KeyboardInterrupt as exc:
        sys.stderr.write("\n")
        sys.exit(interrupted_code(exc))


def interrupted_code(exc: KeyboardInterrupt) -> int:
    """The exit code after an interrupt: 130 for Ctrl-C; for a signal caught to clean up
    (errors.Terminated), 128 + its number, as the signal would have ended the process."""
    return 128 + exc.signum if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(text.split())


class EdgeCommand(TyperCommand):
    """A typer command whose usage errors are one ``Error: ...`` line (exit code 2).

    typer draws a box around them with rich, over several lines; a script reading stderr, and
    the house rule of one sentence per error, want one line. Standard output that cannot be
    written is one line too (exit code 1), where Python would print a traceback.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not windows_expand_args:  # click's own default otherwise (it matters on Windows only)
            extra["windows_expand_args"] = False
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            self._main(args, prog_name, complete_var, **extra)
        except KeyboardInterrupt as exc:  # while parsing, or printing --help: as in the command
            sys.stderr.write("\n")
            sys.exit(interrupted_code(exc))

    def _main(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        **extra: Any,
    ) -> None:
        with _watched_stdout() as watch:
            try:
                code = super().main(args, prog_name, complete_var, False, **extra)
                if sys.stdout is not None:
                    sys.stdout.flush()  # buffered output fails here, in the guard, not at exit
            except _ClickError as exc:
                ctx = getattr(exc, "ctx", None)
                where = ctx.command_path if ctx is not None else str(prog_name or self.name)
                message = one_line(exc.format_message()) + self._dash_hint(exc, args, where)
                end = "" if message.endswith((".", "!", "?")) else "."
                typer.echo(f"Error: {message}{end} See '{where} --help'.", err=True)
                sys.exit(getattr(exc, "exit_code", EXIT_USAGE_ERROR))
            except typer.Abort as exc:  # typer's for an EOFError or a Ctrl-C escaping the command
                if isinstance(exc.__cause__, KeyboardInterrupt):  # click ended the line
                    sys.exit(interrupted_code(exc.__cause__))
                typer.echo("Aborted.", err=True)
                sys.exit(EXIT_USER_ERROR)
            except OSError as exc:
                if exc is not watch.error:  # reading a file, say: not the output's fault
                    raise
                if exc.errno != errno.EPIPE:  # a reader that went away wants no message
                    reason = exc.strerror or str(exc)
                    typer.echo(f"Error: Cannot write to standard output ({reason}).", err=True)
                sys.exit(EXIT_USER_ERROR)
        sys.exit(code if isinstance(code, int) else 0)

    def _dash_hint(self, exc: Exception, args: Sequence[str] | None, where: str) -> str:
        """For an unknown option that may be free text (a prompt "-hello"): how to pass it."""
        name = getattr(exc, "option_name", None)
        free_text = [
            param.name
            for param in self.params
            if param.param_type_name == "argument" and param.name in FREE_TEXT_ARGUMENTS
        ]
        if not name or not free_text or getattr(exc, "possibilities", None):
            return ""  # a near miss of a real flag ("--top_p") is a typo, not text
        tokens = list(sys.argv[1:] if args is None else args)
        tokens = tokens[: tokens.index("--")] if "--" in tokens else tokens
        short = not name.startswith("--")  # click names "-hello" after its first letter, "-h"
        text = next((t for t in tokens if t == name or (short and t.startswith(name))), name)
        return (
            f" (a {free_text[0]} that starts with '-' goes after '--': "
            f"{where} -- {shlex.quote(text)})"
        )


class _StdoutWatch:
    """``sys.stdout``, remembering the OSError its last failed write or flush raised.

    A full disk behind stdout and an unreadable input file both escape a command as OSError;
    only this tells which one was the output's.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            self.error = exc
            raise

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:  # encoding, isatty, fileno, buffer, ...
        return getattr(self.stream, name)


@contextmanager
def _watched_stdout() -> Iterator[_StdoutWatch]:
    """Watch ``sys.stdout`` for write errors; after one, send what is left to /dev/null.

    Output still buffered when a write failed would fail again in the interpreter's last flush
    ("Exception ignored ..."); Python's docs on SIGPIPE suggest pointing fd 1 at /dev/null.
    """
    stream = sys.stdout
    watch = _StdoutWatch(stream)
    if stream is not None:
        sys.stdout = watch
    try:
        yield watch
    finally:
        if sys.stdout is watch:  # typer may have wrapped it after a closed pipe; that stays
            sys.stdout = stream
        if watch.error is not None:
            _discard_output(stream)


def _discard_output(stream: IO[str]) -> None:
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a real file (a test's buffer): nothing is left to fail
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


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
