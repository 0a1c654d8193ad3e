"""GPU throughput: our runtime on the CUDA provider against transformers + torch on the same GPU.

The bundles it builds keep model.onnx in one file (real exports over 32 MiB split the weights
out); that changes how fast a session starts, not how fast it generates.

For GPU machines that have onnxruntime-gpu, numpy, onnx and (for the peer) torch + transformers
but not Optimum: the fused decoder graph is built straight from random weights with the
exporter's own builder (``exporter/graphs/fused.py``), so no export step is needed. Random weights
with the real GPT-2 configs are enough for speed. Prompt 128 tokens, 128 greedy new tokens with
EOS ignored, batch 1 and 8, one warm-up, median of 3::

    python benchmarks/bench_cuda.py --tokenizer PATH/tokenizer.json --json-out cuda.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_generate import prompt_ids, prompt_text  # noqa: E402

CONFIGS = {
    "124m": dict(n_layer=12, n_embd=768, n_head=12),
    "355m": dict(n_layer=24, n_embd=1024, n_head=16),
}
VOCAB, CONTEXT, PROMPT, NEW, RUNS = 50257, 1024, 128, 128, 3


def random_weights(cfg: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """GPT2Model-named tensors, N(0, 0.02) like GPT-2's initialiser; LayerNorms at 1 and 0."""
    rng = np.random.default_rng(seed)
    e = cfg["n_embd"]

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    w = {"wte.weight": normal(VOCAB, e), "wpe.weight": normal(CONTEXT, e)}
    shapes = {"attn.c_attn": 3 * e, "attn.c_proj": e, "mlp.c_fc": 4 * e, "mlp.c_proj": e}
    for i in range(cfg["n_layer"]):
        for name, out in shapes.items():
            fan_in = 4 * e if name == "mlp.c_proj" else e
            w[f"h.{i}.{name}.weight"] = normal(fan_in, out)
            w[f"h.{i}.{name}.bias"] = np.zeros(out, np.float32)
        for ln in ("ln_1", "ln_2"):
            w[f"h.{i}.{ln}.weight"] = np.ones(e, np.float32)
            w[f"h.{i}.{ln}.bias"] = np.zeros(e, np.float32)
    w["ln_f.weight"], w["ln_f.bias"] = np.ones(e, np.float32), np.zeros(e, np.float32)
    return w


def build_bundle(folder: Path, cfg: dict[str, int], dtype: str, tokenizer: Path) -> Path:
    import onnx
    from gpt2_edge.exporter.graphs.fused import FUSED_GRAPH, build_fused_decoder
    from gpt2_edge.exporter.recipes.fp16 import convert_model
    from gpt2_edge.runtime.contract.files import file_entry
    from gpt2_edge.runtime.contract.manifest import Architecture, Manifest, write_manifest

    config = {**cfg, "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5}
    model = build_fused_decoder(random_weights(cfg), config)
    if dtype == "fp16":
        model = convert_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    e, h = cfg["n_embd"], cfg["n_head"]
    arch = Architecture(
        cfg["n_layer"],
        h,
        e // h,
        e,
        CONTEXT,
        VOCAB,
        kv_dtype="float16" if dtype == "fp16" else "float32",
    )
    files = {n: file_entry(folder / n) for n in ("model.onnx", "tokenizer.json")}
    manifest = Manifest(
        name=folder.name,
        architecture=arch,
        precision={"dtype": "float16" if dtype == "fp16" else "float32"},
        special_tokens={"bos": 50256, "eos": 50256, "pad": 50256},
        files=files,
        graph=dict(FUSED_GRAPH),
    )
    write_manifest(folder, manifest)
    return folder


def warm_then_median(once: Callable[[], tuple[float, float]]) -> dict[str, float]:
    """One warm-up call of ``once`` (-> prefill ms, decode tok/s), then the median of RUNS."""
    once()
    runs = [once() for _ in range(RUNS)]
    return {
        "prefill_ms": statistics.median(r[0] for r in runs),
        "decode_tok_s": statistics.median(r[1] for r in runs),
    }


def time_ours(folder: Path, text: str, batch: int) -> dict[str, float]:
    from gpt2_edge.runtime import load

    gen = load(folder, provider="cuda", check_hashes=False)
    prompts = [text] * batch

    def once() -> tuple[float, float]:
        res = gen.generate_batch(prompts, max_new_tokens=NEW, temperature=0, ignore_eos=True)
        first = res[0]
        return first.timings.prefill_ms, first.timings.decode_tokens_per_s * batch

    return warm_then_median(once)


def time_torch(cfg: dict[str, int], dtype: str, ids: list[int], batch: int) -> dict[str, float]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**cfg)).eval().cuda()
    if dtype == "fp16":
        model = model.half()
    input_ids = torch.tensor([ids] * batch, device="cuda")

    def once() -> tuple[float, float]:
        with torch.inference_mode():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(input_ids)
            torch.cuda.synchronize()
            prefill = time.perf_counter() - t0
            t0 = time.perf_counter()
            model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=False,
                pad_token_id=50256,
            )
            torch.cuda.synchronize()
            total = time.perf_counter() - t0
        # generate = one prefill + NEW - 1 decode steps
        return prefill * 1000, (NEW - 1) * batch / max(total - prefill, 1e-9)

    return warm_then_median(once)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, required=True, help="a GPT-2 tokenizer.json")
    ap.add_argument("--models", default="124m")
    ap.add_argument("--dtypes", default="fp32,fp16")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpt2-edge-cuda"))
    ap.add_argument("--no-torch", action="store_true", help="skip the transformers + torch peer")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    ids = prompt_ids(args.tokenizer, PROMPT)
    text = prompt_text(args.tokenizer, PROMPT)  # checked to encode back to exactly ``ids``
    rows = []
    for model in args.models.split(","):
        cfg = CONFIGS[model]
        for dtype in args.dtypes.split(","):
            folder = build_bundle(args.work / f"{model}-{dtype}", cfg, dtype, args.tokenizer)
            for batch in (int(b) for b in args.batches.split(",")):
                engines = ["ours"] if args.no_torch else ["ours", "transformers"]
                for engine in engines:
                    row = {"model": model, "dtype": dtype, "batch": batch, "engine": engine}
                    try:
                        if engine == "ours":
                            row.update(time_ours(folder, text, batch))
                        else:
                            row.update(time_torch(cfg, dtype, ids, batch))
                    except Exception as exc:  # a peer that fails is a row, not a crash
                        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print(f"\n{'model':6} {'dtype':5} {'batch':>5} {'engine':13} {'prefill ms':>10} {'tok/s':>8}")
    for r in rows:
        pre, dec = r.get("prefill_ms"), r.get("decode_tok_s")
        figures = f"{pre:10.1f} {dec:8.1f}" if dec else f"  {r.get('error')}"
        print(f"{r['model']:6} {r['dtype']:5} {r['batch']:5d} {r['engine']:13} {figures}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
