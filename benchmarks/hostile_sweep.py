"""A hostile sweep of every surface: the five commands, gpt2-batch, the HTTP API and the Python
API, with inputs from ``benchmarks/hostile/`` (bad types, huge values, NaN and infinities,
Unicode edge cases, special files, signals at odd moments, concurrent misuse, full disks and
memory caps). Prints a table per surface (inputs, clean errors, accepted correctly, defects),
each defect with its reason, and writes the whole as JSON.

    python benchmarks/hostile_sweep.py [--only SURFACE] [--match WORDS] [--jobs 3]
        [--json-out benchmarks/results/hostile_sweep.json]

Needs the export extra (a tiny checkpoint is made with transformers), the serve extra, ../shared
(the real GPT-2 tokenizer) and root for the full-disk cases (a small tmpfs). Issue 21: 0 defects.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

from hostile import cli_export, cli_runtime, cli_services, http_api, python_api  # noqa: E402
from hostile.common import BIN, Case, Fixtures, Outcome  # noqa: E402

SURFACES = ["gpt2-generate", "gpt2-eval", "gpt2-export", "gpt2-pack", "gpt2-batch",
            "gpt2-serve", "HTTP API", "Python API"]  # fmt: skip


def setup(work: Path) -> Fixtures:
    from support.fused_bundle import build_fused_bundle
    from support.tiny_models import make_checkpoint

    tokenizer = ROOT.parent / "shared" / "gpt2-tokenizer" / "tokenizer.json"
    bundle = build_fused_bundle(work / "bundles" / "tiny", tokenizer)
    checkpoint = make_checkpoint(work / "checkpoints" / "tiny-gpt2")
    return Fixtures(work / "cases", bundle, checkpoint)


def start_server(fx: Fixtures) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(BIN / "gpt2-serve"), "--model", str(fx.bundle), "--port", "0", "--max-batch", "4",
         "--max-queue", "8", "--threads", "1", "--log-level", "warning"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in proc.stderr:  # type: ignore[union-attr]
        found = re.search(r"http://([\d.]+):(\d+)/", line)
        if found:
            fx.server = http_api.Server(found.group(1), int(found.group(2)))
            return proc
    raise RuntimeError("gpt2-serve did not start")


def run_case(case: Case, fx: Fixtures) -> dict:
    started = time.perf_counter()
    try:
        outcome = case.run(fx)
    except Exception as exc:  # the harness itself, or a client error: count it, look at it
        outcome = Outcome("defect", f"harness: {type(exc).__name__}: {exc}"[:300])
    if case.surface == http_api.H and fx.server is not None:
        worst = fx.server.take_worst()
        if worst > http_api.LOOP_STALL_S:
            outcome = Outcome("defect", f"/health waited {worst:.2f} s (event loop blocked)")
        alive = _alive(fx)
        if alive:
            outcome = Outcome("defect", alive)
    return {
        "surface": case.surface,
        "name": case.name,
        "verdict": outcome.verdict,
        "detail": outcome.detail,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _alive(fx: Fixtures) -> str | None:
    try:
        status, _, _ = http_api.request(fx.server, "GET", "/health", None, timeout=30)
    except OSError as exc:
        return f"the server is gone after this case ({exc})"
    return None if status == 200 else f"/health answers {status} after this case"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="one surface, e.g. 'HTTP API'")
    parser.add_argument("--match", default="", help="only cases whose name holds these words")
    parser.add_argument("--jobs", type=int, default=3, help="command cases run side by side")
    parser.add_argument("--json-out", type=Path, default=HERE / "results" / "hostile_sweep.json")
    args = parser.parse_args()
    every = [
        *cli_runtime.cases(), *cli_export.cases(), *cli_services.cases(), *http_api.cases(),
        *python_api.cases(),
    ]  # fmt: skip
    chosen = [
        c for c in every
        if (not args.only or c.surface == args.only) and args.match.lower() in c.name.lower()
    ]  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="hostile-sweep-"))
    fx = setup(work)
    results: list[dict] = []
    server = None
    try:
        commands = [c for c in chosen if c.surface not in (http_api.H, python_api.A)]
        with ThreadPoolExecutor(args.jobs) as pool:
            results += pool.map(lambda c: run_case(c, fx), [c for c in commands if not c.slow])
        results += [run_case(c, fx) for c in commands if c.slow]
        if any(c.surface == python_api.A for c in chosen):
            from gpt2_edge.runtime import load

            fx.generator = load(fx.bundle, "cpu", 1)
            results += [run_case(c, fx) for c in chosen if c.surface == python_api.A]
        if any(c.surface == http_api.H for c in chosen):
            server = start_server(fx)
            results += [run_case(c, fx) for c in chosen if c.surface == http_api.H]
    finally:
        if fx.server is not None:
            fx.server.stop()
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report(results, args.json_out)


def report(results: list[dict], out: Path) -> None:
    print(f"{'surface':<15}{'inputs':>8}{'clean errors':>14}{'accepted':>10}{'defects':>9}")
    totals: Counter = Counter()
    for surface in SURFACES:
        mine = [r for r in results if r["surface"] == surface]
        if not mine:
            continue
        counts = Counter(r["verdict"] for r in mine)
        totals.update(counts)
        totals["inputs"] += len(mine)
        print(f"{surface:<15}{len(mine):>8}{counts['clean error']:>14}{counts['accepted']:>10}"
              f"{counts['defect']:>9}")  # fmt: skip
    print(f"{'all':<15}{totals['inputs']:>8}{totals['clean error']:>14}{totals['accepted']:>10}"
          f"{totals['defect']:>9}")  # fmt: skip
    for r in results:
        if r["verdict"] == "defect":
            print(f"DEFECT {r['surface']}: {r['name']}: {r['detail']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"totals": dict(totals), "cases": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
