"""Which precision a bundle gets, and the step that turns the fp32 graph into it.

Four precisions, chosen from the CLI flags by :func:`choose_precision`:

- ``fp32``: the graph as exported (or as optimized);
- ``int8`` (``--quantize``, ``--bits 8``): dynamic int8. On the fused GroupQueryAttention graph
  through ``fused.quantize_fused``; on Optimum's graph through ``quantize.quantize_model`` with the
  attention activation x activation MatMuls excluded (see ``quantize.py`` for the measurement);
- ``int4`` (``--bits 4``): weight-only ``MatMulNBits`` through ``int4.py``. It accepts either graph:
  Optimum's Gemm projections are first rewritten to MatMul + Add; the fused graph already has
  MatMul projections, so that rewrite finds no Gemm and is a no-op (``gemm_rewritten: 0`` in the
  manifest), and its LM head ``MatMul(h, Transpose(wte))`` is materialized and quantized the same;
- ``fp16`` (``--dtype fp16``): float16 weights and KV cache through ``fp16.py``; the manifest's
  ``architecture.kv_dtype`` is read from the graph's past inputs, so it says float16.

Whatever the graph, :func:`apply_precision` returns the new model path and bundle.json's
``precision``; the fp32 graph it read stays where it was, as the quality gate's reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .errors import ExportError
from .int4 import DEFAULT_ACCURACY_LEVEL, DEFAULT_BLOCK_SIZE, Int4Settings
from .quantize import resolve_target

DTYPES = ("fp32", "fp16")
QUANTIZE_BITS = (8, 4)
SUFFIXES = {"fp32": "", "int8": "-int8", "int4": "-int4", "fp16": "-fp16"}
FP32_PRECISION = {"dtype": "float32", "method": None}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to produce; ``target`` is set for int8, ``int4`` for int4."""

    kind: str  # a key of SUFFIXES
    target: str | None = None
    int4: Int4Settings | None = None

    @property
    def suffix(self) -> str:
        """What the default output folder name gets: ``-int8``, ``-int4``, ``-fp16`` or nothing."""
        return SUFFIXES[self.kind]

    @property
    def reduced(self) -> bool:
        """Whether the bundle differs from the fp32 graph, so the quality gate has work."""
        return self.kind != "fp32"

    def step_title(self, graph_kind: str) -> str:
        if self.kind == "int8" and graph_kind == "fused-gqa":
            return f"Quantize to int8 (dynamic, per-channel, {self.target}; tied embedding shared)"
        if self.kind == "int8":
            return f"Quantize to int8 (dynamic, per-channel, {self.target}; attention in float)"
        if self.kind == "int4" and self.int4 is not None:
            return (
                f"Quantize to int4 (weight-only MatMulNBits, block {self.int4.block_size}, "
                f"accuracy level {self.int4.accuracy_level})"
            )
        return "Convert to fp16 (weights and KV cache; logits stay float32)"


def choose_precision(
    quantize: bool = False,
    bits: int = 8,
    dtype: str = "fp32",
    target: str = "auto",
    block_size: int = DEFAULT_BLOCK_SIZE,
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL,
) -> PrecisionChoice:
    """Validate the flags and name the precision; every problem is one ``ExportError`` sentence.

    ``quantize`` with ``bits`` 8 (the default) is int8, with 4 int4; ``dtype`` ``fp16`` converts
    instead of quantizing, so the two exclude each other. ``block_size`` and ``accuracy_level``
    only matter for int4.
    """
    if dtype not in DTYPES:
        raise ExportError(f"Unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}.")
    if dtype == "fp16" and quantize:
        raise ExportError("--dtype fp16 and --quantize exclude each other; choose one.")
    if dtype == "fp16":
        return PrecisionChoice("fp16")
    if not quantize:
        return PrecisionChoice("fp32")
    if bits not in QUANTIZE_BITS:
        raise ExportError(f"--bits {bits} is not supported; choose 8 (dynamic) or 4 (weight-only).")
    if bits == 8:
        return PrecisionChoice("int8", target=resolve_target(target))
    settings = Int4Settings(bits=4, block_size=block_size, accuracy_level=accuracy_level)
    settings.validate()
    return PrecisionChoice("int4", int4=settings)


def apply_precision(
    choice: PrecisionChoice, model_path: Path, work_dir: Path, graph_kind: str
) -> tuple[Path, dict[str, Any]]:
    """Make the ``choice`` model from the fp32 ``model_path`` under ``work_dir``.

    Returns:
        (path of the new model, bundle.json ``precision``). For fp32, ``model_path`` itself.
    """
    if choice.kind == "fp32":
        return model_path, dict(FP32_PRECISION)
    out_dir = work_dir / choice.kind
    out_dir.mkdir(parents=True, exist_ok=True)
    if choice.kind == "int8":
        return _int8(model_path, out_dir, str(choice.target), graph_kind)
    tool = {"onnxruntime": version("onnxruntime")}
    if choice.kind == "int4":
        from .int4 import quantize_file

        report = quantize_file(model_path, out_dir / "model.onnx", choice.int4)
        report.pop("file_size", None)  # bundle.json ``files`` has the sizes
        return out_dir / "model.onnx", {**report, "tool": tool}
    from .fp16 import convert_file
    from .onnx_files import footprint, needs_external_data

    # fp16 halves the bytes: external data only when even half is over the protobuf limit.
    external = needs_external_data(footprint(model_path) // 2)
    report = convert_file(model_path, out_dir / "model.onnx", external_data=external)
    report.pop("file_size", None)
    return out_dir / "model.onnx", {**report, "tool": tool}


def _int8(
    model_path: Path, out_dir: Path, target: str, graph_kind: str
) -> tuple[Path, dict[str, Any]]:
    if graph_kind == "fused-gqa":
        # Attention is one GroupQueryAttention op there: no activation x activation MatMul.
        from .fused import quantize_fused
        from .onnx_export import quiet_libraries

        with quiet_libraries():  # onnxruntime's quantizer logs advice the user cannot act on
            return quantize_fused(model_path, out_dir, target)
    import onnx

    from .onnx_files import footprint, needs_external_data
    from .quantize import attention_matmuls, quantization_settings, quantize_model

    exclude = attention_matmuls(onnx.load(str(model_path), load_external_data=False))
    external = needs_external_data(footprint(model_path))
    path = quantize_model(model_path, out_dir, target, external, nodes_to_exclude=exclude)
    return path, quantization_settings(target, nodes_to_exclude=exclude)


def describe(precision: dict[str, Any]) -> str:
    """One line for the CLI summary table."""
    dtype = str(precision.get("dtype", "float32"))
    if dtype == "int8":
        channel = "per-channel" if precision.get("per_channel") else "per-tensor"
        text = f"int8 {precision.get('method')} {channel}, target {precision.get('target')}"
        excluded = precision.get("excluded", {}).get("nodes")
        return text + (f"; {len(excluded)} attention MatMuls kept float" if excluded else "")
    if precision.get("operator") == "MatMulNBits":
        return (
            f"{dtype} weight-only MatMulNBits, block {precision.get('block_size')}, "
            f"accuracy level {precision.get('accuracy_level')}"
        )
    if dtype == "float16":
        kv, logits = precision.get("kv_dtype"), precision.get("logits_dtype")
        return f"float16 (KV cache {kv}, logits {logits})"
    return dtype
