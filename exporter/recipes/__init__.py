"""The precision recipes: one module each, every one producing one ``Precision`` record.

- ``int8`` (``--quantize``; ``int8.py``): Optimum's ORTQuantizer for the weights, activations
  quantized per row, an 8-bit LM head shared with the embedding;
- ``int4`` (``--bits 4``; ``nbits.py``): weight-only ``MatMulNBits``;
- ``fp16`` (``--dtype fp16``; ``fp16.py``): float16 weights and KV cache, float32 logits;
- ``fp32``: the graph as built.

:func:`choose_precision` turns the CLI's flags into a :class:`PrecisionChoice` (every problem one
sentence, before any work); :func:`apply_precision` runs the recipe on the fp32 graph, which
stays where it was as the quality gate's reference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

from gpt2_edge.runtime.contract.precision import FLOAT32, Precision

from ..errors import ExportError
from .nbits import DEFAULT_ACCURACY_LEVEL, DEFAULT_BLOCK_SIZE, NBitsSettings
from .targets import DEFAULT_TARGET, Target, resolve_target

DTYPES = ("fp32", "fp16")
# The KV cache's element type: auto = float16 for int8/int4 on the fused graph (see
# ``exporter/edits/kv_cache.py``), float32 for fp32 (exact), float16 for fp16.
KV_CACHES = ("auto", "float16", "float32")
QUANTIZE_BITS = (8, 4)
SUFFIXES = {"fp32": "", "int8": "-int8", "int4": "-int4", "fp16": "-fp16"}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to produce; ``target`` is set for int8, ``nbits`` for int4."""

    kind: str  # a key of SUFFIXES
    target: Target | None = None
    nbits: NBitsSettings | None = None
    kv_cache: str = "auto"  # a value of KV_CACHES

    def half_kv(self, graph_kind: str) -> bool:
        """Whether the recipe turns the fused graph's float32 KV cache to float16."""
        quantized = self.kind in ("int8", "int4")
        return graph_kind == "fused-gqa" and quantized and self.kv_cache in ("auto", "float16")

    @property
    def suffix(self) -> str:
        """What the default output folder name gets: ``-int8``, ``-int4``, ``-fp16`` or nothing."""
        return SUFFIXES[self.kind]

    @property
    def reduced(self) -> bool:
        """Whether the bundle differs from the fp32 graph, so the quality gate has work."""
        return self.kind != "fp32"

    def step_title(self, graph_kind: str) -> str:
        if self.kind == "int8" and self.target is not None:
            bits = "7-bit" if self.target.reduce_range else "8-bit"
            return (
                f"Quantize to int8 (Optimum ORTQuantizer, {bits} weights per channel, "
                f"activations per row; target {self.target.name})"
            )
        if self.kind == "int4" and self.nbits is not None:
            return (
                f"Quantize to int4 (weight-only MatMulNBits, block {self.nbits.block_size}, "
                f"accuracy level {self.nbits.accuracy_level})"
            )
        return "Convert to fp16 (weights and KV cache; logits stay float32)"


def choose_precision(
    quantize: bool = False,
    bits: int = 8,
    dtype: str = "fp32",
    target: str = DEFAULT_TARGET,
    block_size: int = DEFAULT_BLOCK_SIZE,
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL,
    kv_cache: str = "auto",
    graph: str = "fused",
) -> PrecisionChoice:
    """Validate the flags and name the precision; every problem is one ``ExportError`` sentence.

    ``quantize`` with ``bits`` 8 (the default) is int8, with 4 int4; ``dtype`` ``fp16`` converts
    instead of quantizing, so the two exclude each other. ``block_size`` and ``accuracy_level``
    only matter for int4, ``target`` only for int8. ``kv_cache`` ``float16`` needs a quantized
    recipe on the fused ``graph`` (fp16 has it already), ``float32`` excludes fp16.
    """
    if dtype not in DTYPES:
        raise ExportError(f"Unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}.")
    check_kv_cache(kv_cache, quantize, dtype, graph)
    choice = _choose(quantize, bits, dtype, target, block_size, accuracy_level)
    return replace(choice, kv_cache=kv_cache)


def check_kv_cache(kv_cache: str, quantize: bool, dtype: str, graph: str) -> None:
    """One sentence for a ``--kv-cache`` the other flags cannot honour."""
    if kv_cache not in KV_CACHES:
        raise ExportError(f"Unknown --kv-cache '{kv_cache}'; choose one of {', '.join(KV_CACHES)}.")
    if kv_cache == "float32" and dtype == "fp16":
        raise ExportError("--dtype fp16 keeps its KV cache in float16; drop --kv-cache float32.")
    if kv_cache == "float16" and dtype == "fp32" and not quantize:
        raise ExportError(
            "--kv-cache float16 is for --quantize bundles (--dtype fp16 has it already); an fp32 "
            "bundle keeps the exact float32 cache."
        )
    # An fp16 bundle's cache is float16 on either graph: asking for it is no conflict.
    if kv_cache == "float16" and graph != "fused" and dtype != "fp16":
        raise ExportError("--kv-cache float16 needs the fused graph; drop --graph optimum.")


def _choose(
    quantize: bool, bits: int, dtype: str, target: str, block_size: int, accuracy_level: int
) -> PrecisionChoice:
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
    settings = NBitsSettings(bits=4, block_size=block_size, accuracy_level=accuracy_level)
    settings.validate()
    return PrecisionChoice("int4", nbits=settings)


def apply_precision(
    choice: PrecisionChoice, model_path: Path, work_dir: Path, graph_kind: str
) -> tuple[Path, Precision]:
    """Make the ``choice`` model from the fp32 ``model_path`` under ``work_dir``.

    Returns:
        (path of the new model, bundle.json ``precision``). For fp32, ``model_path`` itself.
    """
    if choice.kind == "fp32":
        return model_path, FLOAT32
    from ..onnx_files import footprint, needs_external_data

    out_dir = work_dir / choice.kind
    out_dir.mkdir(parents=True, exist_ok=True)
    size = footprint(model_path)
    if choice.kind in ("int8", "int4"):
        path, precision = _quantize(choice, model_path, out_dir, graph_kind, size)
        if choice.half_kv(graph_kind):
            from ..edits.kv_cache import half_kv_cache_file

            half_kv_cache_file(path)
            precision = replace(precision, kv_dtype="float16")
        return path, precision
    from .fp16 import convert_file

    # fp16 halves the bytes: external data only when even half is over the protobuf limit.
    report = convert_file(
        model_path, out_dir / "model.onnx", external_data=needs_external_data(size // 2)
    )
    return out_dir / "model.onnx", Precision(
        dtype="float16",
        method="cast",
        kv_dtype=str(report["kv_dtype"]),
        tool={"converter": str(report["method"]), "onnxruntime": version("onnxruntime")},
        extra={"logits_dtype": report["logits_dtype"]},
    )


def _quantize(
    choice: PrecisionChoice, model_path: Path, out_dir: Path, graph_kind: str, size: int
) -> tuple[Path, Precision]:
    """The int8 or int4 recipe on the fp32 graph."""
    from ..onnx_files import needs_external_data

    if choice.kind == "int8" and choice.target is not None:
        from .int8 import quantize_int8

        return quantize_int8(
            model_path, out_dir, choice.target, graph_kind, needs_external_data(size)
        )
    tool = {"onnxruntime": version("onnxruntime")}
    if choice.nbits is not None:
        from .nbits import quantize_file

        settings = choice.nbits
        report = quantize_file(model_path, out_dir / "model.onnx", settings)
        return out_dir / "model.onnx", Precision(
            dtype="int4",
            method="weight-only",
            operators=["MatMulNBits"],
            weights=settings.weights_json(),
            lm_head={"summary": "MatMulNBits 4-bit, symmetric"}
            if report["lm_head_quantized"]
            else {},
            embedding=report["embedding"],
            tool={"quantizer": "onnxruntime MatMulNBitsQuantizer", **tool},
            extra={"gemm_rewritten": report["gemm_rewritten"]},
        )
    raise AssertionError(f"no recipe for {choice}")
