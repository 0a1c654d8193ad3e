"""The export, step by step, from one :class:`~gpt2_edge.exporter.plan.ExportPlan`:

resolve -> Optimum's ONNX graph -> the fused graph (parity-checked) -> the precision recipe ->
place model.onnx -> tokenizer.json -> verify against transformers -> quality gate against fp32 ->
genai_config.json (for onnxruntime-genai) -> bundle.json (written once, listing every file, then
opened as a user would) -> atomic rename into place.

Everything is written into a hidden folder beside the output (see ``writing/staging.py``), so
the output
path holds either a complete, verified bundle or nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gpt2_edge.runtime.contract.bundle import Bundle, load_bundle
from gpt2_edge.runtime.contract.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest, write_manifest
from gpt2_edge.runtime.contract.precision import FLOAT32

from .disk_errors import check_free_space
from .graphs import OPTIMUM_GRAPH
from .onnx_files import place_model
from .plan import DEFAULT_MODEL, ExportPlan, check_types, default_output, make_plan
from .progress import Steps
from .recipes import apply_precision
from .source import Source, check_weights, local_folder, resolve_source
from .writing.genai_config import write_genai_files
from .writing.manifest import build_manifest, bundle_files
from .writing.staging import check_output, mark, staging
from .writing.tokenizer_files import check_tokenizer, write_tokenizer

__all__ = ["DEFAULT_MODEL", "default_output", "export_bundle", "run_plan"]
# Peak disk use as a multiple of the weights. fp32: Optimum's graph and the fused one side by side
# during the parity check. Reduced precision: the fused fp32 graph (kept as the gate's reference),
# its untied copy for the quantizer, and the quantized result.
SPACE_FACTOR = {False: 2.1, True: 2.6}


def export_bundle(
    model: str = DEFAULT_MODEL,
    output: str | Path | None = None,
    *,
    progress: bool = True,
    **options: Any,
) -> Path:
    """Export ``model`` (hub id or checkpoint folder) to a bundle folder and return its path.

    Args:
        model: hub id (default ``gpt2``) or a local GPT-2 checkpoint folder.
        output: bundle folder; default ``models/<name>``, or ``models/<name>-int8``, ``-int4``,
            ``-fp16``.
        progress: print one line per step on stderr (default on).
        **options: the flags of ``gpt2-export`` by the same names (:func:`~.plan.make_plan`):
            ``quantize`` (default off), ``bits`` 8 (default: dynamic int8) or 4 (weight-only
            int4), ``dtype`` ``fp32`` (default) or ``fp16``, ``target`` ``portable`` (default:
            right on every x86-64 with AVX2 and ARM64), ``auto`` (this CPU), ``avx2``,
            ``avx512``, ``avx512_vnni`` or ``arm64``; ``graph`` ``fused`` (default) or
            ``optimum``; ``kv_cache`` ``auto`` (default: float16 for int8/int4 on the fused
            graph, else as the weights), ``float16`` or ``float32``; ``opset``; ``force``
            (replace an existing bundle; default off);
            ``verify`` (compare with transformers and run the quality gate; default on);
            ``block_size`` (int4, default 32) and ``accuracy_level`` (int4, default 4);
            ``eval_text``, ``max_ppl_increase`` (default 0.05) and ``min_greedy_agreement``
            (default 0.25) for the quality gate.

    Raises:
        ExportError: for anything the user can fix; nothing is left at ``output`` then, and
            whatever was there is untouched unless it was a bundle that ``force`` replaced.
    """
    check_types({"model": model, "output": output, **options})  # an unknown option too
    return run_plan(make_plan(model, output, **options), Steps(progress))


def run_plan(plan: ExportPlan, steps: Steps) -> Path:
    """Carry out ``plan``; return the bundle folder."""
    out = plan.output
    check_output(out, plan.force, local_folder(plan.model))
    with steps.step(f"Resolve {plan.model}"):
        source = resolve_source(plan.model)
        check_output(out, plan.force, source.path)  # a hub snapshot's folder is known only now
        check_weights(source)  # then the config against the weights' shapes
        check_tokenizer(source.path)
    check_free_space(out, int(source.weight_bytes() * SPACE_FACTOR[plan.precision.reduced]))
    with staging(out, plan.force) as folder:
        _build(plan, source, folder, steps)
    return out


def _build(plan: ExportPlan, source: Source, folder: Path, steps: Steps) -> None:
    work = folder / ".work"
    work.mkdir()
    mark(work)  # an export's own leftover, should one ever be found in a bundle folder
    fp32, graph = _fp32_graph(plan, source, work, steps)
    model_path, precision = fp32, FLOAT32
    if plan.precision.reduced:
        with steps.step(plan.precision.step_title(graph["kind"])):
            model_path, precision = apply_precision(plan.precision, fp32, work, graph["kind"])
    with steps.step("Place model.onnx"):
        place_model(model_path, folder / MODEL_FILE)
    with steps.step("Write tokenizer.json"):
        write_tokenizer(source.path, folder / TOKENIZER_FILE)
    name, recipe, origin = plan.output.name, precision.to_json(), source.describe()
    manifest = build_manifest(folder, name, source.path, recipe, origin, graph)
    if plan.verify:
        manifest.verification = _verify(plan, source, Bundle(folder, manifest), fp32, steps)
    else:
        manifest.verification = {"skipped": True}
    with steps.step("Write genai_config.json (onnxruntime-genai)"):
        write_genai_files(folder, manifest)
    with steps.step("Write bundle.json"):
        manifest.files = bundle_files(folder)
        write_manifest(folder, manifest)
        load_bundle(folder, check_hashes=True)  # the bundle as written opens, files and all
    shutil.rmtree(work)  # the fp32 graph is not part of a reduced-precision bundle


def _fp32_graph(
    plan: ExportPlan, source: Source, work: Path, steps: Steps
) -> tuple[Path, dict[str, Any]]:
    """Optimum's export, then (by default) the fused graph checked against it."""
    from .graphs.optimum import export_onnx

    with steps.step("Export ONNX graph with KV cache (Optimum, text-generation-with-past)"):
        onnx_path = export_onnx(source.path, work / "fp32", plan.opset)
    if plan.graph != "fused":
        return onnx_path, dict(OPTIMUM_GRAPH)
    from .checks.parity import check_fused
    from .graphs.fused import build_fused

    with steps.step("Optimize: fused decoder (GroupQueryAttention), parity vs Optimum"):
        fused_path, graph = build_fused(source.path, work / "fused")
        if fused_path is None:  # the builder does not cover this checkpoint: Optimum's stays
            return onnx_path, graph
        graph["parity_vs_optimum"] = check_fused(fused_path, onnx_path, source.path)
    shutil.rmtree(onnx_path.parent)  # Optimum's graph was only the parity reference
    return fused_path, graph


def _verify(
    plan: ExportPlan, source: Source, bundle: Bundle, fp32: Path, steps: Steps
) -> dict[str, Any]:
    """Verification figures (and the quality gate's, for a reduced precision) of ``bundle``."""
    from gpt2_edge.runtime.graph.session import Session

    from .checks.verify import verify_bundle

    manifest: Manifest = bundle.manifest
    session = Session(bundle, provider="cpu")  # the gate measures the same session
    with steps.step("Verify against transformers"):
        dtype = str(manifest.precision.get("dtype", "float32"))
        figures = verify_bundle(bundle.path, source.path, dtype, session)
    if plan.precision.reduced:
        from .checks.parity import graph_session
        from .checks.quality import run_gate

        with steps.step(f"Quality gate vs fp32 ({plan.gate.title()})"):
            reference = graph_session(fp32, source.path, manifest.graph)
            figures["quality"] = run_gate(session, reference, plan.gate)
    return figures
