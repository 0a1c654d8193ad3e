"""The least memory each bundle generates in: a cgroup limit found by bisection, and peak RSS.

    python benchmarks/bench_memory.py --models 124m,355m --variants ours-int8
    python benchmarks/bench_memory.py --bundle path/to/bundle [--bundle ...]

For each bundle, ``gpt2-generate`` (5-token prompt, 128 greedy new tokens, 2 threads, the
bundle's checksums verified as usual) runs in a fresh cgroup v1 memory group
(``tests/devices/memcg.py``); the limit is bisected to ``--step`` MiB between the largest that was
OOM-killed and the smallest that finished. Peak RSS is the process's own ``ru_maxrss`` without a
limit: it counts the shared libraries' pages and the weight file's mapped pages, which a cgroup
may leave charged elsewhere or reclaim, so it is larger than what the limit needs. Needs root
and a writable memory controller.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "devices"))
import memcg  # noqa: E402

PROMPT = "The history of the city"
NEW_TOKENS = 128


def command(bundle: Path) -> list[str]:
    return [
        sys.executable, "-m", "gpt2_edge.runtime", PROMPT, "--model", str(bundle),
        "--max-new-tokens", str(NEW_TOKENS), "--temperature", "0", "--ignore-eos",
        "--threads", "2", "--json",
    ]  # fmt: skip


def fits(bundle: Path, limit_mib: int, cwd: Path) -> bool:
    run = memcg.run_limited(command(bundle), limit_mib, cwd=cwd, timeout=1200)
    if run.returncode not in (0, 137):
        raise RuntimeError(f"{bundle} failed at {limit_mib} MiB: {run.stderr[-500:]}")
    return run.returncode == 0


def least_limit(bundle: Path, step: int, cwd: Path) -> tuple[int, int]:
    """(largest limit killed, smallest limit that finished), ``step`` MiB apart."""
    low, high = 16, 64
    while not fits(bundle, high, cwd):
        low, high = high, high * 2
    while high - low > step:
        middle = max(low + (high - low) // 2 // step * step, low + step)
        if fits(bundle, middle, cwd):
            high = middle
        else:
            low = middle
    return low, high


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="124m", help="comma list of benchmarks/.cache models")
    p.add_argument("--variants", default="ours-int8", help="comma list, e.g. ours-int8,ours-int4")
    p.add_argument("--bundle", type=Path, action="append", help="a bundle folder (repeatable)")
    p.add_argument("--workdir", type=Path, default=HERE / ".cache")
    p.add_argument("--step", type=int, default=4, help="bisection resolution in MiB")
    args = p.parse_args()
    reason = memcg.unavailable()
    if reason:
        sys.exit(f"no memory cgroup: {reason}")
    bundles = args.bundle or [
        args.workdir / m / v for m in args.models.split(",") for v in args.variants.split(",")
    ]
    print("| bundle | model files MiB | killed at MiB | fits in MiB | peak RSS MiB (no limit) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in map(Path.resolve, bundles):
            size = sum(f.stat().st_size for f in bundle.iterdir() if f.is_file()) / 2**20
            killed, ok = least_limit(bundle, args.step, Path(tmp))
            free = memcg.run_limited(command(bundle), 1 << 16, cwd=Path(tmp), timeout=1200)
            row = f"| {bundle} | {size:.1f} | {killed} | {ok} | {free.peak_rss_mib:.0f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
