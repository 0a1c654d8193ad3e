"""Memory read bandwidth with 1 and 2 threads: the limit that decoding a large model approaches.

Decoding one token reads every weight once, so ``weight bytes a token × tok/s`` cannot exceed the
memory's read bandwidth; ``bench_peers.py`` divides by the figure measured here to give each
engine's share of that limit. Two measurements:

- ``membw.c`` (built here with ``gcc -O3 -march=native -fopenmp``): each thread sums its own slice
  of a buffer far larger than the L3 (1 GiB by default) with vector loads; best and mean of the
  repeats. This is the figure used as the limit.
- numpy (no compiler needed): ``threads`` Python threads each ``sum`` their own slice (numpy
  releases the GIL in the reduction); a lower bound, printed beside it.

    python benchmarks/bench_bandwidth.py --json-out benchmarks/results/bandwidth.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".cache" / "membw"


def c_bandwidth(mib: int, threads: int, repeats: int) -> dict[str, Any] | None:
    """The C program's figures, or None without a C compiler."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    BUILD.parent.mkdir(parents=True, exist_ok=True)
    src = HERE / "membw.c"
    if not BUILD.is_file() or BUILD.stat().st_mtime < src.stat().st_mtime:
        cmd = [cc, "-O3", "-march=native", "-fopenmp", str(src), "-o", str(BUILD)]
        subprocess.run(cmd, check=True)
    out = subprocess.run(
        [str(BUILD), str(mib), str(threads), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_PROC_BIND": "close", "PATH": "/usr/bin:/bin"},
    ).stdout
    return json.loads(out.splitlines()[-1])


def numpy_bandwidth(mib: int, threads: int, repeats: int) -> dict[str, Any]:
    import numpy as np

    n = mib * 2**20 // 8
    buf = np.arange(n, dtype=np.int64)
    parts = np.array_split(buf, threads)
    rates = []
    for _ in range(repeats):
        workers = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        rates.append(buf.nbytes / (time.perf_counter() - t0) / 1e9)
    return {"mib": mib, "threads": threads, "best_gb_s": round(max(rates), 2),
            "median_gb_s": round(statistics.median(rates), 2)}  # fmt: skip


def measure(mib: int = 1024, repeats: int = 10) -> dict[str, Any]:
    """Both programs with 1 and 2 threads; ``limit_gb_s`` is the C program's best with 2."""
    out: dict[str, Any] = {"method": "membw.c: per-thread vector sum of a 1 GiB buffer"}
    for threads in (1, 2):
        out[f"c_{threads}t"] = c_bandwidth(mib, threads, repeats)
        out[f"numpy_{threads}t"] = numpy_bandwidth(mib, threads, max(3, repeats // 2))
    c2 = out.get("c_2t")
    out["limit_gb_s"] = c2["best_gb_s"] if c2 else out["numpy_2t"]["best_gb_s"]
    out["limit_from"] = "membw.c, 2 threads, best" if c2 else "numpy, 2 threads, best"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    res = measure(args.mib, args.repeats)
    for key in ("c_1t", "c_2t", "numpy_1t", "numpy_2t"):
        r = res.get(key)
        if r:
            mean = r.get("mean_gb_s", r.get("median_gb_s"))
            print(f"{key:9s} best {r['best_gb_s']:6.2f} GB/s  mean/median {mean:6.2f} GB/s")
    print(f"limit: {res['limit_gb_s']} GB/s ({res['limit_from']})")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
