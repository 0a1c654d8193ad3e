"""Long context: decode speed and peak RSS with an 880-token prompt against a 128-token one, and
what the float16 KV cache costs in quality.

Speed and memory (random-weight GPT-2 124M, real config, 2 threads, 128 greedy new tokens, EOS
ignored; one child process per measurement, variants alternating, median of ``--rounds``):

- ``ours-int8``: the shipped recipe (float16 KV cache, long prompts prefilled in chunks);
- ``ours-int8-kv32``: the same weights with the float32 cache (``gpt2-export --kv-cache float32``).

Reported per variant: prefill ms, decode tok/s and the process's peak RSS for the short and the
long prompt, and long/short decode (issue 14's targets: >= 75 %, peak RSS <= 300 MiB).

Fidelity (the WikiText-2-trained fixture, ``../shared``; the same int8 weights with either cache):
perplexity over the WikiText-2 test text at context 1024 / stride 512 (every window attends over up
to 1,024 positions), and greedy agreement: ``--prompts`` prompts of 880 WikiText-2 tokens, 128 new
tokens each, how many tokens match the float32-cache run before the first difference.

    python benchmarks/bench_long_context.py                    # both parts, ~5 min on 2 cores
    python benchmarks/bench_long_context.py --skip-fidelity --rounds 5 --json-out long.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402  (benchmarks/ is a folder of scripts)

THREADS = 2
SHORT, LONG, NEW = 128, 880, 128
VARIANTS = ("ours-int8", "ours-int8-kv32")
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "gpt2-wikitext-tiny"
WIKITEXT = HERE.parent.parent / "shared" / "data" / "wikitext-2"
TARGET_RATIO, TARGET_RSS_MIB = 0.75, 300


def wikitext_test() -> str:
    files = sorted(WIKITEXT.rglob("*test*"))
    if not files:
        raise SystemExit(f"no WikiText-2 test file under {WIKITEXT}")
    return files[0].read_text(encoding="utf-8")


def prompt_ids(n: int, offset: int = 0) -> list[int]:
    """``n`` ids of WikiText-2's test text from token ``offset``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(bench_models.TOKENIZER_DIR / "tokenizer.json"))
    ids = tok.encode(wikitext_test()[: 40 * (offset + n)]).ids
    return ids[offset : offset + n]


def greedy(gen: Any, ids: list[int], new: int) -> tuple[list[int], float, float]:
    """Greedy tokens through the runtime's default decoder; (tokens, prefill s, decode tok/s)."""
    import numpy as np
    from gpt2_edge.runtime.decoders.interface import open_decoder

    decoder = open_decoder(gen.session, gen.pad_id, len(ids) + new)
    t0 = time.perf_counter()
    logits = decoder.prefill([np.array(ids, dtype=np.int64)])
    t1 = time.perf_counter()
    out = [int(logits[0].argmax())]
    for _ in range(new - 1):
        logits = decoder.decode(np.array([[out[-1]]], dtype=np.int64))[:, 0]
        out.append(int(logits[0].argmax()))
    t2 = time.perf_counter()
    return out, t1 - t0, (new - 1) / (t2 - t1)


def child(bundle: str, prompt_tokens: int) -> None:
    """One measurement in this process: load, one warm-up, one timed run; prints JSON."""
    from gpt2_edge.runtime import load

    gen = load(bundle, provider="cpu", threads=THREADS)
    # The bundle's own tokenizer: a second one would count ~20 MiB no user has in the peak RSS.
    text = wikitext_test()[: 40 * prompt_tokens]
    ids = gen.tokenizer.encode(text, add_special_tokens=False)[:prompt_tokens].tolist()
    assert len(ids) == prompt_tokens
    greedy(gen, ids, 8)
    _, prefill_s, tok_s = greedy(gen, ids, NEW)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"prefill_ms": prefill_s * 1e3, "decode_tok_s": tok_s, "peak_rss_mib": peak}))


def measure(bundle: Path, prompt_tokens: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(bundle), "--prompt-tokens", str(prompt_tokens)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode:
        raise SystemExit(f"child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(rounds: int) -> list[dict[str, Any]]:
    bundles = {
        "ours-int8": bench_models.ours("124m", "int8")[0],
        "ours-int8-kv32": bench_models.ours("124m", "int8", kv_cache="float32")[0],
    }
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for r in range(rounds):
        for length in (SHORT, LONG):
            for name in VARIANTS:
                result = measure(bundles[name], length)
                runs.setdefault((name, length), []).append(result)
                print(f"[long] round {r + 1}/{rounds} {name} {length} tokens: "
                      f"{result['decode_tok_s']:.1f} tok/s, {result['peak_rss_mib']:.0f} MiB",
                      file=sys.stderr)  # fmt: skip
    rows = []
    for name in VARIANTS:
        row: dict[str, Any] = {"variant": name}
        for length, tag in ((SHORT, "short"), (LONG, "long")):
            for key in ("prefill_ms", "decode_tok_s", "peak_rss_mib"):
                row[f"{tag}_{key}"] = round(
                    statistics.median(x[key] for x in runs[name, length]), 1
                )
        row["long_over_short"] = round(row["long_decode_tok_s"] / row["short_decode_tok_s"], 3)
        rows.append(row)
    return rows


def fidelity(prompts: int, eval_tokens: int) -> dict[str, Any]:
    """int8 with the float16 cache against the same weights with the float32 cache."""
    from gpt2_edge.exporter.pipeline import export_bundle
    from gpt2_edge.runtime import load
    from gpt2_edge.runtime.generation.evaluate import perplexity
    from tokenizers import Tokenizer

    cache = HERE / ".cache" / "fixture-long"
    gens = {}
    for kv in ("float16", "float32"):
        folder = cache / f"int8-kv-{kv}"
        if not (folder / "bundle.json").is_file():
            export_bundle(str(FIXTURE), folder, quantize=True, kv_cache=kv, force=True)
        gens[kv] = load(str(folder), provider="cpu", threads=THREADS)
    tok = Tokenizer.from_file(str(FIXTURE / "tokenizer.json"))
    ids = tok.encode(wikitext_test()).ids[:eval_tokens]
    ppl = {kv: perplexity(g.session, ids, 1024, 512).perplexity for kv, g in gens.items()}
    agree, total, identical = 0, 0, 0
    for p in range(prompts):
        prompt = prompt_ids(LONG, offset=1000 * (p + 1))
        ref, _, _ = greedy(gens["float32"], prompt, NEW)
        got, _, _ = greedy(gens["float16"], prompt, NEW)
        same = next((i for i, (a, b) in enumerate(zip(ref, got, strict=True)) if a != b), NEW)
        agree, total, identical = agree + same, total + NEW, identical + (same == NEW)
    return {
        "eval_tokens": len(ids),
        "ppl_kv_float32": round(ppl["float32"], 4),
        "ppl_kv_float16": round(ppl["float16"], 4),
        "ppl_change_pct": round(100 * (ppl["float16"] / ppl["float32"] - 1), 4),
        "greedy_prompts": prompts,
        "greedy_identical_prompts": identical,
        "greedy_tokens_before_first_difference_pct": round(100 * agree / total, 2),
    }


def print_tables(rows: list[dict[str, Any]], fid: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"GPT-2 124M int8, {THREADS} threads, {NEW} greedy tokens (median)")
    for col in ("variant", "prompt", "prefill ms", "decode tok/s", "peak RSS MiB", "long/short"):
        table.add_column(col, justify="left" if col in ("variant", "prompt") else "right")
    for row in rows:
        for tag, length in (("short", SHORT), ("long", LONG)):
            ratio = f"{row['long_over_short']:.0%}" if tag == "long" else ""
            table.add_row(row["variant"], f"{length} tokens", f"{row[f'{tag}_prefill_ms']:g}",
                          f"{row[f'{tag}_decode_tok_s']:g}", f"{row[f'{tag}_peak_rss_mib']:g}",
                          ratio)  # fmt: skip
    console.print(table)
    if fid:
        ft = Table(title="float16 KV cache vs float32 (trained fixture, int8 weights)")
        ft.add_column("measure")
        ft.add_column("value", justify="right")
        for key, value in fid.items():
            ft.add_row(key, str(value))
        console.print(ft)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompts", type=int, default=4, help="fidelity: long greedy prompts")
    p.add_argument("--eval-tokens", type=int, default=20_000, help="fidelity: perplexity tokens")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-fidelity", action="store_true")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--prompt-tokens", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.prompt_tokens)
        return
    rows = [] if args.skip_speed else speed(args.rounds)
    fid = (
        None
        if args.skip_fidelity or not FIXTURE.is_dir()
        else fidelity(args.prompts, args.eval_tokens)
    )
    print_tables(rows, fid)
    if args.json_out:
        cpu = platform.processor() or platform.machine()
        data = {"cpu": cpu, "cores": os.cpu_count(), "speed": rows, "fidelity": fid}
        args.json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
