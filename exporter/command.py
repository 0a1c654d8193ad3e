"""The ``gpt2-export`` command: its flags, the call to :func:`export_bundle`, the summary table.

Imported by ``cli.main`` once it knows the export extra is installed (this module's imports
need onnx); user errors become one sentence on stderr and exit code 1, usage errors one line and
exit code 2, Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from gpt2_edge.runtime.cli.errors import VERSION_HELP, EdgeCommand, show_version, user_errors
from gpt2_edge.runtime.contract.manifest import MANIFEST
from gpt2_edge.runtime.contract.precision import Precision

from .checks.gate import DEFAULT_MAX_PPL_INCREASE, DEFAULT_MIN_GREEDY_AGREEMENT
from .pipeline import DEFAULT_MODEL, export_bundle
from .progress import human_size
from .recipes import DTYPES, KV_CACHES
from .recipes.nbits import ACCURACY_LEVELS, DEFAULT_ACCURACY_LEVEL, DEFAULT_BLOCK_SIZE
from .recipes.targets import CHOICES as TARGETS
from .recipes.targets import DEFAULT_TARGET
from .summary import describe_quality

OUTPUT_DEFAULT = "models/<name>, or models/<name>-int8, -int4 or -fp16"
GATE = "For int8, int4 and fp16 exports, with verification."
INTERRUPTED = "Interrupted; no bundle was written."
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command(name="gpt2-export", cls=EdgeCommand)  # the name CliRunner shows too
def export(
    model: Annotated[
        str, typer.Argument(help="Hub id (gpt2, distilgpt2, gpt2-medium, ...) or a local folder.")
    ] = DEFAULT_MODEL,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help=f"Bundle folder (default: {OUTPUT_DEFAULT})."),
    ] = None,
    quantize: Annotated[
        bool, typer.Option("--quantize", "-q", help="Quantize: int8 unless --bits 4.")
    ] = False,
    bits: Annotated[
        int | None,
        typer.Option(
            help="8: dynamic int8 (the default with --quantize); 4: weight-only int4 "
            "(MatMulNBits). Implies --quantize."
        ),
    ] = None,
    dtype: Annotated[
        str, typer.Option(help=f"{'|'.join(DTYPES)}: fp16 = float16 weights and KV cache.")
    ] = "fp32",
    # Precision-specific and gate options default to None (not given): make_plan refuses one
    # given for an export that would ignore it, and fills in the defaults the help states.
    block_size: Annotated[
        int | None,
        typer.Option(
            help="int4 only: weights per scale (a power of two >= 16; default "
            f"{DEFAULT_BLOCK_SIZE})."
        ),
    ] = None,
    accuracy_level: Annotated[
        int | None,
        typer.Option(
            help=f"int4 only: MatMulNBits compute type {ACCURACY_LEVELS}: 0 onnxruntime's default, "
            f"1 fp32, 2 fp16, 3 bf16, 4 int8 (fastest on AVX2/VNNI CPUs; default "
            f"{DEFAULT_ACCURACY_LEVEL})."
        ),
    ] = None,
    eval_text: Annotated[
        Path | None,
        typer.Option(help=f"A UTF-8 text the quality gate also measures perplexity on. {GATE}"),
    ] = None,
    max_ppl_increase: Annotated[
        float | None,
        typer.Option(
            help="Quality gate: fail an export whose perplexity exceeds the fp32 graph's by more "
            f"than this fraction (0.05 = 5%; default {DEFAULT_MAX_PPL_INCREASE}). {GATE}"
        ),
    ] = None,
    min_greedy_agreement: Annotated[
        float | None,
        typer.Option(
            help="Quality gate: fail an export whose greedy continuations of 4 prompts follow "
            "the fp32 graph's for less than this fraction of their 24 tokens on average "
            f"(default {DEFAULT_MIN_GREEDY_AGREEMENT}; 0 turns it off). {GATE}"
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help=f"int8 only: the CPUs the bundle is for: {'|'.join(TARGETS)}. {DEFAULT_TARGET} "
            "(default) is right on every x86-64 with AVX2 and on ARM64; auto specialises for "
            "this CPU."
        ),
    ] = None,
    kv_cache: Annotated[
        str,
        typer.Option(
            help=f"{'|'.join(KV_CACHES)}: the KV cache's element type. auto (default): float16 "
            "for quantized bundles (--quantize, --bits) on the fused graph (half the cache's "
            "memory and traffic at long context), float32 for them on --graph optimum and for "
            "fp32 bundles (exact). "
            "An fp16 bundle's cache is always float16."
        ),
    ] = "auto",
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset (default: Optimum's choice).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an existing output, if it is a gpt2-edge bundle (or an empty folder).",
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Compare with transformers, and run the quality gate (--no-verify skips both).",
        ),
    ] = True,
    graph: Annotated[
        str,
        typer.Option(
            help="fused: rebuilt decoder with GroupQueryAttention and an in-place KV cache, "
            "checked against the Optimum graph; optimum: Optimum's graph as exported."
        ),
    ] = "fused",
    version: Annotated[
        bool,
        typer.Option("--version", callback=show_version, is_eager=True, help=VERSION_HELP),
    ] = False,
) -> None:
    """Export a GPT-2 checkpoint to a verified ONNX bundle (model, tokenizer, manifest)."""
    with user_errors(interrupted=INTERRUPTED):
        folder = export_bundle(
            model,
            output,
            quantize=quantize or bits is not None,
            bits=8 if bits is None else bits,
            dtype=dtype,
            block_size=block_size,
            accuracy_level=accuracy_level,
            eval_text=eval_text,
            max_ppl_increase=max_ppl_increase,
            min_greedy_agreement=min_greedy_agreement,
            target=target,
            kv_cache=kv_cache,
            opset=opset,
            force=force,
            verify=verify,
            graph=graph,
        )
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
        table.add_row(name, human_size(entry["size"]))
    table.add_row("precision", Precision.from_json(manifest["precision"]).describe())
    for label, value in describe_verification(manifest.get("verification", {})):
        table.add_row(label, value)
    Console(soft_wrap=True).print(table)


def describe_verification(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the verification figures and the quality gate's, in words."""
    if not figures or figures.get("skipped"):
        return [("verification", "skipped (--no-verify)")]
    rows = [
        ("max |logit diff|", f"{figures['max_abs_logit_diff']:.3g} vs PyTorch fp32"),
        ("top-1 agreement", f"{figures['top1_agreement']:.1%} of {figures['positions']} positions"),
    ]
    ppl = figures.get("perplexity", {})
    if "bundle" in ppl and "reference" in ppl:
        rows.append(("perplexity", f"{ppl['bundle']:.3f} (PyTorch {ppl['reference']:.3f})"))
    return rows + describe_quality(figures.get("quality", {}))
