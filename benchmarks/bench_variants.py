"""Which graph edits and onnxruntime settings pay: speed, kernels, invariance and fidelity.

An experiment is a graph variant (``graph_variants.py``: the shipped int8 / int4 bundles, 8-bit
MatMulNBits projections, a 4-bit LM head, a float32 KV cache...) run under a setting
(``SETTINGS``: onnxruntime's defaults as the runtime sets them, no thread spinning, one thread,
graph optimization level, ...). For each:

- speed through the runtime (``engines.py ours``, each run its own process, experiments taking
  turns round after round): prefill ms, decode tok/s (128-token prompt, 128 greedy tokens,
  2 threads unless the setting says otherwise), peak RSS;
- kernels a decode step runs: the nodes of the graph onnxruntime optimizes and runs (saved with
  ``optimized_model_filepath``);
- ``variant_checks.py`` on the bare graph: batch invariance (each row of a batch, equal lengths
  and right-padded, against the row alone), cache invariance (a 128-token prompt in one call
  against token by token), and the logits against the fp32 graph and the shipped int8 graph (max
  difference, top-1 agreement over the positions; on the trained fixture also the perplexity).

    python benchmarks/bench_variants.py --models 124m --rounds 3
    python benchmarks/bench_variants.py --experiments int8:default,int8:spin0 --no-checks
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import graph_variants  # noqa: E402
import peers  # noqa: E402

import models as bench_models  # noqa: E402

# name -> (threads, onnxruntime settings for engines.py --ort)
SETTINGS: dict[str, tuple[int, list[str]]] = {
    "default": (2, []),
    "spin0": (2, ["session.intra_op.allow_spinning=0"]),
    "threads1": (1, []),
    "extended": (2, ["level=extended"]),
    "basic": (2, ["level=basic"]),
    "dbb4": (2, ["session.dynamic_block_base=4"]),
    "affinity": (2, ["session.intra_op_thread_affinities=2"]),
    "denormal0": (2, ["session.set_denormal_as_zero=1"]),
}
# Models whose variants also get the greedy-token invariance checks (runtime, 8 prompts).
GREEDY_MODELS = ("fixture", "tiny", "124m")
DEFAULT_EXPERIMENTS = (
    "int8:default,int8:spin0,int8:threads1,int8:extended,int8:dbb4,int8:affinity,"
    "int8-kv32:default,int8-head4:default,nbits8-b32:default,nbits8-b64:default,"
    "nbits8-b128:default,nbits8-b32-head4:default,nbits8-b32-kv32:default,int4:default"
)


def kernels(bundle: Path, setting: str) -> dict[str, Any]:
    """Nodes of the graph as onnxruntime optimizes it under ``setting`` (one kernel each a step),
    by type; measured in a child so that no session stays in this process."""
    threads, ort = SETTINGS[setting]
    code = f"""
import sys, json, collections, onnx, onnxruntime as o
sys.path.insert(0, {str(HERE)!r})
from engines import patch_session_options
patch_session_options({ort!r})
opts = o.SessionOptions(); opts.intra_op_num_threads = {threads}
opts.graph_optimization_level = o.GraphOptimizationLevel.ORT_ENABLE_ALL
opts.optimized_model_filepath = sys.argv[2]
key = "session.optimized_model_external_initializers_"
opts.add_session_config_entry(key + "file_name", "w.bin")
opts.add_session_config_entry(key + "min_size_in_bytes", "1024")
o.InferenceSession(sys.argv[1], opts)
m = onnx.load(sys.argv[2], load_external_data=False)
print(json.dumps(collections.Counter(n.op_type for n in m.graph.node)))
"""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        proc = subprocess.run(
            [sys.executable, "-c", code, str(bundle / "model.onnx"), str(out)],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1]}
    ops = json.loads(proc.stdout.splitlines()[-1])
    return {"kernels": sum(ops.values()), "ops": ops}


def speed(bundle: Path, setting: str, prompt: int, new: int, repeats: int) -> dict[str, Any]:
    threads, ort = SETTINGS[setting]
    cmd = [sys.executable, str(HERE / "engines.py"), "--engine", "ours", "--path", str(bundle)]
    cmd += ["--prompt", str(prompt), "--new", str(new), "--threads", str(threads)]
    cmd += ["--repeats", str(repeats), *[f"--ort={x}" for x in ort]]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    experiments = [tuple(e.split(":")) for e in args.experiments.split(",")]
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpu": peers.cpu_info(),
        "settings": {k: {"threads": v[0], "onnxruntime": v[1]} for k, v in SETTINGS.items()},
        "models": {},
    }
    for model in args.models.split(","):
        bundles = {v: graph_variants.VARIANTS[v](model, args.workdir) for v, _ in experiments}
        entry: dict[str, Any] = {}
        for v, s in experiments:
            entry[f"{v}:{s}"] = {
                "variant": v,
                "setting": s,
                "file_mib": round(sum(f.stat().st_size for f in bundles[v].iterdir()) / 2**20, 1),
                **kernels(bundles[v], s),
                "runs": {},
            }
        for scenario, prompt in (("base", 128), ("long", 880))[: 2 if args.long else 1]:
            for r in range(args.rounds):
                shift = r % len(experiments)
                order = experiments[shift:] + experiments[:shift]
                load = peers.load_average()
                for v, s in order:
                    res = speed(bundles[v], s, prompt, args.new, args.repeats)
                    res["load_before"] = round(load, 2)
                    entry[f"{v}:{s}"]["runs"].setdefault(scenario, []).append(res)
                    peers.log(
                        f"{model} {scenario} round {r + 1} {v}:{s}: {res.get('prefill_ms')} ms, "
                        f"{res.get('decode_tok_s')} tok/s {res.get('error', '')}"
                    )
        for e in entry.values():
            for scenario, runs in e["runs"].items():
                ok = [x for x in runs if "error" not in x]
                if not ok:
                    continue
                for key in ("prefill_ms", "decode_tok_s", "peak_rss_mib"):
                    vals = [x[key] for x in ok]
                    e[f"{scenario}_{key}"] = statistics.median(vals)
                    e[f"{scenario}_{key}_range"] = [min(vals), max(vals)]
        if not args.no_checks:
            import variant_checks

            ref = graph_variants.VARIANTS["int8"](model, args.workdir)
            fp32 = bench_models.ours(model, "fp32", args.workdir)[0]
            for v in dict.fromkeys(v for v, _ in experiments):
                peers.log(f"{model} {v}: invariance and fidelity checks")
                figures = variant_checks.check(
                    bundles[v], fp32, ref, fixture=model == "fixture", greedy=model in GREEDY_MODELS
                )
                for e in entry.values():
                    if e["variant"] == v:
                        e["checks"] = figures
        result["models"][model] = entry
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"CPU: {peers.cpu_line(result['cpu'])}", ""]
    head = "| model | variant : setting | kernels | file MiB | prefill ms | decode tok/s | "
    head += "long decode tok/s | peak RSS | batch Δ | cache Δ | greedy changed (batch/cache) | "
    head += "Δ vs int8 | Δ vs fp32 | top-1 vs fp32 | ppl vs fp32 |"
    lines += [head, "|" + "---|" * 2 + "---:|" * 13]

    def cell(e: dict, key: str, fmt: str = "{:.1f}") -> str:
        if key not in e:
            return "-"
        lo, hi = e[f"{key}_range"]
        return fmt.format(e[key]) + (f" ({fmt.format(lo)}–{fmt.format(hi)})" if lo != hi else "")

    for model, entry in result["models"].items():
        for name, e in entry.items():
            c = e.get("checks", {})

            def g(k: str, f: str = "{:.2g}", c: dict = c) -> str:
                return f.format(c[k]) if k in c else "-"

            lines.append(
                f"| {model} | {name} | {e.get('kernels', '-')} | {e['file_mib']:.0f} | "
                f"{cell(e, 'base_prefill_ms')} | {cell(e, 'base_decode_tok_s')} | "
                f"{cell(e, 'long_decode_tok_s')} | {cell(e, 'base_peak_rss_mib', '{:.0f}')} | "
                f"{g('batch_max_diff')} | {g('cache_max_diff')} | "
                f"{g('greedy_batch_rows_changed', '{}')}/"
                f"{g('greedy_cache_prompts_changed', '{}')} | {g('vs_int8_max_diff')} | "
                f"{g('vs_fp32_max_diff')} | {g('vs_fp32_top1', '{:.1%}')} | "
                f"{g('ppl_change', '{:+.2%}')} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="124m")
    p.add_argument("--experiments", default=DEFAULT_EXPERIMENTS, help="variant:setting,...")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--long", action="store_true", help="also an 880-token prompt")
    p.add_argument("--no-checks", action="store_true")
    p.add_argument("--workdir", type=Path, default=bench_models.DEFAULT_WORKDIR)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    result = run(args)
    print(table(result))
    out = args.json_out or HERE / "results" / f"variants-{args.models.replace(',', '-')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    peers.log(f"wrote {out}")


if __name__ == "__main__":
    main()
