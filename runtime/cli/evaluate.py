"""``gpt2-eval``: perplexity of a bundle on a text file (sliding window, torch-free)."""

from __future__ import annotations

import sys

from .startup import guarded_imports

# Ctrl-C while the libraries load ends the command as a later one does: 130, no traceback
with guarded_imports():
    import json
    from pathlib import Path
    from typing import Annotated

    import typer

    from ..api import check_runtime_arguments, load, pick_model
    from ..generation.evaluate import DEFAULT_STRIDE, PerplexityResult, evaluate_text, read_text
    from .errors import VERSION_HELP, EdgeCommand, run_app, show_version, user_errors

app = typer.Typer(add_completion=False, help=__doc__, pretty_exceptions_enable=False)


def _progress(enabled: bool):  # -> contextmanager yielding a (done, total) callback
    """A rich progress bar on stderr (so ``--json`` stdout stays machine-readable)."""
    from contextlib import contextmanager

    @contextmanager
    def bar():
        if not enabled:
            yield None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as progress:
            task = progress.add_task("windows", total=None)

            def update(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            yield update

    return bar()


def _print_table(result: PerplexityResult, model: Path, text: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model.name} on {text.name}", show_header=False)
    table.add_row("perplexity", f"{result.perplexity:.4f}")
    table.add_row("mean NLL", f"{result.mean_nll:.5f}")
    table.add_row("tokens", str(result.tokens))
    table.add_row("scored tokens", str(result.scored_tokens))
    table.add_row("windows", f"{result.windows} (context {result.context}, stride {result.stride})")
    speed = f"{result.tokens_per_second:,.0f} (scored tokens in {result.seconds:.2f} s)"
    table.add_row("tokens/s", speed)
    Console().print(table)


@app.command(cls=EdgeCommand)
def eval_command(
    text: Annotated[
        Path, typer.Option("--text", help="UTF-8 text file to score ('-': standard input).")
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="Bundle folder, the name of one in models/, or an Optimum export (default: the "
            "bundle in models/ that gpt2-generate would take).",
        ),
    ] = None,
    context: Annotated[
        int | None,
        typer.Option(help="Window length in tokens (default: the model's context)."),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            help=f"Window step, 2 tokens to the context (default: min({DEFAULT_STRIDE}, context))."
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", help="Score only the first N tokens (default: all)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    provider: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[
        int | None,
        typer.Option(help="Intra-op threads, 1 to the CPUs available (default: onnxruntime's)."),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help=VERSION_HELP)
    ] = False,
) -> None:
    """Perplexity of MODEL on TEXT with the transformers guide's sliding window."""
    with user_errors(), _progress(sys.stderr.isatty()) as update:
        choice = check_runtime_arguments(provider, threads)
        body = read_text(text)
        path, choice, notice = pick_model(model, choice)
        if notice:
            typer.echo(notice, err=True)
        session = load(path, choice, threads).session
        result = evaluate_text(
            session, body, str(text), context, stride, max_tokens, on_window=update
        )
    if json_output:
        typer.echo(json.dumps({"model": str(path), "text": str(text), **result.to_dict()}))
    else:
        _print_table(result, path, text)


def main() -> None:
    """Console-script entry point (``gpt2-eval``)."""
    run_app(app)


if __name__ == "__main__":
    main()
