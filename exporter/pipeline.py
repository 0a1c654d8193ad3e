"""The export, step by step: resolve, ONNX, quantize, tokenizer, manifest, verify, move into place.

Everything is written into a hidden folder beside the output (see ``staging.py``), so the output
path holds either a complete, verified bundle or nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpt2_edge.runtime.bundle import MODEL_FILE, TOKENIZER_FILE, write_manifest
from gpt2_edge.runtime.precision import FLOAT32

from .errors import ExportError
from .graphs import GRAPHS, OPTIMUM_GRAPH
from .gate import DEFAULT_MAX_PPL_INCREASE, DEFAULT_MIN_GREEDY_AGREEMENT, check_gate_options
from .manifest import build_manifest
from .onnx_export import check_opset
from .onnx_files import place_model
from .recipes import PrecisionChoice, apply_precision, choose_precision
from .recipes.nbits import DEFAULT_ACCURACY_LEVEL, DEFAULT_BLOCK_SIZE
from .recipes.targets import DEFAULT_TARGET
from .progress import Steps
from .source import Source, check_weights, local_folder, model_name, resolve_source
from .staging import check_free_space, check_output, staging
from .tokenizer_files import check_tokenizer, write_tokenizer

DEFAULT_MODEL = "gpt2"
MODELS_DIR = Path("models")  # relative to the current working directory
INT8_SUFFIX = "-int8"
# Peak disk use as a multiple of the weights. fp32: Optimum's graph and the fused one side by side
# during the parity check. Reduced precision: the fused fp32 graph (kept as the gate's reference),
# its untied copy for the quantizer, and the quantized result.
SPACE_FACTOR = {False: 2.1, True: 2.6}


def default_output(model: str, quantize: bool = False, suffix: str | None = None) -> Path:
    """``models/<name>`` (fp32), ``models/<name>-int8`` (quantize) or ``models/<name><suffix>``."""
    tail = suffix if suffix is not None else (INT8_SUFFIX if quantize else "")
    return MODELS_DIR / (model_name(model) + tail)


def export_bundle(
    model: str = DEFAULT_MODEL,
    output: str | Path | None = None,
    *,
    quantize: bool = False,
    bits: int = 8,
    target: str = DEFAULT_TARGET,
    opset: int | None = None,
    force: bool = False,
    verify: bool = True,
    progress: bool = True,
    graph: str = "fused",
    dtype: str = "fp32",
    block_size: int = DEFAULT_BLOCK_SIZE,
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL,
    eval_text: str | Path | None = None,
    max_ppl_increase: float = DEFAULT_MAX_PPL_INCREASE,
    min_greedy_agreement: float = DEFAULT_MIN_GREEDY_AGREEMENT,
) -> Path:
    """Export ``model`` (hub id or checkpoint folder) to a bundle folder and return its path.

    Args:
        model: hub id (default ``gpt2``) or a local GPT-2 checkpoint folder.
        output: bundle folder; default ``models/<name>`` or ``models/<name>-int8``.
        quantize: quantize (default off: fp32); ``bits`` says how.
        bits: 8 (default: dynamic int8) or 4 (weight-only int4, ``MatMulNBits``).
        target: ``auto`` (default: detect from this CPU), ``avx2``, ``avx512``, ``avx512_vnni``
            or ``arm64``.
        opset: ONNX opset; default Optimum's choice for GPT-2.
        force: replace an existing output folder (default off).
        verify: compare the bundle with the transformers model (default on).
        progress: print one line per step on stderr (default on).
        graph: ``fused`` (default: the fused GroupQueryAttention decoder, parity-checked against
            the Optimum export) or ``optimum`` (Optimum's graph as exported).
        dtype: ``fp32`` (default) or ``fp16`` (float16 weights and KV cache; not with quantize).
        block_size: int4 weights per scale (default 32).
        accuracy_level: int4 MatMulNBits compute type (default 4: int8 compute).
        eval_text: a UTF-8 file the quality gate measures besides its built-in text.
        max_ppl_increase: the quality gate's largest relative perplexity increase of an int8,
            int4 or fp16 bundle over the fp32 graph (default 0.05); runs only with ``verify``.
        min_greedy_agreement: the quality gate's smallest mean share of each greedy continuation
            that matches the fp32 graph's (default 0.25); runs only with ``verify``.

    Raises:
        ExportError: for anything the user can fix; nothing is left at ``output`` then, and
            whatever was there is untouched unless it was a bundle that ``force`` replaced.
    """
    # Everything that can be checked is checked here, before the first slow step.
    if graph not in GRAPHS:
        raise ExportError(f"Unknown graph '{graph}'; choose one of {', '.join(GRAPHS)}.")
    choice = choose_precision(quantize, bits, dtype, target, block_size, accuracy_level)
    check_gate_options(eval_text, max_ppl_increase, min_greedy_agreement)
    out = Path(output) if output is not None else default_output(model, suffix=choice.suffix)
    check_output(out, force, local_folder(model))
    check_opset(opset)
    steps = Steps(progress)
    with steps.step(f"Resolve {model}"):
        source = resolve_source(model)
        check_output(out, force, source.path)  # a hub snapshot's folder is known only now
        check_weights(source.path)
        check_tokenizer(source.path)
    check_free_space(out, int(source.weight_bytes() * SPACE_FACTOR[choice.reduced]))
    with staging(out, force) as tmp:
        gate = (eval_text, max_ppl_increase, min_greedy_agreement)
        _build(source, tmp, steps, choice, opset, verify, out.name, graph, gate)
    return out


def _build(
    source: Source,
    folder: Path,
    steps: Steps,
    choice: PrecisionChoice,
    opset: int | None,
    verify: bool,
    name: str,
    graph: str = "fused",
    gate: tuple[str | Path | None, float, float] = (
        None,
        DEFAULT_MAX_PPL_INCREASE,
        DEFAULT_MIN_GREEDY_AGREEMENT,
    ),
) -> None:
    from .onnx_export import export_onnx

    work = folder / ".work"
    with steps.step("Export ONNX graph with KV cache (Optimum, text-generation-with-past)"):
        onnx_path = export_onnx(source.path, work / "fp32", opset)
    precision, graph_info = FLOAT32, dict(OPTIMUM_GRAPH)
    if graph == "fused":
        from .graphs.fused import build_fused

        with steps.step("Optimize: fused decoder (GroupQueryAttention), parity vs Optimum"):
            fused_path, graph_info = build_fused(source.path, onnx_path, work / "fused")
        if fused_path is not None:  # None: the builder does not cover this checkpoint
            shutil.rmtree(onnx_path.parent)  # Optimum's graph was only the parity reference
            onnx_path = fused_path
    reference = onnx_path  # the fp32 graph: the quality gate's reference
    if choice.reduced:
        with steps.step(choice.step_title(graph_info["kind"])):
            onnx_path, precision = apply_precision(choice, onnx_path, work, graph_info["kind"])
    with steps.step("Place model.onnx"):
        place_model(onnx_path, folder / MODEL_FILE)
    with steps.step("Write tokenizer.json"):
        write_tokenizer(source.path, folder / TOKENIZER_FILE)
    with steps.step("Write bundle.json"):
        manifest = build_manifest(
            folder, name, source.config, source.path, precision.to_json(), source.describe()
        )
        manifest.graph = graph_info
        write_manifest(folder, manifest)
    if verify:
        from .verify import open_bundle, verify_bundle

        with steps.step("Verify against transformers"):
            session = open_bundle(folder)  # the gate measures the same session
            manifest.verification = verify_bundle(folder, source.path, precision.dtype, session)
            write_manifest(folder, manifest)
        if choice.reduced:
            from .gate import reference_bundle, run_gate

            limits = f"perplexity +{gate[1]:.1%} at most, greedy agreement {gate[2]:.0%} at least"
            with steps.step(f"Quality gate vs fp32 ({limits})"):
                info = (name, source.config, source.path, source.describe(), graph_info)
                ref = reference_bundle(reference, folder, *info)
                manifest.verification["quality"] = run_gate(session, ref, *gate)
                write_manifest(folder, manifest)
    else:
        manifest.verification = {"skipped": True}
        write_manifest(folder, manifest)
    shutil.rmtree(work)  # the fp32 graph is not part of a quantized bundle
