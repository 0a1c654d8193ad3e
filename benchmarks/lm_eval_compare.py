"""lm-evaluation-harness through gpt2-serve against lm-eval's own ``hf`` backend: the fp32 and the
int8 export of a checkpoint, on three local WikiText-2 tasks (a multiple-choice cloze, rolling
perplexity, greedy generation; ``tests/support/lm_eval_runs.py`` builds them).

    python benchmarks/lm_eval_compare.py [--checkpoint ../shared/fixtures/gpt2-wikitext-tiny]
        [--json benchmarks/results/lm_eval_compare.json] [--bundle-dir DIR] [--remote]

Each precision is exported (``gpt2-export``, ``--quantize`` for int8) unless ``--bundle-dir``
holds ``fp32/`` and ``int8/`` already, served by ``gpt2-serve`` on a free port and evaluated with
``local-completions`` (``max_length=1024``; the tokenizer is the bundle's own Hugging Face files,
or the server's with ``--remote``). Prints a table and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.lm_eval_runs import (  # noqa: E402
    CLOZE,
    GREEDY,
    ROLLING,
    TaskSizes,
    build_tasks,
    compare,
    hf_run,
    server_run,
    serving,
)

SHARED = HERE.parent.parent / "shared"
PRECISIONS = {"fp32": [], "int8": ["--quantize"]}


def export(checkpoint: Path, folder: Path, flags: list[str]) -> Path:
    if not (folder / "bundle.json").exists():
        subprocess.run(
            ["gpt2-export", str(checkpoint), "--output", str(folder), *flags],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkpoint", type=Path, default=SHARED / "fixtures" / "gpt2-wikitext-tiny"
    )
    parser.add_argument("--wikitext", type=Path, default=SHARED / "data" / "wikitext-2")
    parser.add_argument("--bundle-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "lm_eval_compare.json")
    parser.add_argument("--remote", action="store_true", help="the server's tokenizer routes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cloze", type=int, default=TaskSizes.cloze)
    parser.add_argument("--rolling", type=int, default=TaskSizes.rolling)
    parser.add_argument("--greedy", type=int, default=TaskSizes.greedy)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundles = args.bundle_dir or work
        sizes = TaskSizes(args.cloze, args.rolling, args.greedy)
        tasks = build_tasks(args.wikitext, args.checkpoint, work / "tasks", sizes)
        reference = hf_run(args.checkpoint, tasks)
        rows, report = [], {}
        for name, flags in PRECISIONS.items():
            bundle = export(args.checkpoint, bundles / name, flags)
            with serving(bundle, threads=args.threads) as url:
                run = server_run(
                    url, bundle.name, tasks, None if args.remote else bundle, batch_size=8
                )
            result = compare(reference, run)
            rows.append((name, result, run))
            report[name] = {
                "comparison": result.as_dict(),
                "metrics": run.metrics,
                "seconds": run.seconds,
            }

    report["hf"] = {"metrics": reference.metrics, "seconds": reference.seconds}
    report["setup"] = {
        "checkpoint": str(args.checkpoint),
        "sizes": vars(sizes),
        "tokenizer_backend": "remote" if args.remote else "huggingface",
        "lm_eval": version("lm_eval"),
        "transformers": version("transformers"),
        "torch": version("torch"),
        "onnxruntime": version("onnxruntime"),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    header = (
        "| export | cloze choices: max / mean abs d loglik | cloze acc (hf) | answers changed "
        "| rolling sums: max / mean abs d | word ppl (hf) | greedy identical |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name, c, run in rows:
        ppl, ref_ppl = (
            run.metrics[ROLLING]["word_perplexity"],
            reference.metrics[ROLLING]["word_perplexity"],
        )
        print(
            f"| {name} | {c.max_abs_ll:.2e} / {c.mean_abs_ll:.2e} ({c.choices}) "
            f"| {c.accuracy:.3f} ({c.reference_accuracy:.3f}) | {c.answers_changed} "
            f"| {c.max_abs_rolling:.2e} / {c.mean_abs_rolling:.2e} ({c.rolling_docs}) "
            f"| {ppl:.3f} ({ref_ppl:.3f}) "
            f"| {c.generations_identical}/{c.generations} "
            f"({100 * c.generations_identical / c.generations:.0f}%) |"
        )
        if c.first_differing:
            doc, want, got = c.first_differing
            print(f"  {name}, {GREEDY} doc {doc}: hf {want!r} vs served {got!r}")
    print(f"({CLOZE}: {sizes.cloze} docs, {ROLLING}: {sizes.rolling}, {GREEDY}: {sizes.greedy})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
