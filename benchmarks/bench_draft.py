"""Prompt-lookup drafting: how many drafted tokens the model accepts, and what that buys.

Drafting only pays where the continuation repeats earlier text, and whether it does depends on
what the model predicts, so this needs a trained model: the fixture
``../shared/fixtures/gpt2-wikitext-tiny`` (GPT-2 architecture, 4 layers x 128, trained on
WikiText-2), exported once with ``export_bundle(..., quantize=True)`` (the int8 CPU bundle)
under ``--workdir``. Random weights (the 124M speed model) would measure nothing.

Two tasks, prompts from WikiText-2's test split, greedy, batch 1, 2 threads:

- ``repeat``: a paragraph, a blank line, then the paragraph's first 16 words again, so that the
  natural continuation quotes the passage;
- ``fresh``: the first 48 words of a paragraph, to continue with new text.

Each prompt runs without and with ``draft="prompt-lookup"``, greedy (the outputs must be
identical) and sampled (temperature 0.8, top-k 50, a seed per prompt: the same distribution,
other draws). Per task and mode: new tokens per second (median of ``--repeats`` passes over all
prompts), the speed-up, the share of drafted tokens accepted, and new tokens per model call
after the prefill.

    python benchmarks/bench_draft.py                    # 8 prompts per task, 64 new tokens
    python benchmarks/bench_draft.py --json-out benchmarks/results/draft.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURE = ROOT.parent / "shared" / "fixtures" / "gpt2-wikitext-tiny"
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2" / "test.txt"
THREADS = 2
QUOTED_WORDS = 16
FRESH_WORDS = 48


def bundle(workdir: Path) -> Path:
    """The fixture's int8 bundle, exported once."""
    folder = workdir / "fixture-int8"
    if not (folder / "bundle.json").is_file():
        from gpt2_edge.exporter import export_bundle

        export_bundle(str(FIXTURE), folder, quantize=True, progress=True)
    return folder


def paragraphs(count: int, skip: int = 0) -> list[str]:
    """WikiText-2 test paragraphs of 60 to 150 words, after the first ``skip`` of them."""
    lines = WIKITEXT.read_text(encoding="utf-8").splitlines()
    found = [line.strip() for line in lines if 60 <= len(line.split()) <= 150]
    return found[skip : skip + count]


def tasks(count: int) -> dict[str, list[str]]:
    quoted = [f"{p}\n\n{' '.join(p.split()[:QUOTED_WORDS])}" for p in paragraphs(count)]
    fresh = [" ".join(p.split()[:FRESH_WORDS]) for p in paragraphs(count, skip=count)]
    return {"repeat": quoted, "fresh": fresh}


class Counts:
    """Drafted tokens fed and accepted, and model calls, counted by wrapping TokenSteps."""

    def __init__(self) -> None:
        from gpt2_edge.runtime.generation import steps

        self.proposed = self.accepted = self.calls = 0
        verify, step = steps.TokenSteps._verify, steps.TokenSteps.__next__

        def counted_verify(this: Any, drafts: list[Any]) -> Any:
            tokens, raw = verify(this, drafts)
            width = 1 + max(d.size for d in drafts)
            self.proposed += (width - 1) * len(tokens)
            self.accepted += sum(len(t) - 1 for t in tokens)
            return tokens, raw

        def counted_step(this: Any) -> Any:
            self.calls += 1
            return step(this)

        steps.TokenSteps._verify = counted_verify
        steps.TokenSteps.__next__ = counted_step


SAMPLED = {"temperature": 0.8, "top_k": 50}


def run(gen: Any, prompts: list[str], settings: dict[str, Any]) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    tokens = [gen.generate(p, seed=i, **settings).tokens for i, p in enumerate(prompts)]
    return time.perf_counter() - start, tokens


def measure(
    gen: Any, prompts: list[str], sampling: dict[str, Any], new: int, repeats: int, counts: Counts
) -> dict:
    plain = {"max_new_tokens": new, "ignore_eos": True, **sampling}
    drafted = {**plain, "draft": "prompt-lookup"}
    run(gen, prompts[:1], plain)  # warm-up
    times: dict[str, list[float]] = {"plain": [], "draft": []}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(repeats):  # alternate, so that a noisy neighbour hits both alike
        for mode, settings in (("plain", plain), ("draft", drafted)):
            before = (counts.proposed, counts.accepted, counts.calls)
            seconds, outputs[mode] = run(gen, prompts, settings)
            times[mode].append(seconds)
            if mode == "draft":
                proposed = counts.proposed - before[0]
                accepted = counts.accepted - before[1]
                calls = counts.calls - before[2] - len(prompts)  # the prefills
    total = sum(len(t) for t in outputs["plain"])
    plain_s, draft_s = statistics.median(times["plain"]), statistics.median(times["draft"])
    return {
        "prompts": len(prompts),
        "new_tokens": total,
        "identical": outputs["plain"] == outputs["draft"] if not sampling.get("top_k") else None,
        "plain_tok_s": round(total / plain_s, 1),
        "draft_tok_s": round(total / draft_s, 1),
        "speed_up": round(plain_s / draft_s, 2),
        "accepted_share": round(accepted / proposed, 3) if proposed else 0.0,
        "tokens_per_call": round((total - len(prompts)) / calls, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts per task")
    parser.add_argument("--new", type=int, default=64, help="new tokens per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per mode")
    parser.add_argument("--workdir", type=Path, default=HERE / ".cache")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    from gpt2_edge.runtime import load

    gen = load(bundle(args.workdir), provider="cpu", threads=THREADS)
    counts = Counts()
    rows = {}
    for name, prompts in tasks(args.prompts).items():
        for mode, sampling in (("greedy", {"temperature": 0}), ("sampled", SAMPLED)):
            row = measure(gen, prompts, sampling, args.new, args.repeats, counts)
            rows[f"{name} {mode}"] = row
            print(f"[draft] {name} {mode}: {row}", file=sys.stderr, flush=True)
    print("| task | plain tok/s | prompt-lookup tok/s | speed-up | drafted tokens accepted "
          "| tokens per call | same output |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        same = {True: "yes", False: "NO", None: "(sampled)"}[r["identical"]]
        print(
            f"| {name} | {r['plain_tok_s']} | {r['draft_tok_s']} | {r['speed_up']}x "
            f"| {r['accepted_share']:.0%} | {r['tokens_per_call']} | {same} |"
        )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
