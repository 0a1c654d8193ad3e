"""``gpt2-batch``: parse the flags and call :func:`run_batch` with arguments of the same names.

A user's mistake (INPUT, OUTPUT, the model, a flag's value) is one sentence on stderr and exit
code 1 before any work; a command line that cannot be parsed exits 2; Ctrl-C exits 130, SIGTERM
143 and SIGHUP 129, each after stopping the workers, with OUTPUT holding only whole lines, so the
same command goes on where it stopped (``kill -9`` leaves whole lines too).
"""

from __future__ import annotations

from gpt2_edge.runtime import guarded_imports

# Ctrl-C while the libraries load ends the command as a later one does: 130, no traceback
with guarded_imports():
    import importlib.util
    import signal
    from pathlib import Path
    from typing import Annotated

    import typer
    from gpt2_edge.runtime import (
        VERSION_HELP,
        EdgeCommand,
        EdgeError,
        run_app,
        show_version,
        signals_as_interrupts,
        user_errors,
    )

# gpt2-batch answers bodies with the server's own code, which needs the serve extra.
SERVE_MODULES = ("starlette", "uvicorn", "prometheus_client")

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(cls=EdgeCommand)
def batch(
    # Strings, not Paths: typer turns "" into ".", which would then be read (or written) as the
    # current folder.
    input: Annotated[
        str,
        typer.Argument(
            help="Requests in OpenAI's batch file format (JSON lines).", show_default=False
        ),
    ],
    output: Annotated[
        str,
        typer.Option(
            "--output",
            "-o",
            help="Results in OpenAI's batch output format; run again with the same file to go "
            "on where a run stopped.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Bundle folder, or the name of one in models/ (default: as gpt2-serve).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="Generators at work: processes on this machine, or Ray actors."),
    ] = 1,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run on the Ray cluster at this address (host:port, or auto), or 'local' to "
            "start one on this machine; needs the ray extra."
        ),
    ] = None,
    max_batch: Annotated[
        int | None,
        typer.Option(
            help="Most rows each generator decodes together (default: gpt2-serve's, 16).",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="onnxruntime threads per generator (default: the CPUs shared out)."),
    ] = None,
    provider: Annotated[
        str | None, typer.Option(help="cpu, cuda or auto (default auto).", show_default=False)
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help=VERSION_HELP)
    ] = False,
) -> None:
    """Run a batch file of OpenAI completion and chat requests through a bundle."""
    interrupted = "\nInterrupted; OUTPUT holds every finished request: run again to go on."
    with user_errors(interrupted), signals_as_interrupts(signal.SIGTERM, signal.SIGHUP):
        missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise EdgeError(
                f"gpt2-batch needs the serve extra ({', '.join(missing)} missing): "
                "pip install 'gpt2-edge[serve]'."
            )
        for name, value in (("INPUT", input), ("--output", output), ("--model", model)):
            if value is not None and not value.strip():
                raise EdgeError(f"{name} is empty; give a path.")
        from .job import run_batch

        run_batch(
            Path(input),
            Path(output),
            Path(model) if model is not None else None,
            workers,
            ray,
            max_batch,
            threads,
            provider,
            log=lambda line: typer.echo(line, err=True),
        )


def main() -> None:
    """Entry point of ``gpt2-batch``."""
    run_app(app, prog_name="gpt2-batch")
