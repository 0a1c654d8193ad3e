"""The README's precision table: file size, perplexity, top-1 agreement and decode speed.

Usage (needs the export extra and ../shared):
    python benchmarks/precision_report.py [--tokens 4096] [--threads 2] [--graph fused]
        [--out precision_report.json]

Exports the trained fixture (shared/fixtures/gpt2-wikitext-tiny) with ``gpt2-export``'s own
pipeline at fp32, int8 (``--quantize``), int4 (``--bits 4``) and fp16 (``--dtype fp16``), each
with verification and the quality gate as a user gets them, then for every bundle measures:

- ``model.onnx`` size (and external data, if any);
- perplexity on the first ``--tokens`` GPT-2 tokens of WikiText-2 test.txt, through the runtime's
  ``gpt2_edge.runtime.generation.evaluate.perplexity`` (context 1024, stride 512, as ``gpt2-eval``);
- top-1 agreement with the fp32 bundle over the same windows (``exporter/checks/quality.py``);
- decode tokens/s on ``--threads`` threads: ``gpt2_edge.runtime.load(...).generate(prompt,
  max_new_tokens=64, temperature=0, ignore_eos=True).timings``, median of ``--runs`` after a
  warm-up run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "gpt2-wikitext-tiny"
TEXT = SHARED / "data" / "wikitext-2" / "test.txt"
CONTEXT, STRIDE = 1024, 512
PROMPT = "The history of the city begins in the early 19th century, when"
NEW_TOKENS = 64
# name -> export_bundle keyword arguments
PRECISIONS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "int8": {"quantize": True},
    "int4": {"quantize": True, "bits": 4},
    "fp16": {"dtype": "fp16"},
}


def bundle_bytes(folder: Path) -> int:
    manifest = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    return sum(e["size"] for n, e in manifest["files"].items() if n.startswith("model.onnx"))


def decode_speed(folder: Path, threads: int, runs: int) -> dict[str, float]:
    from gpt2_edge.runtime import load

    model = load(folder, provider="cpu", threads=threads)
    speeds, prefill = [], []
    for i in range(runs + 1):
        timings = model.generate(
            PROMPT, max_new_tokens=NEW_TOKENS, temperature=0, ignore_eos=True
        ).timings
        if i:  # the first run warms up onnxruntime's kernels and allocations
            speeds.append(timings.decode_tokens_per_s)
            prefill.append(timings.prefill_ms)
    return {"decode_tok_s": statistics.median(speeds), "prefill_ms": statistics.median(prefill)}


def measure(folder: Path, ref_folder: Path, ids: Any, threads: int, runs: int) -> dict[str, Any]:
    from gpt2_edge.exporter.checks.quality import compare_on_ids
    from gpt2_edge.runtime.contract.bundle import load_bundle
    from gpt2_edge.runtime.generation.evaluate import perplexity
    from gpt2_edge.runtime.graph.session import Session

    manifest = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    cand = Session(load_bundle(folder), provider="cpu", threads=threads)
    ppl = perplexity(cand, ids, context=CONTEXT, stride=STRIDE)
    ref = Session(load_bundle(ref_folder), provider="cpu", threads=threads)
    cmp = compare_on_ids(ref, cand, ids, context=CONTEXT, stride=STRIDE)
    return {
        "precision": manifest["precision"],
        "graph": manifest.get("graph", {}).get("kind", "optimum"),
        "model_bytes": bundle_bytes(folder),
        "perplexity": ppl.perplexity,
        "scored_tokens": ppl.scored_tokens,
        "top1_agreement": cmp.top1_agreement,
        "max_logit_diff": cmp.max_logit_diff,
        "export_gate": manifest["verification"].get("quality", {}).get("builtin"),
        **decode_speed(folder, threads, runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="WikiText-2 test tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="timed generations per bundle")
    parser.add_argument("--graph", default="fused", choices=("fused", "optimum"))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "precision_report.json"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the bundles here")
    args = parser.parse_args()

    from gpt2_edge.exporter import export_bundle
    from gpt2_edge.runtime.generation.evaluate import encode
    from rich.console import Console
    from rich.table import Table

    console = Console()
    work = args.keep or Path(tempfile.mkdtemp(prefix="precision-report-"))
    folders: dict[str, Path] = {}
    export_s: dict[str, float] = {}
    for name, kwargs in PRECISIONS.items():
        t0 = time.perf_counter()
        folders[name] = export_bundle(
            str(FIXTURE), work / name, force=True, progress=False, graph=args.graph, **kwargs
        )
        export_s[name] = time.perf_counter() - t0
        console.print(f"exported {name} in {export_s[name]:.1f} s")
    ids = encode(folders["fp32"] / "tokenizer.json", TEXT.read_text(encoding="utf-8"))
    ids = ids[: args.tokens]
    rows = {}
    for name, folder in folders.items():
        rows[name] = {
            **measure(folder, folders["fp32"], ids, args.threads, args.runs),
            "export_s": export_s[name],
        }
        console.print(f"measured {name}")

    fp32 = rows["fp32"]
    title = (
        f"gpt2-wikitext-tiny, WikiText-2 test ({len(ids)} tokens, context {CONTEXT}, stride "
        f"{STRIDE}); decode {NEW_TOKENS} tokens on {args.threads} threads; graph {args.graph}"
    )
    table = Table(title=title)
    for col in ("precision", "model.onnx", "size", "perplexity", "Δppl", "top-1 vs fp32", "tok/s"):
        table.add_column(col, justify="left" if col == "precision" else "right")
    for name, r in rows.items():
        table.add_row(
            name,
            f"{r['model_bytes'] / 2**20:.2f} MiB",
            f"{r['model_bytes'] / fp32['model_bytes']:.0%}",
            f"{r['perplexity']:.3f}",
            f"{r['perplexity'] / fp32['perplexity'] - 1:+.2%}",
            f"{r['top1_agreement']:.2%}",
            f"{r['decode_tok_s']:.0f}",
        )
    console.print(table)
    meta = {
        "fixture": str(FIXTURE),
        "text": str(TEXT),
        "tokens": int(len(ids)),
        "context": CONTEXT,
        "stride": STRIDE,
        "threads": args.threads,
        "graph": args.graph,
        "prompt": PROMPT,
        "new_tokens": NEW_TOKENS,
        "runs": args.runs,
        "cpu": platform.processor() or platform.machine(),
        "onnxruntime": version("onnxruntime"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "precisions": rows}, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
