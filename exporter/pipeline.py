"""The export, step by step: resolve, ONNX, quantize, tokenizer, manifest, verify, move into place.

Everything is written into a hidden folder beside the output (see ``staging.py``), so the output
path holds either a complete, verified bundle or nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpt2_edge.runtime.bundle import MODEL_FILE, TOKENIZER_FILE, write_manifest

from .errors import ExportError
from .manifest import build_manifest
from .onnx_files import footprint, needs_external_data, place_model
from .progress import Steps
from .quantize import check_bits, quantization_settings, resolve_target
from .source import Source, model_name, resolve_source
from .staging import check_free_space, check_output, staging
from .tokenizer_files import write_tokenizer

DEFAULT_MODEL = "gpt2"
MODELS_DIR = Path("models")  # relative to the current working directory
INT8_SUFFIX = "-int8"
FP32 = {"dtype": "float32", "method": None}
# Peak disk use as a multiple of the weights: the fp32 graph, plus the int8 one while quantizing.
SPACE_FACTOR = {False: 1.1, True: 1.5}


def default_output(model: str, quantize: bool) -> Path:
    """``models/<name>`` for fp32, ``models/<name>-int8`` with quantization."""
    return MODELS_DIR / (model_name(model) + (INT8_SUFFIX if quantize else ""))


def export_bundle(
    model: str = DEFAULT_MODEL,
    output: str | Path | None = None,
    *,
    quantize: bool = False,
    bits: int = 8,
    target: str = "auto",
    opset: int | None = None,
    force: bool = False,
    verify: bool = True,
    progress: bool = True,
) -> Path:
    """Export ``model`` (hub id or checkpoint folder) to a bundle folder and return its path.

    Args:
        model: hub id (default ``gpt2``) or a local GPT-2 checkpoint folder.
        output: bundle folder; default ``models/<name>`` or ``models/<name>-int8``.
        quantize: dynamic int8 quantization (default off: fp32).
        bits: quantization bits; only 8 is supported.
        target: ``auto`` (default: detect from this CPU), ``avx2``, ``avx512``, ``avx512_vnni``
            or ``arm64``.
        opset: ONNX opset; default Optimum's choice for GPT-2.
        force: replace an existing output folder (default off).
        verify: compare the bundle with the transformers model (default on).
        progress: print one line per step on stderr (default on).

    Raises:
        ExportError: for anything the user can fix; nothing is left at ``output`` then.
    """
    if quantize:
        check_bits(bits)
        target = resolve_target(target)
    out = Path(output) if output is not None else default_output(model, quantize)
    check_output(out, force)
    steps = Steps(progress)
    with steps.step(f"Resolve {model}"):
        source = resolve_source(model)
    if out.resolve() == source.path.resolve():
        raise ExportError(
            f"The output {out} is the checkpoint folder itself; choose another --output."
        )
    check_free_space(out, int(source.weight_bytes() * SPACE_FACTOR[quantize]))
    with staging(out, force) as tmp:
        _build(source, tmp, steps, quantize, target, opset, verify, out.name)
    return out


def _build(
    source: Source,
    folder: Path,
    steps: Steps,
    quantize: bool,
    target: str,
    opset: int | None,
    verify: bool,
    name: str,
) -> None:
    from .onnx_export import export_onnx

    work = folder / ".work"
    with steps.step("Export ONNX graph with KV cache (Optimum, text-generation-with-past)"):
        onnx_path = export_onnx(source.path, work / "fp32", opset)
    precision = FP32
    if quantize:
        from .quantize import quantize_model

        with steps.step(f"Quantize to int8 (dynamic, per-channel, {target})"):
            external = needs_external_data(footprint(onnx_path))
            onnx_path = quantize_model(onnx_path, work / "int8", target, external)
            precision = quantization_settings(target)
    with steps.step("Place model.onnx"):
        place_model(onnx_path, folder / MODEL_FILE)
        shutil.rmtree(work)  # the fp32 graph is not part of an int8 bundle
    with steps.step("Write tokenizer.json"):
        write_tokenizer(source.path, folder / TOKENIZER_FILE)
    with steps.step("Write bundle.json"):
        manifest = build_manifest(
            folder, name, source.config, source.path, precision, source.describe()
        )
        write_manifest(folder, manifest)
    if verify:
        from .verify import verify_bundle

        with steps.step("Verify against transformers"):
            manifest.verification = verify_bundle(folder, source.path, precision["dtype"])
            write_manifest(folder, manifest)
    else:
        manifest.verification = {"skipped": True}
        write_manifest(folder, manifest)
