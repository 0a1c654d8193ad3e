"""Where one decode step's time goes: onnxruntime's profiler, per operator category.

Runs the runtime's default path (``gpt2_edge.runtime.load(...).generate``: the fused graph with the
shared KV buffer) on a bundle with onnxruntime's profiler on, then groups the kernel time of the
decode steps only (the prompt's run is left out) into the categories below. The optimized graph
onnxruntime actually runs is saved next to the trace and classified by data flow, so the categories
hold for every int8 recipe (and for fp32 and 4-bit bundles):

- projections: the c_attn / c_proj / c_fc / mlp proj products (``MatMulInteger``,
  ``MatMulIntegerToFloat``, ``MatMulNBits``, ``MatMul``);
- activation quantization: the ops that feed a projection's int8 input (per-row Abs / ReduceMax /
  Mul / Max / Div / Round / Add / Cast, or ``QuantizeLinear``, or ``DynamicQuantizeLinear``);
- dequantization: the ``Cast`` / ``Mul`` chain after an integer product;
- projection bias: the ``Add`` of a projection's bias where no other op absorbed it;
- attention (``GroupQueryAttention``), the LM head (the product whose weight is the head's),
  LayerNorms, FastGelu, Gather/embedding, other;
- outside the graph: the wall time per step minus the summed kernel time, split into the
  session's own time outside kernels (executor, allocation, the profiler's own cost) and Python
  (the loop, sampling, IO binding).

The profiler itself costs a little per kernel, so the wall time per step is also measured in a
second, unprofiled process and printed beside it; the table's ms are the profiled run's. Each
bundle is profiled ``--rounds`` times, the bundles taking turns, and every figure is the median.

    python benchmarks/profile_decode.py --json-out benchmarks/results/profile-decode.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_generate import PROMPT_TEXT  # noqa: E402

DEFAULT_BUNDLE = HERE / ".cache" / "124m" / "ours-int8"
CATEGORIES = (
    "projections",
    "activation quantization",
    "dequantization",
    "projection bias",
    "attention",
    "LM head",
    "LayerNorms",
    "FastGelu",
    "Gather/embedding",
    "other",
)
PROJECTIONS = {"MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits"}
PROJECTIONS |= {"MatMul", "Gemm", "FusedMatMul", "QGemm"}
# Ops a per-row or per-tensor activation quantizer is built from: walking back from a
# projection's int8 input through these finds the whole quantizer and stops at the op that made x.
QUANTIZER_OPS = {"Abs", "ReduceMax", "ReduceMin", "Mul", "Max", "Min", "Div", "Round", "Add"}
QUANTIZER_OPS |= {"Cast", "Clip", "Floor", "QuantizeLinear", "DynamicQuantizeLinear", "Reshape"}
QUANTIZER_OPS |= {"Squeeze", "Unsqueeze", "Flatten", "Sub", "Reciprocal"}
INT_PRODUCTS = {"MatMulInteger"}
LAYERNORMS = {"SkipLayerNormalization", "LayerNormalization", "SkipSimplifiedLayerNormalization"}
ATTENTION = {"GroupQueryAttention", "MultiHeadAttention", "Attention"}
GELU = {"FastGelu", "Gelu", "BiasGelu", "QuickGelu"}
EMBEDDING = {"Gather", "GatherBlockQuantized"}


def classify(model: onnx.ModelProto, head_weight: str = "lm_head") -> dict[str, str]:
    """Each node name of the optimized graph -> its category, by what the node feeds or reads."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)
    cat: dict[str, str] = {}
    for n in graph.node:
        if n.op_type in PROJECTIONS and len(n.input) > 1:
            head = any(head_weight in i for i in n.input[1:3])
            if n.op_type == "MatMul" and not _constant(graph, producer, n.input[1]):
                continue  # two activations (unfused attention): left to "other"
            cat[n.name] = "LM head" if head else "projections"
    for n in graph.node:
        if cat.get(n.name) != "projections" or n.op_type == "MatMul":
            continue
        # the quantizer: back from the int8 input (and the scale/zero point inputs)
        stack = [i for i in list(n.input)[:1] + list(n.input)[2:3] if i in producer]
        while stack:
            p = producer[stack.pop()]
            if p.op_type not in QUANTIZER_OPS or p.name in cat:
                continue
            cat[p.name] = "activation quantization"
            stack.extend(i for i in p.input if i in producer)
        if n.op_type in INT_PRODUCTS or n.op_type == "MatMulIntegerToFloat":
            _dequantization(n, consumers, cat)
    for n in graph.node:
        if n.name in cat:
            continue
        if n.op_type in ATTENTION:
            cat[n.name] = "attention"
        elif n.op_type in LAYERNORMS:
            cat[n.name] = "LayerNorms"
        elif n.op_type in GELU:
            cat[n.name] = "FastGelu"
        elif n.op_type in EMBEDDING:
            cat[n.name] = "Gather/embedding"
        elif n.op_type == "Add" and _after_projection(n, producer, cat):
            cat[n.name] = "projection bias"
        else:
            cat[n.name] = "other"
    return cat


def _constant(graph: onnx.GraphProto, producer: dict[str, onnx.NodeProto], name: str) -> bool:
    if any(t.name == name for t in graph.initializer):
        return True
    p = producer.get(name)
    return (
        p is not None
        and p.op_type in ("Transpose", "DequantizeLinear", "Cast")
        and all(_constant(graph, producer, i) for i in p.input if i)
    )


def _dequantization(
    product: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]], cat: dict[str, str]
) -> None:
    """The Cast and the Mul chain that turn an integer product's output into floats."""
    frontier = list(product.output)
    while frontier:
        for c in consumers.get(frontier.pop(), []):
            if c.op_type in ("Cast", "Mul") and c.name not in cat:
                cat[c.name] = "dequantization"
                frontier.extend(c.output)


def _after_projection(
    add: onnx.NodeProto, producer: dict[str, onnx.NodeProto], cat: dict[str, str]
) -> bool:
    p = producer.get(add.input[0])
    return p is not None and cat.get(p.name) in ("projections", "dequantization")


def profile(bundle: Path, threads: int, prompt_tokens: int, new_tokens: int, out: Path) -> dict:
    """Run warm-up + one measured generate with the profiler on; return trace path and timings."""
    import onnxruntime as ort
    from gpt2_edge.runtime import load
    from gpt2_edge.runtime.graph import session as runtime_session

    plain = runtime_session.session_options

    def profiled(threads_: int | None) -> ort.SessionOptions:
        opts = plain(threads_)
        opts.enable_profiling = True
        opts.profile_file_prefix = str(out / "ort")
        opts.optimized_model_filepath = str(out / "optimized.onnx")
        return opts

    runtime_session.session_options = profiled  # the runtime's own options, profiler on
    try:
        gen = load(bundle, provider="cpu", threads=threads)
    finally:
        runtime_session.session_options = plain
    timings = _measure(gen, prompt_tokens, new_tokens)
    trace = gen.session.ort.end_profiling()
    return {"trace": trace, **timings}


def _measure(gen: Any, prompt_tokens: int, new_tokens: int) -> dict[str, float]:
    ids = gen.tokenizer.encode(PROMPT_TEXT * 8)[:prompt_tokens]
    prompt = gen.tokenizer.decode(list(ids))
    gen.generate(prompt, max_new_tokens=8, temperature=0.0, ignore_eos=True)  # warm-up
    t = gen.generate(prompt, max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True).timings
    return {"decode_steps": t.decode_tokens, "wall_ms_per_step": t.decode_ms / t.decode_tokens}


def kernel_times(trace: Path, decode_steps: int) -> tuple[dict[str, float], float]:
    """Summed kernel µs per node name over the last ``decode_steps`` runs, and their run µs."""
    events = json.loads(Path(trace).read_text(encoding="utf-8"))
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[
        -decode_steps:
    ]
    start = runs[0][0]
    per_node: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            per_node[e["name"][: -len("_kernel_time")]] += e["dur"]
    return per_node, sum(b - a for a, b in runs)


def unprofiled_wall(bundle: Path, threads: int, prompt_tokens: int, new_tokens: int) -> float:
    """ms per decode step of the same run without the profiler, in a fresh process."""
    cmd = [sys.executable, __file__, "--child", str(bundle), "--threads", str(threads)]
    cmd += ["--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])["wall_ms_per_step"]


def breakdown(bundle: Path, threads: int, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    """The profile of one bundle: per category ms/token, % of the step, kernels per step."""
    with tempfile.TemporaryDirectory() as tmp:
        run = profile(bundle, threads, prompt_tokens, new_tokens, Path(tmp))
        steps = run["decode_steps"]
        per_node, run_us = kernel_times(Path(run["trace"]), steps)
        optimized = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
        categories = classify(optimized)
    ms: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
    kernels: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
    for node, us in per_node.items():
        c = categories.get(node, "other")
        ms[c] += us / 1000 / steps
        kernels[c] += 1
    kernel_ms = sum(ms.values())
    wall = run["wall_ms_per_step"]
    ms["outside kernels: session"] = run_us / 1000 / steps - kernel_ms
    ms["outside kernels: Python"] = wall - run_us / 1000 / steps
    rows = {c: {"ms_per_token": v, "percent": 100 * v / wall} for c, v in ms.items()}
    for c, k in kernels.items():
        rows[c]["kernels"] = k
    plain = unprofiled_wall(bundle, threads, prompt_tokens, new_tokens)
    count = sum(kernels.values())
    return {
        "bundle": str(bundle),
        "decode_steps": steps,
        "wall_ms_per_step_profiled": wall,
        "wall_ms_per_step_unprofiled": plain,
        # what the profiler adds per kernel: small kernels' shares are inflated by about this
        "profiler_us_per_kernel": (wall - plain) * 1000 / count,
        "kernel_ms_per_step": kernel_ms,
        "kernels_per_step": count,
        "categories": rows,
    }


def calibrate(threads: int, ops: int = 400, runs: int = 200) -> dict[str, float]:
    """What the profiler adds to a kernel that does next to nothing (Abs/Neg of 768 floats).

    A chain of ``ops`` such kernels runs without and with the profiler: the µs per kernel
    unprofiled, the kernel time the profiler records for each, and the wall time per kernel
    profiled. Categories made of many small kernels are inflated by about the difference.
    """
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Abs" if i % 2 else "Neg", [f"t{i}"], [f"t{i + 1}"]) for i in range(ops)
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 1, 768])],
        [helper.make_tensor_value_info(f"t{ops}", TensorProto.FLOAT, [1, 1, 768])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    x = {"t0": np.ones((1, 1, 768), np.float32)}
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for profiled in (False, True):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            opts.enable_profiling = profiled
            opts.profile_file_prefix = str(Path(tmp) / "chain")
            session = ort.InferenceSession(model.SerializeToString(), opts)
            for _ in range(20):
                session.run(None, x)
            start = time.perf_counter()
            for _ in range(runs):
                session.run(None, x)
            wall_us = (time.perf_counter() - start) / runs / ops * 1e6
            if not profiled:
                figures["tiny_kernel_us"] = wall_us
                continue
            figures["tiny_kernel_us_profiled_wall"] = wall_us
            events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
            durations = [e["dur"] for e in events if e.get("cat") == "Node"]
            figures["tiny_kernel_us_profiled_kernel"] = statistics.median(durations)
    return figures


def median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Every number of several breakdowns of one bundle replaced by its median."""
    first = rounds[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in rounds]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(rounds)
    return first


def print_table(result: dict[str, Any]) -> None:
    wall = result["wall_ms_per_step_profiled"]
    print(f"\n{result['bundle']}: {result['decode_steps']} decode steps")
    print(
        f"wall {wall:.3f} ms/token profiled ({1000 / wall:.0f} tok/s), "
        f"{result['wall_ms_per_step_unprofiled']:.3f} unprofiled "
        f"({1000 / result['wall_ms_per_step_unprofiled']:.0f} tok/s); "
        f"{result['kernels_per_step']} kernels per step; the profiler adds "
        f"~{result['profiler_us_per_kernel']:.1f} µs a kernel\n"
    )
    cal = result.get("calibration")
    floor = cal["tiny_kernel_us_profiled_kernel"] - cal["tiny_kernel_us"] if cal else 0.0
    print("| category | ms/token | % of step | kernels/step | ms/token less the profiler's floor |")
    print("|---|---:|---:|---:|---:|")
    for name, row in result["categories"].items():
        k = row.get("kernels", "")
        less = f"{row['ms_per_token'] - k * floor / 1000:.3f}" if k != "" else ""
        print(f"| {name} | {row['ms_per_token']:.3f} | {row['percent']:.1f}% | {k} | {less} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", type=Path, default=[DEFAULT_BUNDLE])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="profiles per bundle; medians shown")
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        from gpt2_edge.runtime import load

        gen = load(args.child, provider="cpu", threads=args.threads)
        print(json.dumps(_measure(gen, args.prompt_tokens, args.new_tokens)))
        return
    runs: dict[Path, list[dict[str, Any]]] = {b: [] for b in args.bundles}
    for r in range(args.rounds):  # the bundles take turns: this machine's speed drifts
        for b in args.bundles:
            runs[b].append(breakdown(b, args.threads, args.prompt_tokens, args.new_tokens))
        print(f"[profile_decode] round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    results = [median_of(rounds) for rounds in runs.values()]
    cal = median_of([calibrate(args.threads) for _ in range(args.rounds)])
    print(
        "\nA kernel doing next to nothing (Abs of 768 floats) costs "
        f"{cal['tiny_kernel_us']:.2f} µs "
        f"unprofiled; profiled, {cal['tiny_kernel_us_profiled_kernel']:.2f} µs of kernel time and "
        f"{cal['tiny_kernel_us_profiled_wall']:.2f} µs of wall time (the last column subtracts "
        "the kernel-time difference from each kernel)."
    )
    for r in results:
        r["calibration"] = cal
        print_table(r)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
