"""int8 (``--quantize``): Optimum's ``ORTQuantizer``, activations quantized per row, 8-bit LM head.

The recipe, for the fused graph (the default) and for Optimum's graph alike:

1. **Weights** through Optimum's ``ORTQuantizer`` (dynamic, ``MatMulInteger``): int8, symmetric,
   one scale per output channel, 7 bits where the target needs it (``targets.py``). On the fused
   graph the LM head is excluded (step 3); on Optimum's graph the attention MatMuls, which
   multiply two activations, are excluded (quantizing them cost +2.4% perplexity on the trained
   fixture against +0.02% without, ``benchmarks/quant_recipes.py``).
2. **Activations per row** (``per_row.per_row_activations``): ORTQuantizer's
   ``DynamicQuantizeLinear`` takes one scale for the whole batch, so a prompt's tokens changed
   with the other prompts of its batch (3 of 8 rows of the trained fixture's greedy output) and
   between cached decoding and recomputation. One scale per row makes each row's result depend
   on that row only. No quantizer offers per-row dynamic activations, so this edit is ours. It
   is written in 7 ops a projection (``Abs, ReduceMax, Mul, Max, Div, QuantizeLinear,
   MatMulIntegerToFloat``) where it first took 12, with the same bits: at batch 1 the decode
   step is mostly small kernels (``benchmarks/profile_decode.py``).
3. **LM head** (fused graph): weight-only 8-bit ``MatMulNBits`` in symmetric blocks along the
   hidden axis with int8 compute (accuracy level 4, which quantizes the head's input per block of
   each row); the embedding ``Gather`` reads the same bytes, so the tied weight is stored once.

Optimum's ``ORTQuantizer`` cannot read the fused graph as it is: onnx's shape inference leaves the
outputs of com.microsoft ops untyped and onnxruntime's quantizer stops with "Unable to find data
type for weight_name=...". ``edits.type_intermediates`` declares them float first.
"""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import onnx
from gpt2_edge.runtime.contract.precision import Precision

from ..edits.per_row import per_row_activations
from ..edits.rewrites import attention_matmuls, materialize_lm_head, type_intermediates
from .nbits import NBitsSettings, quantize_lm_head
from .targets import Target

# Blocks of the 8-bit LM head: the largest of these that divides the width. Not 128: for one row
# (a batch of 1) onnxruntime 1.32's MatMulNBits takes another kernel path at block 128 whose
# results differ in the last bits from the same row inside a batch (measured: every row differs,
# K=768 and K=3072), which would make the output batch-dependent again; 64, 32 and 16 gave
# identical rows for batches of 1 to 64.
HEAD_BLOCK_SIZES = (64, 32, 16)
# What ORTQuantizer quantizes: the fused graph's projections only (its embedding shares the head's
# bytes instead); on Optimum's graph the operator set of Optimum's AutoQuantizationConfig, as
# before (its Gather quantizes the embedding).
OPERATORS = {
    "fused-gqa": ["MatMul"],
    "optimum": [
        "Conv",
        "MatMul",
        "Attention",
        "LSTM",
        "Gather",
        "Transpose",
        "EmbedLayerNormalization",
    ],
}
CHOICE = (
    "per-row dynamic int8 (batch- and cache-invariant) chosen over ORTQuantizer's per-tensor "
    "dynamic int8, which made a prompt's greedy tokens depend on its batch; see the README's "
    "int8 table for the speed of each invariant recipe measured"
)


def head_block_size(width: int) -> int:
    """The largest of ``HEAD_BLOCK_SIZES`` that divides ``width``; 0 when none does."""
    return next((b for b in HEAD_BLOCK_SIZES if width % b == 0), 0)


def quantize_int8(
    model_path: Path, work_dir: Path, target: Target, graph_kind: str, external: bool = False
) -> tuple[Path, Precision]:
    """Quantize the fp32 graph at ``model_path`` into ``work_dir``; return the path and record."""
    work_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_path))
    head = materialize_lm_head(model) if graph_kind == "fused-gqa" else None
    exclude = [head[0]] if head else attention_matmuls(model)
    type_intermediates(model)
    staged = _save(model, work_dir / "to_quantize" / "model.onnx", external)
    del model
    config = quantization_config(target, exclude, OPERATORS[graph_kind])
    quantized = ort_quantize(staged, work_dir / "quantized", config, external)
    shutil.rmtree(staged.parent)
    model = onnx.load(str(quantized))
    shutil.rmtree(quantized.parent)
    rows = per_row_activations(model)
    lm_head, embedding = {}, "int8 (ORTQuantizer Gather)" if head is None else "float32"
    if head is not None:
        block = head_block_size(_width(model, head[1]))
        if block:
            settings = NBitsSettings(bits=8, block_size=block, accuracy_level=4, symmetric=True)
            model, embedding = quantize_lm_head(model, head, settings)
            lm_head = {
                "operator": "MatMulNBits",
                **settings.weights_json(),
                "summary": f"MatMulNBits 8-bit, block {block}, int8 compute",
            }
    path = _save(model, work_dir / "model.onnx", external)
    carriers = {"MatMulInteger", "MatMulIntegerToFloat", "MatMulNBits"}
    operators = sorted({n.op_type for n in model.graph.node} & carriers)
    return path, Precision(
        dtype="int8",
        method="dynamic",
        operators=operators,
        weights={
            "bits": 7 if target.reduce_range else 8,
            "dtype": "int8",
            "granularity": "per output channel",
            "symmetric": True,
            "reduce_range": target.reduce_range,
            "operators_quantized": config.operators_to_quantize,
            "excluded": list(exclude),
        },
        activations={
            "bits": 8,
            "dtype": "uint8 (zero point 128)",
            "granularity": "per row",
            "symmetric": True,
            "tensors": rows,
        },
        lm_head=lm_head,
        embedding=embedding,
        target=target.name,
        cpus=target.cpus,
        tool={
            "weights": "optimum ORTQuantizer (dynamic, per-channel, QOperator)",
            "activations": "gpt2-edge per-row graph edit",
            "optimum": version("optimum"),
            "onnxruntime": version("onnxruntime"),
        },
        choice=CHOICE,
    )


def quantization_config(target: Target, exclude: list[str], operators: list[str]):  # -> optimum's
    """The ``QuantizationConfig`` that carries the recipe's weight settings."""
    from onnxruntime.quantization import QuantFormat, QuantizationMode, QuantType
    from optimum.onnxruntime.configuration import QuantizationConfig

    return QuantizationConfig(
        is_static=False,
        format=QuantFormat.QOperator,
        mode=QuantizationMode.IntegerOps,
        activations_dtype=QuantType.QUInt8,  # then requantized per row (per_row.py)
        weights_dtype=QuantType.QInt8,
        weights_symmetric=True,
        per_channel=True,
        reduce_range=target.reduce_range,
        operators_to_quantize=list(operators),
        nodes_to_exclude=list(exclude),
    )


def ort_quantize(src: Path, out_dir: Path, config: object, external: bool) -> Path:
    """Quantize the model file ``src`` with Optimum's ``ORTQuantizer`` and ``config`` (a
    ``QuantizationConfig``); returns the quantized file in ``out_dir``. The benchmark of int8
    recipes calls it too, so that each recipe is built as the exporter builds it."""
    from optimum.onnxruntime import ORTQuantizer

    from ..graphs.optimum import quiet_libraries

    with quiet_libraries():  # the quantizer logs advice the user cannot act on
        quantizer = ORTQuantizer.from_pretrained(src.parent, file_name=src.name)
        quantizer.quantize(
            config,
            save_dir=out_dir,
            file_suffix="quantized",
            use_external_data_format=external,
        )
    return out_dir / f"{src.stem}_quantized.onnx"


def _save(model: onnx.ModelProto, path: Path, external: bool) -> Path:
    from ..onnx_files import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    return save_model(model, path, external or None)


def _width(model: onnx.ModelProto, table: str) -> int:
    """The row width of the embedding table initializer ``table``."""
    return next(int(t.dims[1]) for t in model.graph.initializer if t.name == table)
