"""The "optimize" step: the fused GPT-2 decoder (``optimize.build_fused_decoder``), parity-checked
against the Optimum graph, and its quantization.

The Optimum export stays the reference: the fused graph is built from the checkpoint's tensors and
must give the same logits as Optimum's graph (prompt and several decode steps) before it replaces
it. Checkpoints the builder does not cover (an untied LM head, another activation, attention
scaling options) keep the Optimum graph; the reason goes into ``bundle.json``.

int8 for the fused graph is dynamic ``MatMulInteger`` (per-channel int8 weights, LM head
included) with an 8-bit blockwise embedding. Measured on GPT-2 124M (2 threads, AVX2,
shared-buffer KV loop, 128-token prompt) against weight-only ``MatMulNBits`` 8-bit with int8
compute on the same fused graph: see ``INT8_CHOICE``.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError

GRAPHS = ("fused", "optimum")
PARITY_TOLERANCE = 1e-3  # max |logit diff| of the fused fp32 graph against Optimum's
PARITY_STEPS = 6  # decode steps after the prompt in the parity check
FUSED_GRAPH = {"kind": "fused-gqa", "kv_cache": "shared-buffer", "padding": "right"}
OPTIMUM_GRAPH = {"kind": "optimum", "kv_cache": "concat", "padding": "left"}
# tanh-approximated GELU is what FastGelu computes; plain erf GELU would not match.
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
# The int8 LM head's (and shared embedding's) block size: the largest of these that divides the
# width. GPT-2 124M, same process, alternating: block 128 decoded 134.5 tok/s against 125.9 with
# block 32 (fewer scales to read and apply); 64 and 256 were within noise of 128.
HEAD_BLOCK_SIZES = (128, 64, 32, 16)
GQA_HEAD_SIZE_MULTIPLE = 8  # onnxruntime's GroupQueryAttention rejects other head sizes at run time
INT8_CHOICE = (
    "dynamic MatMulInteger (per-channel) on the fused graph, chosen over weight-only "
    "MatMulNBits 8-bit accuracy_level 4: 133 vs 117 decode tok/s and 118 vs 230 ms prefill on "
    "GPT-2 124M, 2 threads, AVX2 (onnxruntime 1.32)"
)


def unsupported_reason(config: dict[str, Any], weights: dict[str, np.ndarray]) -> str | None:
    """Why the fused builder cannot represent this checkpoint, or None when it can."""
    if config.get("activation_function", "gelu_new") not in _ACTIVATIONS:
        return f"activation {config.get('activation_function')!r} is not tanh-GELU"
    if config.get("scale_attn_by_inverse_layer_idx") or config.get("reorder_and_upcast_attn"):
        return "per-layer attention scaling options are not supported by the fused graph"
    if config.get("scale_attn_weights", True) is False:
        return "unscaled attention is not supported by the fused graph"
    if int(config["n_embd"]) % int(config["n_head"]):
        return "n_embd is not a multiple of n_head"
    head_size = int(config["n_embd"]) // int(config["n_head"])
    if head_size % GQA_HEAD_SIZE_MULTIPLE:
        return (
            f"head size {head_size} is not a multiple of {GQA_HEAD_SIZE_MULTIPLE}, "
            "which onnxruntime's GroupQueryAttention requires"
        )
    head = weights.get("lm_head.weight")
    if head is not None and not np.array_equal(head, weights["wte.weight"]):
        return "the LM head is not tied to the token embedding"
    missing = [n for n in ("wte.weight", "wpe.weight", "ln_f.weight") if n not in weights]
    return f"checkpoint tensors missing: {missing}" if missing else None


def build_fused(
    checkpoint: Path, reference: Path, work_dir: Path
) -> tuple[Path | None, dict[str, Any]]:
    """Build the fused fp32 graph into ``work_dir`` and check it against ``reference``.

    Returns:
        (path of the fused model, graph description for bundle.json), or (None, a description
        saying why the Optimum graph is kept) when the builder does not cover the checkpoint.

    Raises:
        ExportError: the fused graph was built but its logits differ from Optimum's by more than
            ``PARITY_TOLERANCE`` (a bug to report; ``--graph optimum`` exports without it).
    """
    from .onnx_files import save_model
    from .optimize import build_fused_decoder, load_gpt2_weights, parity

    weights, config = load_gpt2_weights(checkpoint)
    reason = unsupported_reason(config, weights)
    if reason:
        return None, {**OPTIMUM_GRAPH, "fused_skipped": reason}
    model = build_fused_decoder(weights, config)
    del weights
    work_dir.mkdir(parents=True, exist_ok=True)
    path = save_model(model, work_dir / "model.onnx")
    del model
    heads, width = int(config["n_head"]), int(config["n_embd"])
    context = int(config.get("n_positions", 1024))
    prompt_len = max(1, min(16, context - PARITY_STEPS - 1))
    figures = parity(
        reference,
        path,
        int(config["n_layer"]),
        heads,
        width // heads,
        prompt_len=prompt_len,
        steps=PARITY_STEPS,
        vocab=int(config["vocab_size"]),
    )
    if figures["max_abs_logit_diff"] > PARITY_TOLERANCE:
        raise ExportError(
            f"The fused graph's logits differ from the Optimum graph's by up to "
            f"{figures['max_abs_logit_diff']:.3g} (limit {PARITY_TOLERANCE:g}); "
            "export with --graph optimum."
        )
    parity_figures = {
        "reference": "Optimum export (onnxruntime CPU)",
        "prompt_tokens": prompt_len,
        "decode_steps": PARITY_STEPS,
        **figures,
    }
    return path, {**FUSED_GRAPH, "parity_vs_optimum": parity_figures}


def quantize_fused(model_path: Path, work_dir: Path, target: str) -> tuple[Path, dict[str, Any]]:
    """Dynamic int8 of the fused graph plus an 8-bit LM head; returns the path and ``precision``.

    The tied LM head is first made a constant ``MatMul`` weight (``int4.materialize_lm_head``).
    The projections get dynamic int8 (``MatMulInteger``); the LM head gets weight-only 8-bit
    ``MatMulNBits`` blocks (accuracy level 4) instead, and the embedding ``Gather`` reads those
    packed bytes (``int4.share_embedding``), so the tied weight is stored once, as GPT-2 ties it.
    Fallback: an 8-bit blockwise ``GatherBlockQuantized`` copy (``optimize.quantize_embedding``).
    """
    import onnx

    from .int4 import Int4Settings, _nbits_quantize, materialize_lm_head, share_embedding
    from .onnx_files import save_model
    from .optimize import quantize_dynamic_int8, quantize_embedding

    work_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_path))
    head = materialize_lm_head(model)
    untied = save_model(model, work_dir / "untied.onnx")
    del model
    exclude = [head[0]] if head is not None else []
    dynamic = quantize_dynamic_int8(untied, work_dir / "dynamic.onnx", exclude=exclude)
    _remove_model(untied)
    model = onnx.load(str(dynamic))
    _remove_model(dynamic)
    embedding: Any = "float32"
    block = 0
    if head is not None:
        block = head_block_size(_embedding_width(model, head[1]))
        # 8-bit weight blocks; accuracy_level 4 quantizes the head's input per block for
        # int8 compute (dynamic per-tensor quantization of that input cost 10% perplexity on
        # the trained fixture), and the Gather shares the packed bytes.
        settings = Int4Settings(bits=8, block_size=block or 32, accuracy_level=4, symmetric=True)
        model = _nbits_quantize(model, settings, True, [])
        if block and share_embedding(model, head[0], head[1], block, bits=8):
            embedding = "shares the int8 LM head's weight"
        elif block:
            model = quantize_embedding(model, head[1], bits=8, block_size=block)
            embedding = {"operator": "GatherBlockQuantized", "bits": 8, "block_size": block}
        # else: blocks cannot tile the width, so the embedding stays float32
    path = save_model(model, work_dir / "model.onnx")
    precision = {
        "dtype": "int8",
        "method": "dynamic",
        "bits": 8,
        "operator": "MatMulInteger",
        "per_channel": True,
        "reduce_range": False,
        "weights_dtype": "QInt8",
        "activations_dtype": "QUInt8",
        "target": target,
        "lm_head_quantized": head is not None,
        "lm_head": f"MatMulNBits 8-bit, block {block or 32}, accuracy_level 4" if head else None,
        "embedding": embedding,
        "choice": INT8_CHOICE,
        "tool": {"onnxruntime": version("onnxruntime")},
    }
    return path, precision


def head_block_size(width: int) -> int:
    """The largest of ``HEAD_BLOCK_SIZES`` that divides ``width``; 0 when none does."""
    return next((b for b in HEAD_BLOCK_SIZES if width % b == 0), 0)


def _embedding_width(model: Any, name: str) -> int:
    """The row width of the embedding table initializer ``name``."""
    return next(int(t.dims[1]) for t in model.graph.initializer if t.name == name)


def _remove_model(path: Path) -> None:
    """Delete an intermediate model and its external data, once it has been read."""
    from .onnx_files import data_path

    path.unlink()
    data_path(path).unlink(missing_ok=True)
