"""The fused GPT-2 decoder graph: built from the checkpoint's tensors, checked against Optimum's.

Why a rebuild rather than onnxruntime's pattern fusions on the Optimum graph: Optimum's export
spells attention as ~90 small nodes per layer (Shape/Gather/Concat/Where/IsNaN...) and
concatenates past and new key/values every step, which is an O(past) copy per layer per token.
``onnxruntime.transformers.optimizer`` fuses SkipLayerNormalization and FastGelu in that graph but
no attention (its GPT-2 attention patterns match the old stacked-``past_{i}`` export only), so the
copy stays. Rebuilding from the checkpoint's tensors gives a graph of ~10 nodes per layer:

    LayerNorm/SkipLayerNorm -> MatMul(c_attn)+bias -> GroupQueryAttention(packed QKV, past, causal)
    -> MatMul(c_proj) -> SkipLayerNorm(+bias) -> MatMul(c_fc) -> FastGelu(+bias) -> MatMul(proj)

``GroupQueryAttention`` (com.microsoft, CPU float kernel) reads packed ``[q|k|v]`` exactly as
GPT-2's ``c_attn`` writes it, is causal, and when the caller binds ``present`` to the same buffer as
``past`` (IO binding with a preallocated ``max_length`` cache) it appends the new key/values in
place: no per-step copy of the cache. Fed ordinary growing past tensors it behaves like the Optimum
graph (present = past + new), so the same model serves a naive loop too.

The I/O names are Optimum's (``input_ids``, ``attention_mask``, ``position_ids``,
``past_key_values.{i}.key/.value`` -> ``logits``, ``present.{i}.key/.value``), plus
``logits_index`` (B, K): the positions of this call whose logits to compute, per row. Generation
asks for each row's last real token only (K = 1), which skips the LM head — a third of GPT-2
124M's weights — for every other prompt position and keeps a (B, T, 50257) float tensor out of
memory; perplexity and verification pass every position. It has a default, every position, so
that onnxruntime-genai, which feeds only the inputs it knows, runs the graph unmodified (see
``_logits_positions``; a "keep the last N" input such as genai's ``num_logits_to_keep`` cannot
serve a right-padded batch, whose rows end at different positions).

Limits: ``GroupQueryAttention`` derives each row's length from ``attention_mask`` (its sum), so the
prompt batch must be right-padded or of equal length: a left-padded batch (transformers' habit)
gives wrong positions. The runtime must right-pad batches for this graph.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
OPSET = 17  # LayerNormalization is opset 17
# Written into metadata_props so a runtime can tell; v2 added the logits_index input, v3 gave it
# a default (every position).
FUSED_GRAPH_TAG = "gpt2-edge-fused-gqa-v3"

GRAPHS = ("fused", "optimum")
FUSED_GRAPH = {"kind": "fused-gqa", "kv_cache": "shared-buffer", "padding": "right"}
OPTIMUM_GRAPH = {"kind": "optimum", "kv_cache": "concat", "padding": "left"}
# tanh-approximated GELU is what FastGelu computes; plain erf GELU would not match.
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
GQA_HEAD_SIZE_MULTIPLE = 8  # onnxruntime's GroupQueryAttention rejects other head sizes at run time


def load_gpt2_weights(checkpoint: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """fp32 tensors named as GPT2Model's state dict, from safetensors or ``pytorch_model*.bin``,
    and the checkpoint's config."""
    folder = Path(checkpoint)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tensors: dict[str, np.ndarray] = {}
    # GPT2LMHeadModel saves "transformer.h.0..."; bare GPT2Model saves "h.0...".
    if any(folder.glob("*.safetensors")):
        from safetensors.numpy import load_file

        for shard in sorted(folder.glob("*.safetensors")):
            for name, value in load_file(shard).items():
                tensors[name.removeprefix("transformer.")] = value.astype(np.float32)
        return tensors, config
    import torch

    for shard in sorted(folder.glob("pytorch_model*.bin")):
        state = torch.load(shard, map_location="cpu", weights_only=True)
        for name, value in state.items():
            tensors[name.removeprefix("transformer.")] = value.float().numpy()
    return tensors, config


def _init(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
    return name


def build_fused_decoder(weights: Mapping[str, np.ndarray], config: Mapping) -> onnx.ModelProto:
    """Build the fused GPT-2 decoder graph (fp32) from checkpoint tensors.

    Args:
        weights: tensors named as GPT2Model's state dict (``wte.weight``,
            ``h.0.attn.c_attn.weight``...).
        config: the checkpoint's config.json as a dict (n_layer, n_head, n_embd, vocab_size,
            layer_norm_epsilon).

    The LM head is tied, as Optimum writes it: ``MatMul(h, Transpose(wte))``, so the weight is
    stored once and onnxruntime folds the Transpose when the session starts; the quantizers
    (``int4.materialize_lm_head``) recognise this shape and let the embedding Gather share the
    quantized LM head.
    """
    n_layer, n_head, n_embd = int(config["n_layer"]), int(config["n_head"]), int(config["n_embd"])
    vocab = int(config["vocab_size"])
    eps = float(config.get("layer_norm_epsilon", 1e-5))
    head = n_embd // n_head
    nodes: list[onnx.NodeProto] = []
    graph = helper.make_graph([], "gpt2_fused_decoder", [], [])

    def node(op: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs) -> None:
        nodes.append(
            helper.make_node(op, inputs, outputs, name=f"{op}_{len(nodes)}", domain=domain, **attrs)
        )

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("logits_index", TensorProto.INT64, ["batch", "kept"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "kept", vocab])]
    for i in range(n_layer):
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kind}",
                    TensorProto.FLOAT,
                    ["batch", n_head, "past", head],
                )
            )
            outputs.append(
                helper.make_tensor_value_info(
                    f"present.{i}.{kind}", TensorProto.FLOAT, ["batch", n_head, "present", head]
                )
            )

    # GQA wants seqlens_k = (tokens seen so far, this step included) - 1 per row, and the total
    # length as a scalar; both come from the attention mask like onnxruntime-genai's builder does.
    _init(graph, "one_i64", np.array(1, dtype=np.int64))
    _init(graph, "axes_1", np.array([1], dtype=np.int64))
    node("ReduceSum", ["attention_mask", "axes_1"], ["mask_sum"], keepdims=0)
    node("Sub", ["mask_sum", "one_i64"], ["seqlens_i64"])
    node("Cast", ["seqlens_i64"], ["seqlens_k"], to=TensorProto.INT32)
    node("Shape", ["attention_mask"], ["mask_shape"], start=1, end=2)
    _init(graph, "scalar_shape", np.array([], dtype=np.int64))
    node("Reshape", ["mask_shape", "scalar_shape"], ["total_i64"])
    node("Cast", ["total_i64"], ["total_seq_len"], to=TensorProto.INT32)

    # Embeddings: token + position. (B, S, E)
    _init(graph, "wte", weights["wte.weight"])  # (V, E)
    _init(graph, "wpe", weights["wpe.weight"])
    node("Gather", ["wte", "input_ids"], ["tok_emb"])
    node("Gather", ["wpe", "position_ids"], ["pos_emb"])
    node("Add", ["tok_emb", "pos_emb"], ["resid_0"])

    def ln_params(prefix: str) -> tuple[str, str]:
        return (
            _init(graph, f"{prefix}.weight", weights[f"{prefix}.weight"]),
            _init(graph, f"{prefix}.bias", weights[f"{prefix}.bias"]),
        )

    def linear(x: str, prefix: str, out: str, with_bias: bool = True) -> str:
        w = _init(graph, f"{prefix}.weight", weights[f"{prefix}.weight"])  # Conv1D: (in, out)
        if not with_bias:
            node("MatMul", [x, w], [out])
            return out
        b = _init(graph, f"{prefix}.bias", weights[f"{prefix}.bias"])
        node("MatMul", [x, w], [f"{out}_mm"])
        node("Add", [f"{out}_mm", b], [out])
        return out

    # Layer 0's ln_1 has no pending residual add; later ln_1s are SkipLayerNorms that also add the
    # previous MLP output (and its bias) to the residual stream, saving one pass over (B,S,E).
    g, b = ln_params("h.0.ln_1")
    node("LayerNormalization", ["resid_0", g, b], ["ln1_0"], axis=-1, epsilon=eps)
    resid = "resid_0"
    for i in range(n_layer):
        p = f"h.{i}"
        qkv = linear(f"ln1_{i}", f"{p}.attn.c_attn", f"qkv_{i}")  # (B, S, 3E) = [q | k | v]
        node(
            "GroupQueryAttention",
            [
                qkv,
                "",
                "",
                f"past_key_values.{i}.key",
                f"past_key_values.{i}.value",
                "seqlens_k",
                "total_seq_len",
            ],
            [f"attn_{i}", f"present.{i}.key", f"present.{i}.value"],
            domain=MS,
            num_heads=n_head,
            kv_num_heads=n_head,
            scale=1.0 / math.sqrt(head),
        )  # attn: (B, S, E); present: (B, nh, T, hs)
        attn_out = linear(f"attn_{i}", f"{p}.attn.c_proj", f"attn_proj_{i}", with_bias=False)
        g, b = ln_params(f"{p}.ln_2")
        bias = _init(graph, f"{p}.attn.c_proj.bias", weights[f"{p}.attn.c_proj.bias"])
        node(
            "SkipLayerNormalization",
            [attn_out, resid, g, b, bias],
            [f"ln2_{i}", "", "", f"resid_mid_{i}"],
            domain=MS,
            epsilon=eps,
        )
        fc = linear(f"ln2_{i}", f"{p}.mlp.c_fc", f"fc_{i}", with_bias=False)
        fc_bias = _init(graph, f"{p}.mlp.c_fc.bias", weights[f"{p}.mlp.c_fc.bias"])
        node("FastGelu", [fc, fc_bias], [f"gelu_{i}"], domain=MS)  # GPT-2's tanh GELU, exactly
        mlp_out = linear(f"gelu_{i}", f"{p}.mlp.c_proj", f"mlp_{i}", with_bias=False)
        nxt = f"h.{i + 1}.ln_1" if i + 1 < n_layer else "ln_f"
        g, b = ln_params(nxt)
        bias = _init(graph, f"{p}.mlp.c_proj.bias", weights[f"{p}.mlp.c_proj.bias"])
        normed = f"ln1_{i + 1}" if i + 1 < n_layer else "final_norm"
        node(
            "SkipLayerNormalization",
            [mlp_out, f"resid_mid_{i}", g, b, bias],
            [normed, "", "", f"resid_{i + 1}"],
            domain=MS,
            epsilon=eps,
        )
        resid = f"resid_{i + 1}"

    # Only the asked-for positions reach the LM head: (B, S, E) -> (B, K, E).
    _logits_positions(graph, node)
    _init(graph, "axes_last", np.array([-1], dtype=np.int64))
    node("Unsqueeze", ["wanted", "axes_last"], ["logits_index_3d"])  # (B, K, 1)
    node("GatherND", ["final_norm", "logits_index_3d"], ["kept_norm"], batch_dims=1)
    node("Transpose", ["wte"], ["wte_t"], perm=[1, 0])  # the tied LM head (see the docstring)
    node("MatMul", ["kept_norm", "wte_t"], ["logits"])

    graph.node.extend(nodes)
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
        producer_name="gpt2-edge",
    )
    model.ir_version = 8
    helper.set_model_props(model, {"gpt2_edge_graph": FUSED_GRAPH_TAG})
    return model


def _logits_positions(graph: onnx.GraphProto, node: Callable[..., None]) -> None:
    """Add ``wanted`` (B, K): the fed ``logits_index``, or every position when it is not fed.

    ``logits_index`` is an overridable initializer whose default is an empty (1, 0) index. A
    caller that does not feed it (onnxruntime-genai feeds only the inputs it knows) gets the
    logits of every position, (B, S, V), the shape such a caller binds and reads each row's last
    real token from. Fed (B, K), it is used as it is; the "every position" part is then (B, 0).
    The cost is a dozen ops on a few integers: +6.4 us a call at batch 1, +3.7 us at batch 8
    (median of 4,000 alternating runs of this subgraph against the bare GatherND, onnxruntime
    1.32, 2 threads), against milliseconds for a GPT-2 124M decode step.
    """
    _init(graph, "logits_index", np.zeros((1, 0), dtype=np.int64))
    _init(graph, "zero_i64", np.array(0, dtype=np.int64))
    _init(graph, "zero_1d", np.array([0], dtype=np.int64))
    _init(graph, "one_1d", np.array([1], dtype=np.int64))
    node("Shape", ["input_ids"], ["batch_1d"], start=0, end=1)  # [B]
    node("Shape", ["input_ids"], ["seq_1d"], start=1, end=2)  # [S]
    node("Shape", ["logits_index"], ["kept_1d"], start=1, end=2)  # [K]; 0 when not fed
    node("Equal", ["kept_1d", "zero_1d"], ["not_fed"])
    node("Cast", ["not_fed"], ["not_fed_i64"], to=TensorProto.INT64)
    node("Mul", ["seq_1d", "not_fed_i64"], ["every_1d"])  # [S] when not fed, else [0]
    node("Reshape", ["every_1d", "scalar_shape"], ["every_count"])
    node("Range", ["zero_i64", "every_count", "one_i64"], ["every"])  # (S,) or (0,)
    node("Unsqueeze", ["every", "zero_1d"], ["every_2d"])  # (1, S) or (1, 0)
    node("Concat", ["batch_1d", "one_1d"], ["rows_shape"], axis=0)  # [B, 1]
    node("Expand", ["logits_index", "rows_shape"], ["fed_rows"])  # (B, K)
    node("Expand", ["every_2d", "rows_shape"], ["every_rows"])  # (B, S) or (B, 0)
    node("Concat", ["fed_rows", "every_rows"], ["wanted"], axis=1)  # (B, K) or (B, S)


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


def build_fused(checkpoint: Path, work_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    """Build the fused fp32 graph into ``work_dir`` (checked against Optimum's by the pipeline,
    ``checks/parity.check_fused``).

    Returns:
        (path of the fused model, graph description for bundle.json), or (None, a description
        saying why the Optimum graph is kept) when the builder does not cover the checkpoint.
    """
    from ..onnx_files import save_model

    weights, config = load_gpt2_weights(checkpoint)
    reason = unsupported_reason(config, weights)
    if reason:
        return None, {**OPTIMUM_GRAPH, "fused_skipped": reason}
    model = build_fused_decoder(weights, config)
    del weights
    work_dir.mkdir(parents=True, exist_ok=True)
    path = save_model(model, work_dir / "model.onnx")
    return path, dict(FUSED_GRAPH)
