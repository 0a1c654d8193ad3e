"""What onnxruntime's CPU ``GroupQueryAttention`` supports for the KV cache, and what each costs.

One attention node of GPT-2 124M's shape (12 heads of 64, a 1,024-position cache), alone in a
graph, 2 threads: milliseconds per call for one new token at a past of 128 and of 1,000 and for an
880-token prompt, and the largest difference of its output from the float32 node's. Variants:

- ``float32``: what an fp32 graph runs;
- ``float16``: query, keys and values in float16 (what ``exporter/edits/kv_cache.py`` makes: a Cast
  before and after the node);
- ``float32 + float16 cache``: float32 query with a float16 cache (onnxruntime converts inside);
- ``int8 cache, per tensor`` / ``per channel``: onnxruntime's quantized cache (``k_quant_type``,
  ``kv_cache_bit_width`` 8, static scales given as inputs; here the scale that fits random N(0, 1)
  keys, which a real exporter would have to calibrate per layer).

    python benchmarks/gqa_cache_types.py [--json-out gqa.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, HEAD, CAPACITY, THREADS = 12, 64, 1024, 2
CASES = {"decode, past 128": (128, 1), "decode, past 1000": (1000, 1), "prompt of 880": (0, 880)}
INT8_SCALE = 4.0 / 127  # N(0, 1) values, clipped at 4 sigma


def variants() -> dict[str, dict[str, Any]]:
    f32, f16, i8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.INT8
    per = {"kv_cache_bit_width": 8}
    return {
        "float32": {"t": f32, "cache": f32},
        "float16": {"t": f16, "cache": f16},
        "float32 + float16 cache": {"t": f32, "cache": f16},
        "int8 cache, per tensor": {"t": f32, "cache": i8, "scales": 1,
                                   "attrs": {**per, "k_quant_type": "PER_TENSOR",
                                             "v_quant_type": "PER_TENSOR"}},
        "int8 cache, per channel": {"t": f32, "cache": i8, "scales": HEADS * HEAD,
                                    "attrs": {**per, "k_quant_type": "PER_CHANNEL",
                                              "v_quant_type": "PER_CHANNEL"}},
    }  # fmt: skip


def session(spec: dict[str, Any]) -> ort.InferenceSession:
    t, cache = spec["t"], spec["cache"]
    inputs = [
        helper.make_tensor_value_info("qkv", t, [1, None, 3 * HEADS * HEAD]),
        helper.make_tensor_value_info("past_k", cache, [1, HEADS, CAPACITY, HEAD]),
        helper.make_tensor_value_info("past_v", cache, [1, HEADS, CAPACITY, HEAD]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total", TensorProto.INT32, []),
    ]
    names = ["qkv", "", "", "past_k", "past_v", "seqlens_k", "total"]
    if spec.get("scales"):
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [spec["scales"]])
                   for n in ("k_scale", "v_scale")]  # fmt: skip
        names += ["", "", "", "", "", "k_scale", "v_scale"]
    node = helper.make_node("GroupQueryAttention", names, ["out", "present_k", "present_v"],
                            domain="com.microsoft", num_heads=HEADS, kv_num_heads=HEADS,
                            **spec.get("attrs", {}))  # fmt: skip
    outputs = [helper.make_tensor_value_info("out", t, None),
               helper.make_tensor_value_info("present_k", cache, None),
               helper.make_tensor_value_info("present_v", cache, None)]  # fmt: skip
    graph = helper.make_graph([node], "gqa", inputs, outputs)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 4
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def feeds(spec: dict[str, Any], past: int, new: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((1, new, 3 * HEADS * HEAD)).astype(np.float32)
    keys = rng.standard_normal((2, 1, HEADS, CAPACITY, HEAD)).astype(np.float32)
    t = np.float16 if spec["t"] == TensorProto.FLOAT16 else np.float32
    if spec["cache"] == TensorProto.INT8:
        cache = np.clip(np.round(keys / INT8_SCALE), -127, 127).astype(np.int8)
    else:
        cache = keys.astype(np.float16 if spec["cache"] == TensorProto.FLOAT16 else np.float32)
    out = {"qkv": qkv.astype(t), "past_k": cache[0], "past_v": cache[1],
           "seqlens_k": np.array([past + new - 1], np.int32),
           "total": np.array(past + new, np.int32)}  # fmt: skip
    if spec.get("scales"):
        scale = np.full(spec["scales"], INT8_SCALE, np.float32)
        out.update(k_scale=scale, v_scale=scale)
    return out


def timed(sess: ort.InferenceSession, inputs: dict[str, np.ndarray], new: int) -> float:
    for _ in range(3):
        sess.run(["out"], inputs)
    calls = 200 if new == 1 else 5
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            sess.run(["out"], inputs)
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def measure() -> list[dict[str, Any]]:
    rows, reference = [], {}
    for name, spec in variants().items():
        row: dict[str, Any] = {"variant": name}
        try:
            sess = session(spec)
            for case, (past, new) in CASES.items():
                inputs = feeds(spec, past, new)
                out = sess.run(["out"], inputs)[0].astype(np.float32)
                reference.setdefault(case, out)
                row[case] = round(timed(sess, inputs, new), 3)
                row[f"{case} max diff"] = float(np.abs(out - reference[case]).max())
        except Exception as exc:  # what onnxruntime does not support is a finding, not a crash
            row["unsupported"] = str(exc).splitlines()[0][:160]
        rows.append(row)
        print(f"[gqa] {name}: {row}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json-out", type=Path)
    args = p.parse_args()
    rows = measure()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"GroupQueryAttention on the CPU, onnxruntime {ort.__version__}, "
                        f"{THREADS} threads: ms per call (max |diff| vs float32)")  # fmt: skip
    table.add_column("cache")
    for case in CASES:
        table.add_column(case, justify="right")
    for row in rows:
        if "unsupported" in row:
            table.add_row(row["variant"], *(["unsupported"] * len(CASES)))
            continue
        cells = [f"{row[c]:.3f} ({row[f'{c} max diff']:.1e})" for c in CASES]
        table.add_row(row["variant"], *cells)
    Console().print(table)
    if args.json_out:
        data = {"onnxruntime": ort.__version__, "threads": THREADS, "rows": rows}
        args.json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
