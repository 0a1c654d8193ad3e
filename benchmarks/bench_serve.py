"""``gpt2-serve`` under concurrent clients: aggregate tokens/s, time to first token, latency.

Starts ``gpt2-serve`` on a free 127.0.0.1 port with the GPT-2 124M int8 bundle (random weights,
the real config; build it with ``python benchmarks/models.py --models 124m --variants
ours-int8``), then for 1, 4 and 16 concurrent clients has each client send ``--rounds`` streamed
greedy completions of ``--max-tokens`` tokens (EOS ignored) one after another. A level's
aggregate tokens/s is all its tokens over its wall time; time to first token is to the first
streamed text; latency is to ``[DONE]``. Any non-200 answer, error event or short answer counts
as an error. The machine drifts, so the levels run ``--repeats`` times in alternating order
(1, 4, 16, then 16, 4, 1, ...) and each figure is the median over the repeats.

    python benchmarks/bench_serve.py [--bundle benchmarks/.cache/124m/ours-int8] [--threads 2]
        [--clients 1,4,16] [--max-tokens 64] [--rounds 2] [--repeats 3] [--json-out FILE]

Target (issue 12): 16 clients reach at least 3x the aggregate tokens/s of one client on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = HERE / ".cache" / "124m" / "ours-int8"
TARGET_SPEEDUP = 3.0
TEXT = (
    "The history of the city begins with a small settlement on the river, where traders met to "
    "exchange grain, salt and cloth; over the centuries it grew into a market town and then"
).split()


def prompt(client: int, round_: int) -> str:
    """A different ~32-token prompt per request (a rotation of one passage)."""
    shift = (7 * client + 3 * round_) % len(TEXT)
    return " ".join(TEXT[shift:] + TEXT[:shift])


def start_server(bundle: Path, threads: int, max_batch: int) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "gpt2_edge.serve",
        "--model",
        str(bundle),
        "--port",
        "0",
        "--threads",
        str(threads),
        "--max-batch",
        str(max_batch),
        "--provider",
        "cpu",
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    for line in server.stderr:
        if "http://" in line:
            return server, "http://" + line.split("http://", 1)[1].split("/ ", 1)[0]
    raise SystemExit(f"gpt2-serve did not start (exit code {server.wait()})")


async def one_request(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed completion: time to first text, latency, tokens, error."""
    start = time.perf_counter()
    first, tokens, error = None, 0, None
    try:
        async with http.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                error = f"HTTP {response.status_code}"
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    error = data["error"]["message"]
                elif data["choices"] and data["choices"][0]["text"] and first is None:
                    first = time.perf_counter()
                elif data.get("usage"):
                    tokens = data["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        error = repr(exc)
    if error is None and tokens != body["max_tokens"]:
        error = f"{tokens} tokens instead of {body['max_tokens']}"
    end = time.perf_counter()
    return {
        "ttft": (first or end) - start,
        "latency": end - start,
        "tokens": tokens,
        "error": error,
    }


async def level(base: str, clients: int, rounds: int, max_tokens: int) -> dict[str, Any]:
    """``clients`` concurrent clients, ``rounds`` requests each."""
    limits = httpx.Limits(max_connections=clients + 1)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:

        async def client(c: int) -> list[dict[str, Any]]:
            out = []
            for r in range(rounds):
                body = {
                    "prompt": prompt(c, r),
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                out.append(await one_request(http, body))
            return out

        start = time.perf_counter()
        results = [
            r for rs in await asyncio.gather(*(client(c) for c in range(clients))) for r in rs
        ]
        wall = time.perf_counter() - start
    ttft = sorted(r["ttft"] for r in results)
    latency = sorted(r["latency"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": percentile(ttft, 50),
        "latency_p50_s": percentile(latency, 50),
        "latency_p95_s": percentile(latency, 95),
        "errors": sum(r["error"] is not None for r in results),
        "first_error": next((r["error"] for r in results if r["error"]), None),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation (values sorted)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("tokens_per_s", "ttft_p50_s", "latency_p50_s", "latency_p95_s")
    merged = {k: statistics.median(r[k] for r in runs) for k in keys}
    merged["errors"] = sum(r["errors"] for r in runs)
    merged.update(clients=runs[0]["clients"], requests=sum(r["requests"] for r in runs))
    merged["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), None)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    if not (args.bundle / "bundle.json").is_file():
        raise SystemExit(
            f"No bundle at {args.bundle}; build it with "
            "python benchmarks/models.py --models 124m --variants ours-int8"
        )
    counts = [int(c) for c in args.clients.split(",")]
    server, base = start_server(args.bundle, args.threads, max(counts))
    try:
        warm = {"prompt": prompt(0, 0), "max_tokens": 8, "temperature": 0, "ignore_eos": True}
        httpx.post(base + "/v1/completions", json=warm, timeout=120).raise_for_status()
        runs: dict[int, list[dict[str, Any]]] = {c: [] for c in counts}
        for repeat in range(args.repeats):
            for c in counts if repeat % 2 == 0 else counts[::-1]:
                result = asyncio.run(level(base, c, args.rounds, args.max_tokens))
                runs[c].append(result)
                print(f"[bench_serve] repeat {repeat + 1}: {json.dumps(result)}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(30)
    table = [median_of(runs[c]) for c in counts]
    base_rate = table[0]["tokens_per_s"]
    print(
        f"GPT-2 124M int8, {args.max_tokens} greedy tokens per request, {args.rounds} requests "
        f"per client, --threads {args.threads}, median of {args.repeats} alternating runs"
    )
    print("| clients | aggregate tok/s | vs 1 client | TTFT p50 s | latency p50 / p95 s | errors |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in table:
        print(
            f"| {row['clients']} | {row['tokens_per_s']:.1f} "
            f"| {row['tokens_per_s'] / base_rate:.2f}x | {row['ttft_p50_s']:.3f} "
            f"| {row['latency_p50_s']:.2f} / {row['latency_p95_s']:.2f} | {row['errors']} |"
        )
    speedup = table[-1]["tokens_per_s"] / base_rate
    verdict = "meets" if speedup >= TARGET_SPEEDUP else "misses"
    print(
        f"{table[-1]['clients']} clients: {speedup:.2f}x one client ({verdict} the "
        f"{TARGET_SPEEDUP:.0f}x target)"
    )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"runs": runs, "median": table}, indent=2) + "\n")
    if any(row["errors"] for row in table):
        raise SystemExit(f"errors: {table}")


if __name__ == "__main__":
    main()
