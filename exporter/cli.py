"""``gpt2-export``: parse the flags, call :func:`export_bundle`, print a summary table.

User errors become one sentence on stderr and exit code 1; Ctrl-C exits 130. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from gpt2_edge.runtime.bundle import MANIFEST
from gpt2_edge.runtime.errors import EdgeError

from .pipeline import DEFAULT_MODEL, export_bundle
from .quantize import TARGETS

OUTPUT_DEFAULT = "models/<name>, or models/<name>-int8 with --quantize"
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def export(
    model: Annotated[
        str, typer.Argument(help="Hub id (gpt2, distilgpt2, gpt2-medium, ...) or a local folder.")
    ] = DEFAULT_MODEL,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help=f"Bundle folder (default: {OUTPUT_DEFAULT})."),
    ] = None,
    quantize: Annotated[
        bool, typer.Option("--quantize", "-q", help="Dynamic int8 quantization.")
    ] = False,
    bits: Annotated[int, typer.Option(help="Quantization bits (8).")] = 8,
    target: Annotated[
        str, typer.Option(help=f"Quantization target: {'|'.join(TARGETS)}; auto reads this CPU.")
    ] = "auto",
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset (default: Optimum's choice).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Compare with transformers.")
    ] = True,
) -> None:
    """Export a GPT-2 checkpoint to a verified ONNX bundle (model, tokenizer, manifest)."""
    try:
        folder = export_bundle(
            model,
            output,
            quantize=quantize,
            bits=bits,
            target=target,
            opset=opset,
            force=force,
            verify=verify,
        )
    except EdgeError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("Interrupted; no bundle was written.", err=True)
        raise typer.Exit(130) from None
    print_summary(folder)


def print_summary(folder: Path) -> None:
    """A table of the bundle's files, precision and verification figures, on stdout."""
    from rich.console import Console
    from rich.table import Table

    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    table = Table(title=f"Bundle {folder}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, entry in manifest["files"].items():
        table.add_row(name, f"{entry['size'] / 2**20:,.1f} MiB")
    table.add_row("precision", describe_precision(manifest["precision"]))
    for label, value in describe_verification(manifest.get("verification", {})):
        table.add_row(label, value)
    Console(soft_wrap=True).print(table)


def describe_precision(precision: dict[str, Any]) -> str:
    if precision.get("dtype") != "int8":
        return str(precision.get("dtype", "float32"))
    channel = "per-channel" if precision.get("per_channel") else "per-tensor"
    return f"int8 {precision.get('method')} {channel}, target {precision.get('target')}"


def describe_verification(figures: dict[str, Any]) -> list[tuple[str, str]]:
    if not figures or figures.get("skipped"):
        return [("verification", "skipped (--no-verify)")]
    rows = [
        ("max |logit diff|", f"{figures['max_abs_logit_diff']:.3g} vs PyTorch fp32"),
        ("top-1 agreement", f"{figures['top1_agreement']:.1%} of {figures['positions']} positions"),
    ]
    ppl = figures.get("perplexity", {})
    if "bundle" in ppl and "reference" in ppl:
        rows.append(("perplexity", f"{ppl['bundle']:.3f} (PyTorch {ppl['reference']:.3f})"))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="gpt2-export")
