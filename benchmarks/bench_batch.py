"""``gpt2-batch`` against ``gpt2-serve`` under 16 concurrent clients and a plain Python loop over
``Generator.generate``, on the same requests, in one run; and ``gpt2-batch`` with 1 and 2 workers
(processes, and with ``--ray`` actors on a local Ray cluster).

The model is the GPT-2 124M int8 bundle (random weights, the real config; build it with
``python benchmarks/models.py --models 124m --variants ours-int8``). The job is ``--requests``
completions, each a different ~32-token prompt (a rotation of one passage) and
``--max-tokens`` greedy tokens with EOS ignored, so every method does the same work:

- ``gpt2-batch``: the command on a batch file, timed from start to exit (model loading and, for
  workers, starting the processes or the Ray cluster included).
- ``gpt2-serve``: started and warmed first; 16 clients take the requests from one queue and post
  them (not streamed) until none is left; timed from the first request to the last answer.
- Python loop: ``load()`` first, then ``generate()`` for each request in turn.

Every method uses the machine's 2 CPUs: ``--threads 2`` for one process, 1 thread each for two.

    python benchmarks/bench_batch.py [--bundle benchmarks/.cache/124m/ours-int8]
        [--requests 500] [--max-tokens 32] [--ray] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = HERE / ".cache" / "124m" / "ours-int8"
DEFAULT_JSON = HERE / "results" / "bench_batch.json"
CLIENTS = 16
TEXT = (
    "The history of the city begins with a small settlement on the river, where traders met to "
    "exchange grain, salt and cloth; over the centuries it grew into a market town and then"
).split()


def prompt(i: int) -> str:
    """A different ~32-token prompt per request (a rotation of one passage)."""
    shift = (7 * i) % len(TEXT)
    return " ".join(TEXT[shift:] + TEXT[:shift])


def bodies(count: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {"prompt": prompt(i), "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
        for i in range(count)
    ]


def batch_file(folder: Path, items: list[dict[str, Any]]) -> Path:
    path = folder / "in.jsonl"
    with path.open("w") as f:
        for i, body in enumerate(items):
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions", "body": body}
            f.write(json.dumps(line) + "\n")
    return path


def run_batch(folder: Path, job: Path, bundle: Path, workers: int, ray: bool = False) -> float:
    """Seconds ``gpt2-batch`` takes from start to exit."""
    out = folder / f"out-{workers}-{'ray' if ray else 'local'}.jsonl"
    out.unlink(missing_ok=True)
    threads = "2" if workers == 1 else "1"
    command = [sys.executable, "-m", "gpt2_edge.batch", str(job), "-o", str(out)]
    command += ["--model", str(bundle), "--workers", str(workers), "--threads", threads]
    command += ["--provider", "cpu", "--max-batch", str(CLIENTS)]
    if ray:
        command += ["--ray", "local"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"gpt2-batch failed: {done.stderr}")
    check_output(out, len(job.read_text().splitlines()))
    return seconds


def check_output(out: Path, count: int) -> None:
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ok = [r for r in records if r["response"] and r["response"]["status_code"] == 200]
    if len(ok) != count:
        raise SystemExit(f"{out}: {len(ok)} of {count} requests succeeded")


def run_serve(bundle: Path, items: list[dict[str, Any]]) -> float:
    """Seconds for CLIENTS concurrent clients of gpt2-serve to get every answer."""
    command = [sys.executable, "-m", "gpt2_edge.serve", "--model", str(bundle), "--port", "0"]
    command += ["--threads", "2", "--max-batch", str(CLIENTS), "--provider", "cpu"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    base = None
    for line in server.stderr:
        if "http://" in line:
            base = "http://" + line.split("http://", 1)[1].split("/ ", 1)[0]
            break
    if base is None:
        raise SystemExit(f"gpt2-serve did not start (exit code {server.wait()})")
    try:
        warm = {**items[0], "max_tokens": 4}
        httpx.post(base + "/v1/completions", json=warm, timeout=120).raise_for_status()
        return asyncio.run(_clients(base, items))
    finally:
        server.terminate()
        server.wait(30)


async def _clients(base: str, items: list[dict[str, Any]]) -> float:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in items:
        queue.put_nowait(body)
    limits = httpx.Limits(max_connections=CLIENTS + 1)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:

        async def client() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                answer = await http.post("/v1/completions", json=body)
                answer.raise_for_status()
                tokens = answer.json()["usage"]["completion_tokens"]
                assert tokens == body["max_tokens"], tokens

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return time.perf_counter() - start


LOOP = """
import json, sys, time
from gpt2_edge.runtime import load
gen = load(sys.argv[1], provider="cpu", threads=2)
items = json.load(open(sys.argv[2]))
gen.generate(items[0]["prompt"], max_new_tokens=4, temperature=0)  # warm, as the server
start = time.perf_counter()
for body in items:
    result = gen.generate(body["prompt"], max_new_tokens=body["max_tokens"], temperature=0,
                          ignore_eos=True)
    assert len(result.tokens) == body["max_tokens"], len(result.tokens)
print(time.perf_counter() - start)
"""


def run_loop(folder: Path, bundle: Path, items: list[dict[str, Any]]) -> float:
    """Seconds for a Python loop over Generator.generate (the model loaded first)."""
    data = folder / "bodies.json"
    data.write_text(json.dumps(items))
    done = subprocess.run(
        [sys.executable, "-c", LOOP, str(bundle), str(data)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the Python loop failed: {done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ray", action="store_true", help="also run on a local Ray cluster")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    if not (args.bundle / "bundle.json").is_file():
        raise SystemExit(
            f"No bundle at {args.bundle}; build it with "
            "python benchmarks/models.py --models 124m --variants ours-int8"
        )
    items = bodies(args.requests, args.max_tokens)
    rows: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = batch_file(folder, items)
        bundle = args.bundle
        plan = [
            ("gpt2-batch", "1 process, 2 threads", lambda: run_batch(folder, job, bundle, 1)),
            (
                "gpt2-batch --workers 2",
                "2 processes, 1 thread each",
                lambda: run_batch(folder, job, bundle, 2),
            ),
            ("gpt2-serve, 16 clients", "1 process, 2 threads", lambda: run_serve(bundle, items)),
            (
                "Python loop, generate()",
                "1 process, 2 threads",
                lambda: run_loop(folder, bundle, items),
            ),
        ]
        if args.ray:
            plan += [
                (
                    "gpt2-batch --ray local",
                    "1 actor, 2 threads",
                    lambda: run_batch(folder, job, bundle, 1, ray=True),
                ),
                (
                    "gpt2-batch --ray local --workers 2",
                    "2 actors, 1 thread each",
                    lambda: run_batch(folder, job, bundle, 2, ray=True),
                ),
            ]
        for name, how, measure in plan:
            seconds = measure()
            rows.append((name, how, seconds))
            print(f"[bench_batch] {name}: {seconds:.1f} s", file=sys.stderr)
    tokens = args.requests * args.max_tokens
    print(
        f"GPT-2 124M int8 (random weights), {args.requests} requests of ~32 prompt tokens and "
        f"{args.max_tokens} greedy tokens, {os.cpu_count()} CPUs"
    )
    print("| method | processes | seconds | requests/s | tokens/s |")
    print("|---|---|---:|---:|---:|")
    for name, how, seconds in rows:
        print(
            f"| {name} | {how} | {seconds:.1f} | {args.requests / seconds:.2f} "
            f"| {tokens / seconds:.0f} |"
        )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "rows": [{"method": n, "processes": h, "seconds": s} for n, h, s in rows],
    }
    args.json_out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
