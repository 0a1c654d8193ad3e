"""A tiny fused-GQA bundle built without torch: the exporter's graph builder (onnx + numpy only)
on random weights, with the real GPT-2 tokenizer, written as a bundle the runtime loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

EOS = 50256
LAYERS, HEADS, WIDTH, CONTEXT, VOCAB = 2, 4, 64, 128, 50257


def random_weights(seed: int, vocab: int = VOCAB) -> dict[str, np.ndarray]:
    """GPT-2 tensors with peaked logits (embeddings of scale 1), so greedy has no near-ties."""
    rng = np.random.default_rng(seed)
    w = {
        "wte.weight": rng.normal(0, 1.0, (vocab, WIDTH)),
        "wpe.weight": rng.normal(0, 0.3, (CONTEXT, WIDTH)),
        "ln_f.weight": np.ones(WIDTH),
        "ln_f.bias": np.zeros(WIDTH),
    }
    shapes = {
        "attn.c_attn": (WIDTH, 3 * WIDTH),
        "attn.c_proj": (WIDTH, WIDTH),
        "mlp.c_fc": (WIDTH, 4 * WIDTH),
        "mlp.c_proj": (4 * WIDTH, WIDTH),
    }
    for i in range(LAYERS):
        for norm in ("ln_1", "ln_2"):
            w[f"h.{i}.{norm}.weight"] = 1 + rng.normal(0, 0.1, WIDTH)
            w[f"h.{i}.{norm}.bias"] = rng.normal(0, 0.1, WIDTH)
        for name, shape in shapes.items():
            w[f"h.{i}.{name}.weight"] = rng.normal(0, 0.3, shape)
            w[f"h.{i}.{name}.bias"] = rng.normal(0, 0.1, shape[1])
    return {k: v.astype(np.float32) for k, v in w.items()}


def build_fused_bundle(
    folder: Path, tokenizer_json: Path, seed: int = 0, half_kv: bool = False
) -> Path:
    """Write a fused-graph bundle of a random 2-layer GPT-2 into ``folder``; ``half_kv``: with
    the exporter's float16 KV cache (``exporter/edits/kv_cache.py``)."""
    import onnx
    from gpt2_edge.exporter.edits.kv_cache import half_kv_cache
    from gpt2_edge.exporter.graphs.fused import FUSED_GRAPH, build_fused_decoder
    from gpt2_edge.runtime.contract.files import file_entry
    from gpt2_edge.runtime.contract.manifest import Architecture, Manifest, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    config = {"n_layer": LAYERS, "n_head": HEADS, "n_embd": WIDTH, "vocab_size": VOCAB}
    model = build_fused_decoder(random_weights(seed), config)
    if half_kv:
        assert half_kv_cache(model) == LAYERS  # one attention per layer
    onnx.save(model, str(folder / "model.onnx"))
    shutil.copy(tokenizer_json, folder / "tokenizer.json")
    kv_dtype = "float16" if half_kv else "float32"
    arch = Architecture(LAYERS, HEADS, WIDTH // HEADS, WIDTH, CONTEXT, VOCAB, kv_dtype=kv_dtype)
    manifest = Manifest(
        name=folder.name,
        architecture=arch,
        special_tokens={"bos": EOS, "eos": EOS, "pad": EOS},
        generation={"temperature": 0.0},
        files={n: file_entry(folder / n) for n in ("model.onnx", "tokenizer.json")},
        graph=dict(FUSED_GRAPH),
    )
    write_manifest(folder, manifest)
    return folder
