"""Weight-only n-bit quantization through onnxruntime's ``MatMulNBits`` (``--bits 4``).

onnxruntime's ``MatMulNBitsQuantizer`` only rewrites ``MatMul`` nodes whose weight is a constant
initializer. Optimum's GPT-2 export has neither where the bytes are: the Conv1D projections are
``Gemm`` nodes, and the LM head multiplies by ``Transpose(wte)``, computed at run time. Left as is,
"4-bit" GPT-2 comes out as large as fp32 (FACTS.md). So the recipe is

1. rewrite every ``Gemm`` with a constant weight into ``MatMul`` + ``Add``
   (``edits.gemm_to_matmul``);
2. replace the LM head's ``Transpose(wte)`` by a constant weight (``edits.materialize_lm_head``);
3. quantize the projections, then the LM head symmetrically, and let the embedding ``Gather`` read
   *the same packed bytes* (``edits.share_embedding``), so the tied weight is stored once.

The int8 recipe uses :func:`quantize_lm_head` for its 8-bit head too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ..edits.rewrites import (
    gemm_to_matmul,
    materialize_lm_head,
    quantize_embedding,
    share_embedding,
)
from ..errors import ExportError

DEFAULT_BLOCK_SIZE = 32
# 4 = int8 compute: onnxruntime quantizes each block of the input to int8 at run time. GPT-2 124M
# int4 on AVX2 (2 threads, 128+128 greedy): 183 decode tok/s against 62 with level 0 (fp32
# compute dequantizes every weight). CPUs without such kernels fall back to fp32 compute.
DEFAULT_ACCURACY_LEVEL = 4
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
EMBEDDING_MODES = ("shared", "float")


@dataclass(frozen=True)
class NBitsSettings:
    """How to quantize weights to n bits; every field is written into bundle.json ``precision``.

    Attributes:
        bits: 4 (default) or 8: MatMulNBits weight bits.
        block_size: weights per scale along the input axis (default 32; a power of two >= 16).
        accuracy_level: MatMulNBits compute type (0 onnxruntime's, 1 fp32, 2 fp16, 3 bf16, 4 int8:
            the default).
        symmetric: symmetric projections (no zero points); the tied LM head is always symmetric.
        embedding: ``shared`` (the Gather reads the LM head's packed weight) or ``float``.
    """

    bits: int = 4
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL
    symmetric: bool = False
    embedding: str = "shared"

    def validate(self) -> None:
        if self.bits not in (4, 8):
            raise ExportError(f"Weight-only bits must be 4 or 8, got {self.bits}.")
        b = self.block_size
        if b < 16 or b & (b - 1):
            raise ExportError(f"Block size must be a power of two of at least 16, got {b}.")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise ExportError(
                f"Accuracy level must be one of {ACCURACY_LEVELS}, got {self.accuracy_level}."
            )
        if self.embedding not in EMBEDDING_MODES:
            raise ExportError(f"Embedding mode must be one of {EMBEDDING_MODES}.")

    def weights_json(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "granularity": f"blocks of {self.block_size} along the input axis",
            "block_size": self.block_size,
            "accuracy_level": self.accuracy_level,
            "symmetric": self.symmetric,
        }


def nbits_quantize(
    model: onnx.ModelProto, settings: NBitsSettings, symmetric: bool, exclude: list[str]
) -> onnx.ModelProto:
    """onnxruntime's ``MatMulNBitsQuantizer`` over every constant-weight MatMul not excluded."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # The quantizer logs every node at INFO through the root logger's basicConfig.
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=settings.bits,
        block_size=settings.block_size,
        is_symmetric=symmetric,
        accuracy_level=settings.accuracy_level or None,
        nodes_to_exclude=exclude,
    )
    quantizer.process()
    return quantizer.model.model


def quantize_lm_head(
    model: onnx.ModelProto, head: tuple[str, str], settings: NBitsSettings
) -> tuple[onnx.ModelProto, str]:
    """Quantize the (only remaining constant-weight) LM head MatMul, symmetric, and store the
    tied embedding once: shared with the head, else as its own blockwise copy, else float.

    Returns the model and how the embedding is stored, in words.
    """
    model = nbits_quantize(model, settings, True, [])
    if settings.embedding == "float":
        return model, "float32"
    if share_embedding(model, head[0], head[1], settings.block_size, settings.bits):
        return model, f"shares the {settings.bits}-bit LM head's weight"
    if quantize_embedding(model, head[1], settings.bits, settings.block_size):
        return model, f"GatherBlockQuantized {settings.bits}-bit, block {settings.block_size}"
    return model, "float32"


def quantize_weight_only(
    model: onnx.ModelProto, settings: NBitsSettings | None = None
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Rewrite and quantize ``model``; return the new model and a report for bundle.json."""
    settings = settings or NBitsSettings()
    settings.validate()
    rewritten = gemm_to_matmul(model)
    head = materialize_lm_head(model)
    model = nbits_quantize(model, settings, settings.symmetric, [head[0]] if head else [])
    embedding = "float32"
    if head:
        # Second pass: only the LM head is still a constant-weight MatMul (attention MatMuls
        # multiply two activations and are skipped). Symmetric so the Gather can share it.
        model, embedding = quantize_lm_head(model, head, settings)
    report = {
        "gemm_rewritten": rewritten,
        "lm_head_quantized": bool(head),
        "embedding": embedding,
        "matmul_nbits_nodes": sum(n.op_type == "MatMulNBits" for n in model.graph.node),
    }
    return model, report


def quantize_file(src: Path, dst: Path, settings: NBitsSettings | None = None) -> dict[str, Any]:
    """Quantize the ONNX file ``src`` into ``dst`` (one file; GPT-2 124M int4 is far below 2 GB)."""
    model = onnx.load(str(src))
    model, report = quantize_weight_only(model, settings)
    onnx.save(model, str(dst))
    return report
