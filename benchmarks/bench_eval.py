"""``gpt2-eval`` speed: logits at the scored positions only against logits at every position.

Target (issue 14): on the standard context 1024 / stride 512, the perplexity loop that asks the
graph for logits only at the positions that predict a target (its ``logits_index`` input; what
``gpt2-eval`` does) is at least 1.8x faster than computing every position, with the same
perplexity to 6 significant digits. Three paths run alternately in one process, on the first N
tokens of WikiText-2 test, each round timing every path once; the table shows medians:

- ``scored``: :func:`~gpt2_edge.runtime.generation.evaluate.perplexity` (logits at the scored
  rows only);
- ``all``: every position's logits (``window_logits`` + ``window_loss``), same log-softmax;
- ``all-f64``: every position and a float64 log-softmax: ``gpt2-eval`` before issue 14.

Models: the 4-layer trained fixture's int8 bundle (exported once into ``.cache/fixture-int8``),
where the 50257-wide LM head is most of the work, and the 124M int8 bundle (random weights, real
config) from ``models.py``, where the 12 layers are.

    python benchmarks/bench_eval.py [--models fixture,124m] [--tokens N] [--rounds 3]
        [--threads 2] [--json-out results/eval.json]

``--tokens 0`` scores the whole test set (about 287k tokens: minutes per path).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "gpt2-wikitext-tiny"
WIKITEXT = HERE.parent.parent / "shared" / "data" / "wikitext-2" / "test.txt"
CONTEXT, STRIDE = 1024, 512
# Tokens per model so that the default run (3 paths x 3 rounds, both models) stays near 1 min on 2
# idle cores: 23 windows of the fixture, 3 of the 124M model. The first window scores all its rows
# (1 in 577 on the whole test set), so fewer windows understate the gain.
DEFAULT_TOKENS = {"fixture": 12288, "124m": 2048}
TARGET_RATIO = 1.8
PATHS = ("scored", "all", "all-f64")


def fixture_bundle() -> Path:
    """The trained fixture's default int8 bundle, exported (again) if absent or unreadable."""
    from gpt2_edge.runtime.contract.bundle import load_bundle
    from gpt2_edge.runtime.errors import EdgeError

    folder = CACHE / "fixture-int8"
    try:
        load_bundle(folder)
        return folder
    except EdgeError:
        from gpt2_edge.exporter import export_bundle

        return export_bundle(str(FIXTURE), folder, quantize=True, force=True, progress=True)


def bundle_path(model: str) -> Path:
    if model == "fixture":
        return fixture_bundle()
    sys.path.insert(0, str(HERE))
    from models import ours

    return ours(model, "int8", CACHE)[0]


def float64_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The log-softmax ``gpt2-eval`` used before issue 14: float64, 128 rows at a time."""
    out = np.empty(len(targets), dtype=np.float64)
    for start in range(0, len(targets), 128):
        stop = min(start + 128, len(targets))
        rows = logits[start:stop].astype(np.float64)  # (R, V)
        peak = rows.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(rows - peak).sum(axis=-1)) + peak[:, 0]
        out[start:stop] = log_z - rows[np.arange(stop - start), targets[start:stop]]
    return out


def loss_before(logits: np.ndarray, chunk: np.ndarray, window: Any) -> tuple[float, int, int]:
    """``window_loss`` as it was before issue 14: the same targets, the float64 log-softmax."""
    first = max(len(chunk) - window.trg_len, 1)
    if first >= len(chunk):
        return 0.0, 0, first
    nll = float64_nll(logits[first - 1 : len(chunk) - 1], chunk[first:])
    return float(nll.mean()), min(window.trg_len, len(chunk)) - 1, first


def every_position(session: Any, ids: np.ndarray, loss: Callable[..., Any]) -> tuple[float, int]:
    """Perplexity and the guide's token count from the logits of every position of each window."""
    from gpt2_edge.runtime.generation.evaluate import plan_windows, window_logits

    nll_sum, n_scored = 0.0, 0
    for window in plan_windows(len(ids), CONTEXT, STRIDE):
        chunk = ids[window.begin : window.end]
        mean, weight, _ = loss(window_logits(session, chunk), chunk, window)  # (T, V) logits
        nll_sum, n_scored = nll_sum + mean * weight, n_scored + weight
    return math.exp(nll_sum / n_scored), n_scored


def runners(session: Any, ids: np.ndarray) -> dict[str, Callable[[], tuple[float, int]]]:
    from gpt2_edge.runtime.generation.evaluate import perplexity, window_loss

    def scored() -> tuple[float, int]:
        result = perplexity(session, ids, CONTEXT, STRIDE)
        return result.perplexity, result.scored_tokens

    return {
        "scored": scored,
        "all": lambda: every_position(session, ids, window_loss),
        "all-f64": lambda: every_position(session, ids, loss_before),
    }


def same_to_6_digits(a: float, b: float) -> bool:
    """Within half a unit of the 6th significant digit of ``b``."""
    return abs(a - b) < 0.5 * 10 ** (math.floor(math.log10(abs(b))) - 5)


def bench_model(model: str, tokens: int, rounds: int, threads: int) -> dict[str, Any]:
    from gpt2_edge.runtime.contract.bundle import load_bundle
    from gpt2_edge.runtime.generation.evaluate import encode, plan_windows
    from gpt2_edge.runtime.graph.session import Session

    folder = bundle_path(model)
    bundle = load_bundle(folder)
    session = Session(bundle, provider="cpu", threads=threads)
    ids = encode(bundle.tokenizer_path, WIKITEXT.read_text(encoding="utf-8"))
    ids = ids[:tokens] if tokens else ids
    paths = runners(session, ids)
    seconds: dict[str, list[float]] = {name: [] for name in PATHS}
    found: dict[str, tuple[float, int]] = {}
    for r in range(rounds):  # A B C A B C ...: load swings hit every path alike
        for name in PATHS:
            t0 = time.perf_counter()
            found[name] = paths[name]()
            seconds[name].append(time.perf_counter() - t0)
            took = seconds[name][-1]
            print(f"[eval] {model} round {r + 1} {name}: {took:.2f} s", file=sys.stderr)
    rows = []
    for name in PATHS:
        ppl, n_scored = found[name]
        median = statistics.median(seconds[name])
        rows.append(
            {"path": name, "seconds": median, "tokens_per_second": n_scored / median,
             "perplexity": ppl, "scored_tokens": n_scored, "all_seconds": seconds[name]}
        )  # fmt: skip
    by = {row["path"]: row for row in rows}
    reference = by["all-f64"]["perplexity"]
    return {
        "model": model,
        "bundle": str(folder),
        "tokens": len(ids),
        "windows": len(plan_windows(len(ids), CONTEXT, STRIDE)),
        "rows": rows,
        "speedup_vs_all": by["all"]["seconds"] / by["scored"]["seconds"],
        "speedup_vs_before": by["all-f64"]["seconds"] / by["scored"]["seconds"],
        "same_6_digits": all(same_to_6_digits(row["perplexity"], reference) for row in rows),
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['model']}: {result['tokens']} tokens, {result['windows']} windows "
          f"(context {CONTEXT}, stride {STRIDE})")  # fmt: skip
    print(f"{'path':8s} {'seconds':>8s} {'tokens/s':>9s} {'perplexity':>14s}")
    for row in result["rows"]:
        print(f"{row['path']:8s} {row['seconds']:8.2f} {row['tokens_per_second']:9.0f} "
              f"{row['perplexity']:14.7f}")  # fmt: skip
    print(f"scored vs all: {result['speedup_vs_all']:.2f}x; vs before (all-f64): "
          f"{result['speedup_vs_before']:.2f}x (target {TARGET_RATIO}x); "
          f"same to 6 digits: {result['same_6_digits']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fixture,124m", help="fixture, 124m, 355m")
    parser.add_argument("--tokens", type=int, default=None, help="default per model; 0: all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    import onnxruntime

    report: dict[str, Any] = {
        "benchmark": "bench_eval",
        "context": CONTEXT,
        "stride": STRIDE,
        "threads": args.threads,
        "rounds": args.rounds,
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "models": [],
    }
    for model in args.models.split(","):
        tokens = DEFAULT_TOKENS.get(model, 2048) if args.tokens is None else args.tokens
        result = bench_model(model, tokens, args.rounds, args.threads)
        print_table(result)
        report["models"].append(result)
    report["load_after"] = os.getloadavg()[0]
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
