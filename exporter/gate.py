"""The export's quality gate: the finished bundle against the fp32 graph it was made from.

Runs after quantizing (or converting to fp16) and verifying, inside the staging folder, so a
failure leaves no bundle. The reference is the fp32 graph the precision step read (Optimum's or
the fused one), made loadable as a bundle in place: its folder gets ``tokenizer.json`` and a
``bundle.json`` so both sides run through the runtime's ``Session``, with the same windows.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from gpt2_edge.runtime.bundle import MODEL_FILE, TOKENIZER_FILE, read_manifest, write_manifest
from gpt2_edge.runtime.session import Session

from .errors import ExportError
from .precision import FP32_PRECISION
from .quality import DEFAULT_MAX_PPL_INCREASE

__all__ = ["DEFAULT_MAX_PPL_INCREASE", "check_gate_options", "describe_quality", "run_gate"]


def check_gate_options(eval_text: str | Path | None, max_increase: float) -> None:
    """Fail before any work when the gate's options cannot be used."""
    if not math.isfinite(max_increase):
        raise ExportError(f"--max-ppl-increase must be a finite number, got {max_increase}.")
    if eval_text is not None and not Path(eval_text).is_file():
        raise ExportError(f"The --eval-text file {eval_text} does not exist.")


def reference_bundle(
    model_path: Path,
    bundle: Path,
    name: str,
    config: dict[str, Any],
    checkpoint: Path,
    source: dict[str, Any],
    graph: dict[str, Any],
) -> Path:
    """Make the folder of the fp32 ``model_path`` loadable by the runtime; return it."""
    from .manifest import build_manifest

    folder = model_path.parent
    if model_path.name != MODEL_FILE:  # export_onnx and the fused builder both write model.onnx
        raise ExportError(f"The fp32 graph {model_path} is not named {MODEL_FILE}.")
    shutil.copyfile(bundle / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    manifest = build_manifest(
        folder,
        f"{name} (fp32 reference)",
        config,
        checkpoint,
        dict(FP32_PRECISION),
        source,
        hashes=False,  # opened with check_hashes=False by the gate: hashing would be wasted
    )
    manifest.graph = dict(graph)
    write_manifest(folder, manifest)
    return folder


def run_gate(
    bundle: Session | Path,
    reference: Path,
    eval_text: str | Path | None = None,
    max_increase: float = DEFAULT_MAX_PPL_INCREASE,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure ``bundle`` (a folder or an open Session) against the fp32 ``reference`` folder
    and apply the threshold.

    Returns:
        The figures for bundle.json ``verification["quality"]``.

    Raises:
        ExportError: perplexity grew more than ``max_increase`` on the built-in text or on
            ``eval_text``; the message holds the figure.
    """
    from .quality import gate_report, measure_quality

    report = measure_quality(reference, bundle, eval_text=eval_text, threads=threads)
    report["reference"] = "the fp32 graph this bundle was made from (onnxruntime CPU)"
    report["max_ppl_increase"] = max_increase
    manifest = bundle.bundle.manifest if isinstance(bundle, Session) else read_manifest(bundle)
    gate_report(report, max_increase, f"The {manifest.precision.get('dtype', '?')} export")
    return report


def describe_quality(quality: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for the CLI summary table."""
    rows = []
    limit = quality.get("max_ppl_increase", DEFAULT_MAX_PPL_INCREASE)
    for key, label in (("builtin", "built-in text"), ("user_text", "--eval-text")):
        if key not in quality:
            continue
        q = quality[key]
        rows.append(
            (
                f"perplexity ({label})",
                f"{q['perplexity']:.3f} vs fp32 {q['ref_perplexity']:.3f} "
                f"({q['ppl_increase']:+.2%}; limit {limit:+.1%}), {q['tokens']} tokens",
            )
        )
        rows.append((f"top-1 vs fp32 ({label})", f"{q['top1_agreement']:.2%}"))
    greedy = quality.get("greedy")
    if greedy:
        rows.append(
            (
                "greedy vs fp32",
                f"{greedy['greedy_exact']:.0%} of {greedy['greedy_prompts']} prompts identical "
                f"over {greedy['greedy_new_tokens']} tokens "
                f"({greedy['greedy_prefix_agreement']:.0%} shared prefix)",
            )
        )
    return rows
