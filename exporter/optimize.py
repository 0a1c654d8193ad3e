"""Graph optimisation for GPT-2 decoders: a fused rebuild of the decoder graph, with parity checks.

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
memory; perplexity and verification pass every position.

Limits: ``GroupQueryAttention`` derives each row's length from ``attention_mask`` (its sum), so the
prompt batch must be right-padded or of equal length: a left-padded batch (transformers' habit)
gives wrong positions. The runtime must right-pad batches for this graph.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS = "com.microsoft"
OPSET = 17  # LayerNormalization is opset 17
# Written into metadata_props so a runtime can tell; v2 added the logits_index input.
FUSED_GRAPH_TAG = "gpt2-edge-fused-gqa-v2"


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
    _init(graph, "axes_last", np.array([-1], dtype=np.int64))
    node("Unsqueeze", ["logits_index", "axes_last"], ["logits_index_3d"])  # (B, K, 1)
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


def quantize_dynamic_int8(
    src: str | Path, dst: str | Path, per_channel: bool = True, exclude: list[str] | None = None
) -> Path:
    """Dynamic int8 (``MatMulInteger`` + ``DynamicQuantizeLinear``), the ORTQuantizer method."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=exclude or [],
        # Shape inference cannot type the outputs of com.microsoft ops; say they are float.
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )
    return Path(dst)


def parity(
    reference: str | Path,
    candidate: str | Path,
    n_layer: int,
    n_head: int,
    head_size: int,
    prompt_len: int = 16,
    steps: int = 4,
    vocab: int = 50257,
    seed: int = 0,
) -> dict[str, float]:
    """Run both graphs on the same random prompt + ``steps`` decode steps (growing past tensors).

    Returns the max |logit difference| over all positions and whether greedy picks agree.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = [
        ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        for p in (reference, candidate)
    ]
    ids = rng.integers(0, vocab, size=(1, prompt_len), dtype=np.int64)
    empty = np.zeros((1, n_head, 0, head_size), np.float32)
    pasts = [[empty] * (2 * n_layer) for _ in sessions]
    input_names = [{i.name for i in sess.get_inputs()} for sess in sessions]
    max_diff, agree, total = 0.0, 0, 0
    pos = 0
    for _ in range(steps + 1):
        s = ids.shape[1]
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones((1, pos + s), np.int64),
            "position_ids": np.arange(pos, pos + s, dtype=np.int64)[None],
        }
        logits = []
        for k, sess in enumerate(sessions):
            f = {n: v for n, v in feeds.items() if n in input_names[k]}
            if "logits_index" in input_names[k]:
                f["logits_index"] = np.arange(s, dtype=np.int64)[None]
            for i in range(n_layer):
                f[f"past_key_values.{i}.key"] = pasts[k][2 * i]
                f[f"past_key_values.{i}.value"] = pasts[k][2 * i + 1]
            out = sess.run(None, f)
            logits.append(out[0])
            pasts[k] = out[1:]
        max_diff = max(max_diff, float(np.abs(logits[0] - logits[1]).max()))
        a, b = logits[0][:, -1].argmax(-1), logits[1][:, -1].argmax(-1)
        agree += int((a == b).sum())
        total += a.size
        pos += s
        ids = a[:, None].astype(np.int64)
    return {"max_abs_logit_diff": max_diff, "greedy_agreement": agree / total}


def quantize_embedding(
    model: onnx.ModelProto, name: str = "wte", bits: int = 8, block_size: int = 32
) -> onnx.ModelProto:
    """Replace ``Gather(name, ids)`` by ``GatherBlockQuantized`` on a blockwise-quantized copy.

    Why: after weight-only quantization the fp32 token embedding (50257x768 = 147 MiB) is more
    than half the file and of the resident memory; 8-bit blocks make it 37 MiB. Stored with
    MatMulNBits' conventions (uint8, symmetric, implicit zero point 128 for 8 bits, 8 for 4 bits
    with the low nibble first).
    """
    inits = {t.name: t for t in model.graph.initializer}
    table = numpy_helper.to_array(inits[name]).astype(np.float32)  # (V, E)
    vocab, width = table.shape
    if width % block_size:
        raise ValueError(f"embedding width {width} is not a multiple of block_size {block_size}")
    blocks = table.reshape(vocab, width // block_size, block_size)
    qmax = (1 << (bits - 1)) - 1  # 127 or 7
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / qmax
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(blocks / scale), -qmax - 1, qmax).astype(np.int16) + (qmax + 1)
    q = q.reshape(vocab, width).astype(np.uint8)
    if bits == 4:
        q = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)  # low nibble = even element
    elif bits != 8:
        raise ValueError("bits must be 4 or 8")
    graph = model.graph
    graph.initializer.remove(inits[name])
    graph.initializer.extend(
        [
            numpy_helper.from_array(q, f"{name}_q{bits}"),
            numpy_helper.from_array(scale.reshape(vocab, width // block_size), f"{name}_scales"),
        ]
    )
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] == name:
            ids = node.input[1]
            node.op_type, node.domain = "GatherBlockQuantized", MS
            del node.input[:]
            node.input.extend([f"{name}_q{bits}", ids, f"{name}_scales"])
            node.attribute.extend(
                [
                    helper.make_attribute("gather_axis", 0),
                    helper.make_attribute("quantize_axis", 1),
                    helper.make_attribute("block_size", block_size),
                    helper.make_attribute("bits", bits),
                ]
            )
    return model
