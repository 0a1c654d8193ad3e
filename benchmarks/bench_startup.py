"""Cold-ish start of the ``gpt2-generate`` CLI: process start to first token, and peak RSS.

Targets (issue 5): with the 124M int8 bundle, under 1.5 s to the first token and under 300 MiB.
The first token is the first byte the CLI writes to stdout after the prompt is echoed (if it
echoes), so run it with a prompt and a handful of new tokens, greedy. Peak RSS is the child's
``ru_maxrss`` taken from ``os.wait4`` (this parent never imports torch, so Linux's carrying of
``ru_maxrss`` across fork+exec cannot inflate it).

    python benchmarks/bench_startup.py [--bundle benchmarks/.cache/124m/ours-int8] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = HERE / ".cache" / "124m" / "ours-int8"
PROMPT = "The history of the lighthouse is a story of"
TARGET_FIRST_TOKEN_S = 1.5
TARGET_RSS_MIB = 300


def cli_command(bundle: Path, new_tokens: int, extra: list[str]) -> list[str]:
    exe = shutil.which("gpt2-generate") or str(Path(sys.executable).with_name("gpt2-generate"))
    return [
        exe,
        "--model",
        str(bundle),
        "--max-new-tokens",
        str(new_tokens),
        "--temperature",
        "0",
        "--threads",
        "2",
        *extra,
        PROMPT,
    ]


def one_run(cmd: list[str], echo_prefix: str) -> dict[str, float]:
    """Spawn the CLI; time to the first stdout byte past the echoed prompt; RSS via wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    first = None
    while True:
        if not sel.select(timeout=60):
            proc.kill()
            raise TimeoutError("no output from gpt2-generate within 60 s")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        # The CLI may echo the prompt first: the first token is what comes after it.
        if first is None and len(seen.decode("utf-8", "ignore")) > len(echo_prefix):
            first = time.perf_counter() - t0
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"gpt2-generate exited {proc.returncode}: {err.strip()[-500:]}")
    return {
        "first_token_s": first if first is not None else total,
        "total_s": total,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--runs", type=int, default=5, help="measured runs after one warm-up")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument(
        "--echoes-prompt",
        action="store_true",
        help="the CLI prints the prompt before the generated text",
    )
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("extra", nargs="*", help="extra CLI flags, after --")
    args = p.parse_args()
    if not (args.bundle / "model.onnx").is_file():
        sys.exit(
            f"{args.bundle} has no model.onnx; build it: python benchmarks/models.py "
            "--variants ours-int8"
        )
    cmd = cli_command(args.bundle, args.new_tokens, args.extra)
    echo = PROMPT if args.echoes_prompt else ""
    one_run(cmd, echo)  # warm-up: page cache, .pyc files
    runs = [one_run(cmd, echo) for _ in range(args.runs)]
    result = {
        "command": " ".join(cmd),
        "runs": args.runs,
        "first_token_s": round(statistics.median(r["first_token_s"] for r in runs), 3),
        "total_s": round(statistics.median(r["total_s"] for r in runs), 3),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
        "bundle_mib": round(
            sum(f.stat().st_size for f in args.bundle.iterdir() if f.is_file()) / 2**20, 1
        ),
    }
    result["meets_first_token"] = result["first_token_s"] < TARGET_FIRST_TOKEN_S
    result["meets_rss"] = result["peak_rss_mib"] < TARGET_RSS_MIB
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
