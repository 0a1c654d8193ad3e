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

import json
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
EMBEDDING_BLOCK_SIZE = 32
HEAD_MODE = "nbits"
LM_HEAD = "lm_head.weight"  # the constant name int4.materialize_lm_head gives the tied head
INT8_CHOICE = (
    "dynamic MatMulInteger (per-channel) on the fused graph, chosen over weight-only "
    "MatMulNBits 8-bit accuracy_level 4: 32-33 vs 27-31 decode tok/s and 490 vs 1100+ ms "
    "prefill on GPT-2 124M, 2 threads, AVX2"
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
    head = weights.get("lm_head.weight")
    if head is not None and not np.array_equal(head, weights["wte.weight"]):
        return "the LM head is not tied to the token embedding"
    missing = [n for n in ("wte.weight", "wpe.weight", "ln_f.weight") if n not in weights]
    return f"checkpoint tensors missing: {missing}" if missing else None


def load_weights(checkpoint: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """fp32 tensors named as GPT2Model's state dict, from safetensors or ``pytorch_model.bin``."""
    from .optimize import load_gpt2_weights

    if any(checkpoint.glob("*.safetensors")):
        return load_gpt2_weights(checkpoint)
    import torch

    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(checkpoint.glob("pytorch_model*.bin")):
        state = torch.load(shard, map_location="cpu", weights_only=True)
        for name, value in state.items():
            tensors[name.removeprefix("transformer.")] = value.float().numpy()
    return tensors, config


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
    from .optimize import build_fused_decoder, parity, save_model

    weights, config = load_weights(checkpoint)
    reason = unsupported_reason(config, weights)
    if reason:
        return None, {**OPTIMUM_GRAPH, "fused_skipped": reason}
    model = build_fused_decoder(weights, config, lm_head_transposed=False)
    del weights
    work_dir.mkdir(parents=True, exist_ok=True)
    path = save_model(model, work_dir / "model.onnx")
    del model
    heads, width = int(config["n_head"]), int(config["n_embd"])
    context = int(config.get("n_positions", 1024))
    figures = parity(
        reference,
        path,
        int(config["n_layer"]),
        heads,
        width // heads,
        prompt_len=max(1, min(16, context - PARITY_STEPS - 1)),
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
        "prompt_tokens": 16,
        "decode_steps": PARITY_STEPS,
        **figures,
    }
    return path, {**FUSED_GRAPH, "parity_vs_optimum": parity_figures}


def quantize_fused(model_path: Path, work_dir: Path, target: str) -> tuple[Path, dict[str, Any]]:
    """Dynamic int8 of the fused graph plus an 8-bit embedding; returns the path and ``precision``.

    The tied LM head is first made a constant ``MatMul`` weight (``int4.materialize_lm_head``) so
    the quantizer covers it; the fp32 token table, otherwise the largest tensor left, is then
    dropped and the embedding reads the LM head's int8 columns (:func:`share_int8_embedding`), so
    the tied weight is stored once, as GPT-2 ties it. Fallback: an 8-bit blockwise
    ``GatherBlockQuantized`` copy (``optimize.quantize_embedding``).
    """
    import onnx

    from .int4 import Int4Settings, _nbits_quantize, materialize_lm_head, share_embedding
    from .optimize import quantize_dynamic_int8, quantize_embedding, save_model

    work_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(model_path))
    head = materialize_lm_head(model)
    untied = save_model(model, work_dir / "untied.onnx")
    del model
    exclude = [head[0]] if head is not None and HEAD_MODE == "nbits" else []
    dynamic = quantize_dynamic_int8(untied, work_dir / "dynamic.onnx", exclude=exclude)
    model = onnx.load(str(dynamic))
    shared = False
    if head is not None and HEAD_MODE == "nbits":
        # Weight-only 8-bit blocks with float compute: the head's input is not quantized (that
        # cost 10% perplexity on the trained fixture) and the Gather shares the packed bytes.
        settings = Int4Settings(
            bits=8, block_size=EMBEDDING_BLOCK_SIZE, accuracy_level=4, symmetric=True
        )
        model = _nbits_quantize(model, settings, True, [])
        shared = share_embedding(model, head[0], head[1], EMBEDDING_BLOCK_SIZE, bits=8)
    elif head is not None:
        shared = share_int8_embedding(model, head[1], LM_HEAD)
    if head is not None and not shared:
        model = quantize_embedding(model, head[1], bits=8, block_size=EMBEDDING_BLOCK_SIZE)
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
        "lm_head": f"MatMulNBits 8-bit, block {EMBEDDING_BLOCK_SIZE}, accuracy_level 4"
        if HEAD_MODE == "nbits"
        else "MatMulInteger",
        "embedding": "shares the int8 LM head's weight"
        if shared
        else {"operator": "GatherBlockQuantized", "bits": 8, "block_size": EMBEDDING_BLOCK_SIZE}
        if head is not None
        else "float32",
        "choice": INT8_CHOICE,
        "tool": {"onnxruntime": version("onnxruntime")},
    }
    return path, precision


def share_int8_embedding(model: Any, table: str, head: str) -> bool:
    """Make ``Gather(table, ids)`` read the dynamic-int8 LM head ``head`` (E, V) instead.

    Row ``v`` of the embedding is column ``v`` of the LM head's weight times its per-channel
    scale (symmetric int8, zero point 0): ``Gather(axis=1)`` -> (E, B, S) int8, Cast, Transpose
    to (B, S, E), times ``scale[ids]``. A step reads E strided bytes; nothing is stored twice.
    """
    from onnx import TensorProto, helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    weight, scale, zero = f"{head}_quantized", f"{head}_scale", f"{head}_zero_point"
    gather = next(
        (n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == table), None
    )
    if gather is None or weight not in inits or scale not in inits or zero not in inits:
        return False
    if np.any(numpy_helper.to_array(inits[zero])) or inits[weight].data_type != TensorProto.INT8:
        return False  # asymmetric or unsigned: not the per-channel symmetric form we expect
    ids, out, tag = gather.input[1], gather.output[0], f"{table}_from_{head}"
    axes = numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{tag}_axes")
    model.graph.initializer.append(axes)
    new_nodes = [
        helper.make_node("Gather", [weight, ids], [f"{tag}_q"], axis=1),  # (E, B, S) int8
        helper.make_node("Cast", [f"{tag}_q"], [f"{tag}_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", [f"{tag}_f"], [f"{tag}_t"], perm=[1, 2, 0]),  # (B, S, E)
        helper.make_node("Gather", [scale, ids], [f"{tag}_s"], axis=0),  # (B, S)
        helper.make_node("Unsqueeze", [f"{tag}_s", axes.name], [f"{tag}_s3"]),  # (B, S, 1)
        helper.make_node("Mul", [f"{tag}_t", f"{tag}_s3"], [out]),
    ]
    at = list(model.graph.node).index(gather)
    model.graph.node.remove(gather)
    for offset, node in enumerate(new_nodes):
        model.graph.node.insert(at + offset, node)
    if not any(table in n.input for n in model.graph.node):
        model.graph.initializer.remove(inits[table])
    return True
