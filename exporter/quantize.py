"""Dynamic int8 quantization through Optimum's ``ORTQuantizer``, per channel, per target CPU.

Dynamic quantization needs no calibration data: weights are stored as int8 with one scale per
output channel, and activations are quantized on the fly (``DynamicQuantizeLinear``).

The attention MatMuls (Q·K^T and P·V) multiply two activations; ORTQuantizer quantizes them too
(it does not set onnxruntime's ``MatMulConstBOnly``), and on the trained fixture that alone costs
+2.4 % perplexity, while excluding them gives +0.02 % at the same file size (they hold no weights;
``benchmarks/quant_recipes.py``). So they are passed as ``nodes_to_exclude``.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .errors import ExportError

TARGETS = ("auto", "avx2", "avx512", "avx512_vnni", "arm64")
METHOD = "dynamic"
QUANTIZED_SUFFIX = "quantized"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty when unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 says flags, arm says Features
            return set(value.split())
    return set()


def detect_target(machine: str | None = None, flags: set[str] | None = None) -> str:
    """The best quantization target for this CPU: arm64, avx512_vnni, avx512 or avx2."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv8"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags and ("avx512_vnni" in flags or "avx512vnni" in flags):
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"  # also the safe default for x86 CPUs whose flags cannot be read


def resolve_target(target: str) -> str:
    if target not in TARGETS:
        raise ExportError(f"Unknown target '{target}'; choose one of {', '.join(TARGETS)}.")
    return detect_target() if target == "auto" else target


# Ops that only reshape or retype a tensor: a constant stays a constant through them.
_PASS_THROUGH = ("Transpose", "Identity", "Cast", "Reshape")
EXCLUDE_RULE = "MatMul nodes whose two inputs are both activations (attention Q·K^T and P·V)"


def attention_matmuls(model: Any) -> list[str]:
    """Names of the MatMuls that multiply two activations (Q·K^T and P·V), in graph order.

    An input counts as constant when it is an initializer, a ``Constant`` output, or one of those
    passed through Transpose/Identity/Cast/Reshape: the LM head multiplies by ``Transpose(wte)``
    and must stay quantizable, whereas the key is an activation however it is transposed.
    """
    constants = {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # graph order is topological, so one pass settles chains
        if node.op_type == "Constant" or (
            node.op_type in _PASS_THROUGH and node.input and node.input[0] in constants
        ):
            constants.update(node.output)
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in constants for i in n.input)
    ]


def quantization_config(target: str, nodes_to_exclude: list[str] | None = None) -> Any:
    from optimum.onnxruntime import AutoQuantizationConfig

    make = getattr(AutoQuantizationConfig, target)
    return make(is_static=False, per_channel=True, nodes_to_exclude=list(nodes_to_exclude or []))


def quantize_model(
    model_path: Path,
    work_dir: Path,
    target: str,
    external_data: bool,
    nodes_to_exclude: list[str] | None = None,
) -> Path:
    """Quantize ``model_path`` into ``work_dir``; return the path of the quantized model."""
    from optimum.onnxruntime import ORTQuantizer

    from .onnx_export import quiet_libraries

    with quiet_libraries():
        quantizer = ORTQuantizer.from_pretrained(model_path.parent, file_name=model_path.name)
        quantizer.quantize(
            quantization_config(target, nodes_to_exclude),
            save_dir=work_dir,
            file_suffix=QUANTIZED_SUFFIX,
            use_external_data_format=external_data,
        )
    return work_dir / f"{model_path.stem}_{QUANTIZED_SUFFIX}.onnx"


def quantization_settings(
    target: str, bits: int = 8, nodes_to_exclude: list[str] | None = None
) -> dict[str, Any]:
    """What goes into bundle.json ``precision``: enough to reproduce the quantization."""
    config = quantization_config(target, nodes_to_exclude)
    return {
        "dtype": "int8",
        "method": METHOD,
        "bits": bits,
        "per_channel": bool(config.per_channel),
        "reduce_range": bool(config.reduce_range),
        "target": target,
        "weights_dtype": str(config.weights_dtype.name),
        "activations_dtype": str(config.activations_dtype.name),
        "weights_symmetric": bool(config.weights_symmetric),
        "operators": sorted(getattr(op, "value", str(op)) for op in config.operators_to_quantize),
        "excluded": {"rule": EXCLUDE_RULE, "nodes": list(config.nodes_to_exclude)},
        "tool": {"optimum": version("optimum"), "onnxruntime": version("onnxruntime")},
    }
