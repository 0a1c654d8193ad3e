"""``gpt2-pack``: parse the flags and call :func:`make_pack` with arguments of the same names.

Each step is one line on stderr; a user's mistake is one sentence and exit code 1 (nothing is
left at the output), a command line that cannot be parsed exit code 2, Ctrl-C exit code 130,
SIGTERM 143 and SIGHUP 129 (each after removing the partial pack).
"""

from __future__ import annotations

import sys

from gpt2_edge.runtime import guarded_imports

# Ctrl-C while the libraries load ends the command as a later one does: 130, no traceback
with guarded_imports():
    from pathlib import Path
    from typing import TYPE_CHECKING, Annotated

    import typer
    from gpt2_edge.runtime import VERSION_HELP, EdgeCommand, run_app, show_version, user_errors

    from .make import Pack, make_pack
    from .platforms import DEFAULT_PYTHON, PLATFORMS, WEB, is_web
    from .staging import discard_pack

if TYPE_CHECKING:
    from .web import WebPack

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(cls=EdgeCommand)
def pack(
    # A str, not a Path: typer turns "" into ".", which would then be packed (or refused) as the
    # current folder.
    bundle: Annotated[str, typer.Argument(help="The bundle folder to ship.", show_default=False)],
    platform: Annotated[
        str,
        typer.Option(
            help=f"The device: {' or '.join(PLATFORMS)} (32-bit ARM has no onnxruntime wheels), "
            f"or {WEB}: a static folder that runs the bundle in a web page.",
            show_default=False,
        ),
    ],
    python: Annotated[
        str, typer.Option(help="The device's CPython version, 3.11 to 3.14 (not for web).")
    ] = DEFAULT_PYTHON,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The folder to write; it must not exist (default: <bundle>-<platform>-cp3X, or "
            "<bundle>-web).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help=VERSION_HELP),
    ] = False,
) -> None:
    """Write an offline install folder for a device (the bundle, every wheel, install.sh), or a
    static folder that runs the bundle in a web page (--platform web)."""
    interrupted = "\nInterrupted; no pack was written."

    def say(line: str) -> None:
        typer.echo(line, err=True)

    result: Pack | WebPack
    with user_errors(interrupted):
        if is_web(platform):
            from .web import make_web_pack  # only web packs need it

            result = make_web_pack(bundle, output, log=say)
        else:
            result = make_pack(bundle, platform, python, output, log=say)
        announce(result.folder, result.notices)


def announce(folder: Path, notices: list[str]) -> None:
    """The notes on stderr, then the pack's path on stdout, the command's one line of output.

    If that line cannot be written (a full disk behind stdout) or Ctrl-C comes first, the pack
    goes again: the command fails, and a script would not know the pack was made, nor could it
    run the command again (the output would exist).
    """
    try:
        for notice in notices:
            typer.echo(f"Note: {notice}", err=True)
        sys.stdout.write(f"{folder}\n")
        sys.stdout.flush()
    except (OSError, KeyboardInterrupt):
        discard_pack(folder)
        raise


def main() -> None:
    """Entry point of ``gpt2-pack``."""
    run_app(app, prog_name="gpt2-pack")
