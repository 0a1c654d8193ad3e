"""gpt2-edge against llama.cpp and CTranslate2 on this CPU: the table of docs/performance.md.

Engines (each in its own process, ``engines.py``): gpt2-edge int8 (``gpt2-export --quantize``, the
defaults) and int4 (``--bits 4``), llama.cpp q8_0 and q4_0 GGUF (llama-cpp-python built from
source for this CPU, the checkpoint converted by llama.cpp's own converter), CTranslate2 int8 (its
own converter). The peers run from their own venv (``setup_peers.sh``, ``peers.py``). Models:
random-weight GPT-2s with the real configs (``models.py``: 124m, 355m, 774m, 1.5b; tiny for
``--quick``). Scenarios: ``base`` a 128-token prompt, ``long`` an 880-token prompt; 128 greedy new
tokens, EOS ignored, batch 1, 2 threads.

Fairness on a shared 2-core machine: for each model and scenario the engines take turns, round
after round, the order rotating each round; each process does one warm-up and ``--repeats``
measured runs. The table shows the median over rounds and the range (min-max) of the rounds'
medians. Other people's jobs share the machine: before each process the script waits (up to
``--quiet-timeout``) until the CPUs are at most ``--max-busy`` busy, and keeps in the JSON how busy
they were and the load average around each round (a disturbed run shows there). Memory: the
child's peak RSS (VmHWM). Bandwidth share: (model bytes read a token × decode tok/s) / the read
bandwidth measured with 2 threads at the start of the run (``bench_bandwidth.py``).

    python benchmarks/bench_peers.py                     # 124m+355m, base+long, 3 rounds
    python benchmarks/bench_peers.py --models 774m,1.5b --scenarios base --rounds 2
    python benchmarks/bench_peers.py --quick             # tiny model, seconds: checks the script

Writes ``benchmarks/results/peers-<models>.json`` and the run's section of docs/performance.md
(between markers named after the models, so runs of other models keep their sections).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import peers_report  # noqa: E402

import models as bench_models  # noqa: E402

ENGINES = ("ours-int8", "ours-int4", "llama-q8_0", "llama-q4_0", "ct2-int8")
SCENARIOS = {"base": (128, 128), "long": (880, 128)}  # name -> (prompt tokens, new tokens)
QUICK = {"base": (32, 16), "long": (96, 16)}
THREADS = 2
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "performance.md"


def engine_files(engine: str, model: str, workdir: Path) -> Path:
    """The model file or folder ``engine`` runs, made on first use."""
    if engine.startswith("ours-"):
        return bench_models.ours(model, engine.split("-")[1], workdir)[0]
    if engine.startswith("llama-"):
        return peers.gguf(model, engine.split("-")[1], workdir)
    if engine == "ct2-int8":
        return peers.ct2_int8(model, workdir)
    raise ValueError(f"unknown engine {engine}")


def file_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    names = (".onnx", ".data", ".bin", ".gguf")
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name.endswith(names))


def bytes_per_token(engine: str, path: Path, model: str, workdir: Path) -> int:
    """Weight bytes one decode step reads: the model's bytes less its position table, of which a
    token reads one row (exact for GGUF, whose tensor sizes are read; float32 for the others, as
    both store it)."""
    config = json.loads((bench_models.checkpoint(model, workdir) / "config.json").read_text())
    table = int(config["n_positions"]) * int(config["n_embd"])
    if engine.startswith("llama-"):
        sizes = peers.gguf_tensor_bytes(path)
        if sizes:
            return sum(v for k, v in sizes.items() if not k.startswith("position_embd"))
    return file_bytes(path) - 4 * table


def run_child(engine: str, path: Path, prompt: int, new: int, args: argparse.Namespace) -> dict:
    """One engine process; its JSON line, or {"error": ...}."""
    python = sys.executable if engine.startswith("ours-") else str(peers.peers_python())
    cmd = [python, str(HERE / "engines.py"), "--engine", engine, "--path", str(path)]
    cmd += ["--prompt", str(prompt), "--new", str(new), "--threads", str(THREADS)]
    cmd += ["--repeats", str(args.repeats), "--flash-attn", args.llama_flash_attn]
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    if not engine.startswith("ours-"):
        env.pop("PYTHONPATH", None)  # a gpt2-edge snapshot path means nothing to the peers venv
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def summarize(runs: list[dict]) -> dict[str, Any]:
    """Median and range over rounds of each figure; errors kept."""
    ok = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"rounds": runs}
    if not ok:
        out["error"] = runs[-1].get("error") if runs else "not run"
        return out
    for key in ("prefill_ms", "decode_tok_s", "peak_rss_mib", "load_s"):
        values = [r[key] for r in ok]
        out[key] = round(statistics.median(values), 2)
        out[f"{key}_range"] = [min(values), max(values)]
    out["label"] = ok[0].get("label", "")
    out["tokens_head"] = ok[0].get("tokens_head")
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = QUICK if args.quick else SCENARIOS
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": peers.cpu_info(),
        "threads": THREADS,
        "repeats_per_process": args.repeats,
        "rounds": args.rounds,
        "scenarios": {s: dict(prompt=scenarios[s][0], new=scenarios[s][1]) for s in args.scenarios},
        "versions": {**_our_versions(), **peers.peer_versions()},
        "gpt2_edge_source": os.environ.get("PYTHONPATH") or "this checkout",
        "models": {},
    }
    if not args.no_bandwidth:
        import bench_bandwidth

        peers.log("measuring memory read bandwidth")
        result["bandwidth_quiet"] = peers.wait_for_quiet(args.max_busy, args.quiet_timeout)
        result["bandwidth"] = bench_bandwidth.measure(256 if args.quick else 1024, 10)
    for model in args.models:
        entry: dict[str, Any] = {"engines": {}, "results": {}}
        for engine in args.engines:
            try:
                path = engine_files(engine, model, args.workdir)
                entry["engines"][engine] = {
                    "path": str(path),
                    "file_mib": round(file_bytes(path) / 2**20, 1),
                    "bytes_per_token": bytes_per_token(engine, path, model, args.workdir),
                    **peers.build_stats(path),
                }
                if engine.startswith("llama-"):
                    entry["engines"][engine]["tensor_types"] = peers.gguf_tensor_types(path)
            except Exception as exc:  # a model an engine cannot make is a row note
                entry["engines"][engine] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        ready = [e for e in args.engines if "error" not in entry["engines"][e]]
        for scenario in args.scenarios:
            prompt, new = scenarios[scenario]
            runs: dict[str, list[dict]] = {e: [] for e in ready}
            loads = []
            for r in range(args.rounds):
                order = ready[r % len(ready) :] + ready[: r % len(ready)] if ready else []
                before = peers.load_average()
                for engine in order:
                    path = Path(entry["engines"][engine]["path"])
                    quiet = peers.wait_for_quiet(args.max_busy, args.quiet_timeout)
                    t0 = time.perf_counter()
                    res = run_child(engine, path, prompt, new, args)
                    res.update(quiet)
                    peers.log(
                        f"{model} {scenario} round {r + 1}/{args.rounds} {engine}: "
                        f"{res.get('prefill_ms')} ms prefill, {res.get('decode_tok_s')} tok/s, "
                        f"{res.get('peak_rss_mib')} MiB ({time.perf_counter() - t0:.0f} s; "
                        f"waited {quiet['waited_s']} s, CPUs {quiet['busy_at_start']:.0%} busy)"
                        f"{' ' + res['error'] if 'error' in res else ''}"
                    )
                    runs[engine].append(res)
                loads.append([round(before, 2), round(peers.load_average(), 2)])
            entry["results"][scenario] = {e: summarize(runs[e]) for e in ready}
            entry["results"][scenario]["_load_average"] = loads
        result["models"][model] = entry
    return result


def _our_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    head = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    out["gpt2-edge HEAD"] = head
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="124m,355m", help="comma list: tiny, 124m, 355m, 774m, 1.5b")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--scenarios", default="base,long", help="comma list: base, long")
    p.add_argument("--rounds", type=int, default=3, help="processes per engine, taking turns")
    p.add_argument("--repeats", type=int, default=2, help="measured runs per process")
    p.add_argument("--llama-flash-attn", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--workdir", type=Path, default=bench_models.DEFAULT_WORKDIR)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--doc", type=Path, default=DOC, help="markdown file to write the section into")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--no-bandwidth", action="store_true")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per engine process")
    p.add_argument(
        "--max-busy",
        type=float,
        default=0.15,
        help="wait before each process until other jobs keep the CPUs at most this busy",
    )
    p.add_argument("--quiet-timeout", type=float, default=600, help="longest such wait, s")
    p.add_argument("--quick", action="store_true", help="tiny model, short runs, 1 round")
    args = p.parse_args()
    if args.quick:
        args.models = "tiny" if args.models == "124m,355m" else args.models
        args.rounds, args.repeats = 1, 1
    args.models, args.engines = args.models.split(","), args.engines.split(",")
    args.scenarios = args.scenarios.split(",")
    reason = peers.peers_ready()
    if reason and any(not e.startswith("ours-") for e in args.engines):
        sys.exit(f"peers unavailable: {reason}")
    result = bench(args)
    text = peers_report.markdown(result)
    print(text)
    out = (
        args.json_out
        or RESULTS / f"peers-{'-'.join(args.models)}{'-quick' if args.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    peers.log(f"wrote {out}")
    if not args.no_doc and not args.quick:
        peers_report.write_section(args.doc, "-".join(args.models), text)
        peers.log(f"wrote the section {'-'.join(args.models)} of {args.doc}")


if __name__ == "__main__":
    main()
