"""An fp16 graph for GPU use: float16 weights and KV cache, float32 logits.

Built with onnxruntime's own converter (``onnxruntime.transformers.float16``). Choices:

- ``past_key_values.*`` and ``present.*`` become float16: the KV cache is the memory that grows
  with the context, so halving it is the point (the runtime reads ``kv_dtype`` from the graph);
- ``logits`` stay float32 (``keep_io_types``): one Cast of a (B, T, V) tensor per step is cheap,
  and the samplers then see the same dtype as with every other bundle;
- ``input_ids``, ``attention_mask`` and ``position_ids`` are int64 and untouched.

onnxruntime's CPU provider runs this graph too (slower than fp32: few CPU kernels are native
fp16), which is how parity is measured without a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx

from ..onnx_files import save_model

LOGITS = "logits"
# Ops the converter must leave in float32: their fp16 CPU kernels are missing or lose too much.
# (The converter's own default block list is added to these.)
KEEP_FLOAT32_OPS: tuple[str, ...] = ()


def convert_model(model: onnx.ModelProto, keep_io: tuple[str, ...] = (LOGITS,)) -> onnx.ModelProto:
    """Return ``model`` with float16 weights and KV tensors; ``keep_io`` stay float32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.ERROR)
    return convert_float_to_float16(
        model,
        keep_io_types=list(keep_io),
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(KEEP_FLOAT32_OPS)),
        disable_shape_infer=False,
    )


def convert_file(
    src: Path, dst: Path, keep_io: tuple[str, ...] = (LOGITS,), external_data: bool = False
) -> dict[str, Any]:
    """Convert ``src`` to an fp16 ``dst``; return the settings for bundle.json ``precision``.

    ``external_data``: write the weights to ``<dst>.data`` (gpt2-xl in fp16 is ~3 GB, over
    protobuf's 2 GB limit); the exporter's ``place_model`` then gives them the bundle layout.
    """
    save_model(convert_model(onnx.load(str(src)), keep_io), dst, external_data)
    return {
        "dtype": "float16",
        "method": "onnxruntime.transformers.float16",
        "kv_dtype": "float16",
        "logits_dtype": "float32" if LOGITS in keep_io else "float16",
        "file_size": dst.stat().st_size,
    }
