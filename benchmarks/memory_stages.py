"""Where a bundle's memory goes: resident memory after each step of what ``gpt2-generate`` does.

    python benchmarks/memory_stages.py [--bundle benchmarks/.cache/124m/ours-int8] [--runs 3]
        [--json-out stages.json]

A fresh process per run takes the steps in the CLI's order: the interpreter, the CLI's imports
(numpy, onnxruntime, tokenizers, typer), the bundle (manifest, checksums, tokenizer), the
onnxruntime session (its prepacked copy of the weights; the weight file's pages are given back
right after, ``runtime/graph/pageout.py``), then 128 greedy tokens after a 5-token prompt. After
each step it reads ``/proc/self/status``: anonymous memory (private: what no limit can reclaim),
file pages (the libraries' code and the bundle's mapped weights: clean, a memory limit reclaims
them) and the peak resident set so far (``VmHWM``, what ``ru_maxrss`` reports). Medians of
``--runs``.

The table is the floor under a peak RSS: whatever stays resident at the end (the prepacked
weights, the imports, the tokenizer) is a lower bound for the peak. Linux only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = HERE / ".cache" / "124m" / "ours-int8"
PROMPT = "The history of the city"
NEW_TOKENS = 128

# The child: one line of JSON, a list of [step, {field: KiB}] after each step.
CHILD = r"""
import json, sys
from pathlib import Path
FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
def status():
    lines = Path("/proc/self/status").read_text().splitlines()
    pairs = (line.split(":", 1) for line in lines)
    return {k: int(v.split()[0]) for k, v in pairs if k in FIELDS}
path, prompt, new = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
steps = [("the interpreter starts", status())]
from gpt2_edge.runtime.cli import generate as cli
steps.append(("the CLI's imports (numpy, onnxruntime, tokenizers, typer)", status()))
from gpt2_edge.runtime.generation.generator import Generator
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.graph.session import Session
bundle = load_bundle(path)
tokenizer = bundle.tokenizer
steps.append(("the bundle is opened (manifest, checksums, tokenizer)", status()))
session = Session(bundle, provider="cpu", threads=2)
steps.append(("the onnxruntime session is built", status()))
generator = Generator(session, tokenizer)
generator.generate(prompt, max_new_tokens=new, temperature=0, ignore_eos=True)
steps.append((f"{new} tokens are generated", status()))
print(json.dumps(steps))
"""

COLUMNS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def one_run(bundle: Path) -> list[tuple[str, dict[str, int]]]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(bundle), PROMPT, str(NEW_TOKENS)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"the measuring process failed: {done.stderr.strip()[-800:]}")
    return [tuple(step) for step in json.loads(done.stdout.strip().splitlines()[-1])]


def medians(runs: list[list[tuple[str, dict[str, int]]]]) -> list[dict[str, float]]:
    """Per step, the median of each field in MiB (the steps are the same in every run)."""
    rows = []
    for i, (name, _) in enumerate(runs[0]):
        row: dict[str, float | str] = {"step": name}
        for field in COLUMNS:
            row[field] = statistics.median(run[i][1][field] for run in runs) / 1024
        rows.append(row)
    return rows


def print_table(rows: list[dict], model_mib: float) -> None:
    print(f"model files: {model_mib:.1f} MiB")
    print("| after | RSS MiB | anonymous | file pages | peak RSS so far | anonymous added |")
    print("|---|---:|---:|---:|---:|---:|")
    previous = 0.0
    for row in rows:
        added = row["RssAnon"] - previous
        previous = row["RssAnon"]
        print(
            f"| {row['step']} | {row['VmRSS']:.1f} | {row['RssAnon']:.1f} | "
            f"{row['RssFile']:.1f} | {row['VmHWM']:.1f} | {added:+.1f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    if not (args.bundle / "bundle.json").is_file():
        sys.exit(f"no bundle at {args.bundle}: python benchmarks/models.py --models 124m")
    if not Path("/proc/self/status").is_file():
        sys.exit("this measures with /proc/self/status, which only Linux has")
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
        runs.append(one_run(args.bundle))
    rows = medians(runs)
    model_mib = sum(f.stat().st_size for f in args.bundle.iterdir() if f.is_file()) / 2**20
    print_table(rows, model_mib)
    if args.json_out:
        result = {"bundle": str(args.bundle), "model_files_mib": model_mib, "steps": rows}
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
