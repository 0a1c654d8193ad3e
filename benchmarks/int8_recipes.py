"""int8 recipes side by side: speed on GPT-2 124M, invariance and perplexity on the trained fixture.

Every recipe starts from the exporter's fused fp32 graph and is built from the exporter's own
pieces (Optimum's ORTQuantizer, ``exporter/edits/rewrites.py``, ``per_row.py``,
``recipes/nbits.py``), so the shipped recipe is measured exactly as it ships:

- ``per-tensor (before)``: ORTQuantizer's dynamic int8 as it was shipped until 2026-11-30, one
  activation scale per tensor (``DynamicQuantizeLinear``), 8-bit weights, LM head blocks of 128;
- ``per-row, 7-bit weights (shipped)``: the ``portable`` default, activations per row, each
  quantizer ending in one ``QuantizeLinear`` and each product one ``MatMulIntegerToFloat`` with
  the row scale (7 ops a projection);
- ``per-row, 8-bit weights``: ``--target avx512_vnni`` / ``arm64``;
- ``per-row, 7-bit, 12 ops (until 2026-11-30)``: the same numbers in the first per-row form
  (``Div, Round, Add, Cast`` and ``MatMulInteger, Cast, Mul, Mul``: 12 ops a projection), and each
  of the two rewrites alone (``QuantizeLinear only``, ``MatMulIntegerToFloat only``);
- ``MatMulNBits 8-bit, block 32``: weight-only 8-bit for every projection, int8 compute (onnxruntime
  quantizes each block of each input row itself).

Bundles are cached under ``<workdir>/int8-recipes`` in folders named after the recipe and a hash
of the exporter code that builds it. ``--only 3,1`` measures recipes 3 and 1 (the first listed is
the table's baseline); ``--no-quality`` skips invariance and perplexity.

Speed: 128-token prompt, 128 greedy new tokens (EOS ignored), batch 1 and batch 8, 2 threads,
one warm-up, then ``--rounds`` rounds in which the recipes take turns (this machine's speed drifts,
so only alternating runs are compared). Invariance: the 8 prompts of 1-60 tokens of
``tests/runtime/test_batch_invariance.py``, 64 greedy tokens, alone vs in one batch, and cached vs
recomputed. Perplexity: WikiText-2 test, first 4,096 tokens, context 1024 / stride 512.

    python benchmarks/int8_recipes.py --json-out benchmarks/results/int8-recipes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_generate import PROMPT_TEXT  # noqa: E402

import models as bench_models  # noqa: E402  (benchmarks/ is a folder of scripts)

SHARED = HERE.parent.parent / "shared"
FIXTURE = SHARED / "fixtures" / "gpt2-wikitext-tiny"
WIKITEXT = SHARED / "data" / "wikitext-2" / "test.txt"
PROMPT_LENGTHS = (1, 3, 7, 12, 20, 31, 45, 60)
Recipe = Callable[[Path, Path], None]  # (fused fp32 model.onnx, output folder) -> model.onnx there


def _ort_int8(
    src: Path,
    out: Path,
    reduce_range: bool,
    per_row: bool,
    head_block: int,
    quantize_linear: bool = True,
    fused_product: bool = True,
) -> None:
    from gpt2_edge.exporter.edits.per_row import per_row_activations
    from gpt2_edge.exporter.edits.rewrites import materialize_lm_head, type_intermediates
    from gpt2_edge.exporter.onnx_files import save_model
    from gpt2_edge.exporter.recipes.int8 import OPERATORS, ort_quantize, quantization_config
    from gpt2_edge.exporter.recipes.nbits import NBitsSettings, quantize_lm_head
    from gpt2_edge.exporter.recipes.targets import Target

    model = onnx.load(str(src))
    head = materialize_lm_head(model)
    assert head is not None
    type_intermediates(model)
    stage = out / "stage"
    stage.mkdir(parents=True)
    save_model(model, stage / "model.onnx")
    target = Target("bench", reduce_range, "")
    config = quantization_config(target, [head[0]], OPERATORS["fused-gqa"])
    model = onnx.load(str(ort_quantize(stage / "model.onnx", out / "q", config, False)))
    shutil.rmtree(stage)
    shutil.rmtree(out / "q")
    if per_row:
        per_row_activations(model, quantize_linear, fused_product)
    settings = NBitsSettings(bits=8, block_size=head_block, accuracy_level=4, symmetric=True)
    model, _ = quantize_lm_head(model, head, settings)
    save_model(model, out / "model.onnx")


def _nbits8(src: Path, out: Path, block: int) -> None:
    from gpt2_edge.exporter.edits.rewrites import materialize_lm_head
    from gpt2_edge.exporter.onnx_files import save_model
    from gpt2_edge.exporter.recipes.nbits import NBitsSettings, nbits_quantize, quantize_lm_head

    model = onnx.load(str(src))
    head = materialize_lm_head(model)
    assert head is not None
    settings = NBitsSettings(bits=8, block_size=block, accuracy_level=4, symmetric=True)
    model = nbits_quantize(model, settings, True, [head[0]])
    model, _ = quantize_lm_head(model, head, settings)
    save_model(model, out / "model.onnx")


RECIPES: dict[str, Recipe] = {
    "per-tensor (before)": lambda s, o: _ort_int8(s, o, False, False, 128),
    "per-row, 7-bit weights (shipped)": lambda s, o: _ort_int8(s, o, True, True, 64),
    "per-row, 8-bit weights": lambda s, o: _ort_int8(s, o, False, True, 64),
    "per-row, 7-bit, 12 ops (until 2026-11-30)": lambda s, o: _ort_int8(
        s, o, True, True, 64, False, False
    ),
    "MatMulNBits 8-bit, block 32": lambda s, o: _nbits8(s, o, 32),
    "per-row, 7-bit, QuantizeLinear only": lambda s, o: _ort_int8(
        s, o, True, True, 64, True, False
    ),
    "per-row, 7-bit, MatMulIntegerToFloat only": lambda s, o: _ort_int8(
        s, o, True, True, 64, False, True
    ),
}


def build(fp32_bundle: Path, recipe: str, folder: Path) -> Path:
    """A bundle folder: ``fp32_bundle``'s manifest and tokenizer with the recipe's graph."""
    from gpt2_edge.runtime.contract.files import file_entry
    from gpt2_edge.runtime.contract.manifest import read_manifest, write_manifest

    if (folder / "bundle.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    RECIPES[recipe](fp32_bundle / "model.onnx", tmp)
    for name in ("tokenizer.json", "bundle.json"):
        shutil.copy(fp32_bundle / name, tmp / name)
    manifest = read_manifest(tmp)
    manifest.precision = {"dtype": "int8", "method": "dynamic", "choice": recipe}
    manifest.files = {
        p.name: file_entry(p) for p in sorted(tmp.iterdir()) if p.name.startswith("model.onnx")
    }
    manifest.files["tokenizer.json"] = file_entry(tmp / "tokenizer.json")
    write_manifest(tmp, manifest)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def fp32_bundle(checkpoint: Path, folder: Path) -> Path:
    from gpt2_edge.exporter import export_bundle

    if not (folder / "bundle.json").is_file():
        export_bundle(str(checkpoint), folder, verify=False, progress=False, force=True)
    return folder


def speed(bundles: dict[str, Path], rounds: int, threads: int) -> dict[str, dict[str, float]]:
    """Median decode tok/s and prefill ms per recipe, batch 1 and 8.

    Each measurement runs in a fresh process (one session at a time: onnxruntime's idle threads
    of another session spin and steal the cores), and the recipes take turns round by round.
    """
    runs: dict[str, dict[str, list[float]]] = {n: {} for n in bundles}
    for r in range(rounds):
        for name, path in bundles.items():
            cmd = [sys.executable, __file__, "--child", str(path), "--threads", str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            for key, value in json.loads(out.splitlines()[-1]).items():
                runs[name].setdefault(key, []).append(value)
        print(f"[int8_recipes] speed round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return {n: {k: statistics.median(v) for k, v in m.items()} for n, m in runs.items()}


def child(path: Path, threads: int) -> None:
    """One measurement of one bundle: 128-token prompt, 128 greedy tokens, batch 1 then 8."""
    from gpt2_edge.runtime import load

    gen = load(path, provider="cpu", threads=threads)
    prompt = gen.tokenizer.decode(list(gen.tokenizer.encode(PROMPT_TEXT * 2)[:128]))
    settings = dict(max_new_tokens=128, temperature=0.0, ignore_eos=True)
    gen.generate(prompt, max_new_tokens=8, temperature=0.0, ignore_eos=True)  # warm-up
    cpu = time.process_time()
    one = gen.generate(prompt, **settings).timings
    cpu = time.process_time() - cpu
    eight = gen.generate_batch([prompt] * 8, **settings)[0].timings
    figures = {
        "decode_tok_s": one.decode_tokens_per_s,
        "prefill_ms": one.prefill_ms,
        "batch8_tok_s": eight.decode_tokens_per_s * 8,
        # CPU time (all threads, onnxruntime's spinning included) per new token, prompt included:
        # with --threads 1 it moves much less than wall time when other processes share the cores
        "cpu_ms_per_token": cpu * 1000 / settings["max_new_tokens"],
    }
    print(json.dumps(figures))


def invariance(bundle: Path) -> dict[str, Any]:
    """Rows that change in a batch, cached vs recomputed differences, and perplexity."""
    from gpt2_edge.exporter.checks.quality import greedy_tokens
    from gpt2_edge.runtime import load
    from gpt2_edge.runtime.contract.bundle import load_bundle
    from gpt2_edge.runtime.generation.evaluate import encode, perplexity, window_logits
    from gpt2_edge.runtime.graph.session import Session

    gen = load(bundle, provider="cpu", threads=1)
    words = WIKITEXT.read_text(encoding="utf-8").split()
    prompts = []
    for i, n in enumerate(PROMPT_LENGTHS):
        text = " ".join(words[500 + 97 * i : 580 + 97 * i])
        prompts.append(gen.tokenizer.decode(list(gen.tokenizer.encode(text)[:n])))
    settings = dict(max_new_tokens=64, temperature=0.0, ignore_eos=True)
    alone = [gen.generate(p, **settings).tokens for p in prompts]
    batch = [r.tokens for r in gen.generate_batch(prompts, **settings)]
    session = Session(load_bundle(bundle), provider="cpu", threads=1)
    cache_differs = 0
    for p in prompts:
        ids = gen.encode(p).tolist()
        seq, recomputed = list(ids), []
        for _ in range(64):
            recomputed.append(int(window_logits(session, np.asarray(seq, np.int64))[-1].argmax()))
            seq.append(recomputed[-1])
        cache_differs += greedy_tokens(session, ids, 64) != recomputed
    ids = encode(bundle / "tokenizer.json", WIKITEXT.read_text(encoding="utf-8"))[:4096]
    return {
        "batch_rows_changed": sum(a != b for a, b in zip(alone, batch, strict=True)),
        "cached_vs_recomputed_differ": cache_differs,
        "perplexity": perplexity(session, ids, 1024, 512).perplexity,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", type=Path, default=bench_models.DEFAULT_WORKDIR)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument(
        "--only",
        default="",
        help="comma list of recipe numbers (0-based) to measure, in this order (the first is the "
        "table's baseline)",
    )
    p.add_argument("--no-quality", action="store_true", help="speed only (no invariance or ppl)")
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.threads)
    work = args.workdir / "int8-recipes"
    results: dict[str, Any] = {"cpu": cpu_name(), "recipes": {}}
    fixture = fp32_bundle(FIXTURE, work / "fixture-fp32")
    quality = not args.no_quality
    fp32_fixture_ppl = invariance(fixture)["perplexity"] if quality else float("nan")
    big = fp32_bundle(bench_models.checkpoint("124m", args.workdir), work / "124m-fp32")
    bundles = {}
    chosen = [int(i) for i in args.only.split(",")] if args.only else range(len(RECIPES))
    for i in chosen:
        name = list(RECIPES)[i]
        print(f"[int8_recipes] building {name}", file=sys.stderr, flush=True)
        bundles[name] = build(big, name, work / f"124m-{_cache_key(name)}")
        small = build(fixture, name, work / f"fixture-{_cache_key(name)}")
        results["recipes"][name] = invariance(small) if quality else {}
    for name, figures in speed(bundles, args.rounds, args.threads).items():
        results["recipes"][name].update(figures)
    results["fixture_fp32_perplexity"] = fp32_fixture_ppl
    print_table(results)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _cache_key(recipe: str) -> str:
    """A folder name for a recipe's bundle that changes when the recipe or the exporter code that
    builds it changes, so that a cached bundle is never a stale build of another recipe."""
    import gpt2_edge.exporter as exporter

    root = Path(exporter.__file__).parent
    digest = hashlib.sha256(recipe.encode())
    for part in ("edits.py", "per_row.py", "recipes/int8.py", "recipes/nbits.py"):
        digest.update((root / part).read_bytes())
    slug = "".join(c if c.isalnum() else "-" for c in recipe.lower()).strip("-")
    return f"{slug[:40]}-{digest.hexdigest()[:8]}"


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def print_table(results: dict[str, Any]) -> None:
    base = next(iter(results["recipes"].values()))  # the first measured: normally "before"
    ref = results["fixture_fp32_perplexity"]
    print(f"\nCPU: {results['cpu']}; fixture fp32 perplexity {ref:.3f}\n")
    print(
        "| int8 recipe | decode tok/s (vs the first) | prefill ms | CPU ms/token | batch-8 tok/s "
        "| rows changed in a batch (of 8) | cached ≠ recomputed (of 8) | Δ ppl |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results["recipes"].items():
        ratio = r["decode_tok_s"] / base["decode_tok_s"]
        quality = (
            f"{r['batch_rows_changed']} | {r['cached_vs_recomputed_differ']} | "
            f"{(r['perplexity'] / ref - 1):+.3%}"
            if "perplexity" in r
            else "- | - | -"
        )
        print(
            f"| {name} | {r['decode_tok_s']:.1f} ({ratio:.0%}) | {r['prefill_ms']:.0f} | "
            f"{r['cpu_ms_per_token']:.2f} | {r['batch8_tok_s']:.0f} | {quality} |"
        )


if __name__ == "__main__":
    main()
