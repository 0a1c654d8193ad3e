"""The browser runtime against the Python runtime: a web pack's download size, and in headless
chromium (WASM, 1 and 2 threads) its load time, time to first token and decode tokens/s, beside
the Python runtime on the same bundle with the same threads.

Models: the trained fixture (fp32 and int8) and GPT-2 124M with random weights and the real config
(int8 and int4; fp32 as well with ``--models`` naming ``124m-fp32``), exported once by
``models.py`` under ``--workdir``. Each bundle is packed with ``gpt2-pack --platform web`` (once,
under the work folder), served from 127.0.0.1 with the cross-origin isolation headers, and opened
in a fresh browser context per thread count (an empty cache: load time includes the download from
localhost, the SHA-256 checks and onnxruntime-web's session). The Python runtime runs in a child
process with file hashing on (``GPT2_EDGE_CACHE_DIR=""``, as the page always hashes).

Scenario: bench_generate's fixed English prompt cut to ``--prompt`` tokens (default 128),
``--new`` greedy tokens (default 32: int4 runs at well under 1 token/s in WASM) with EOS ignored,
one short warm-up, then the median of ``--runs`` runs (default 2). Time to first token is the
prompt's forward and the first pick; tokens/s counts the tokens after the first.

    python benchmarks/bench_browser.py                          # all rows, table + JSON
    python benchmarks/bench_browser.py --models fixture-int8 --threads 1 --runs 1   # a dev check
    python benchmarks/bench_browser.py --lm-head    # one LM-head product per operator, WASM and x86

``--lm-head`` times GPT-2 124M's LM head (768 x 50257, one token) as each operator a bundle may
hold it in, in onnxruntime-web's WASM build under Node and in onnxruntime on this CPU (1 thread):
it is why int8 and int4 bundles run slower in a page than fp32 (MatMulNBits has no WASM kernel).

Needs web/node_modules (``npm ci --ignore-scripts`` in web/), chromium and Playwright.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests" / "web")]

from bench_generate import prompt_text  # noqa: E402
from web_support import static_server  # noqa: E402

import models as bench_models  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEFAULT_MODELS = "fixture-fp32,fixture-int8,124m-int8,124m-int4"
MIB = 1 << 20


def bundle_for(name: str, workdir: Path) -> Path:
    """``fixture-int8`` -> the bundle folder (exported once by models.py)."""
    model, precision = name.rsplit("-", 1)
    return bench_models.ours(model, precision, workdir)[0]


def pack_for(bundle: Path, name: str, workdir: Path) -> tuple[Path, dict[str, int]]:
    """The bundle's web pack (made afresh: a few seconds, and never a stale page) and its
    download sizes: raw bytes per build, and gzip-compressed bytes of the WASM build's files."""
    import shutil

    from gpt2_edge.pack.web import PACK_MANIFEST, make_web_pack

    folder = workdir / "web-packs" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    make_web_pack(bundle, folder)
    pack = json.loads((folder / PACK_MANIFEST).read_text())
    files = pack["files"]
    builds = pack["onnxruntime_web"]["builds"]
    wasm_files = [n for n in files if _downloaded(n, builds["wasm"])]
    other_ort = {builds["webgpu"][k] for k in ("module", "glue", "wasm")}
    sizes = {
        "wasm": sum(files[n]["size"] for n in wasm_files),
        "webgpu": sum(files[n]["size"] for n in files if _downloaded(n, builds["webgpu"])),
        "model": sum(e["size"] for n, e in files.items() if n.startswith("model/")),
        "wasm_gzip": sum(len(gzip.compress((folder / n).read_bytes(), 6)) for n in wasm_files),
        "folder": sum(e["size"] for e in files.values()),
    }
    assert not other_ort & set(wasm_files)
    return folder, sizes


def _downloaded(name: str, build: dict[str, str]) -> bool:
    """Whether a page on this build fetches the pack file ``name``."""
    return (
        name in ("index.html", "pack.json", "vendor/tokenizers/tokenizers.min.mjs")
        or name.startswith(("js/", "model/"))
        or name in (build["module"], build["glue"], build["wasm"])
    )


def python_figures(bundle: Path, threads: int, prompt: str, new: int, runs: int) -> dict:
    """The Python runtime's figures, from a child process (``--python-child``) with file hashing
    on (``GPT2_EDGE_CACHE_DIR=""``), as the page always hashes."""
    env = {**os.environ, "GPT2_EDGE_CACHE_DIR": ""}
    command = [sys.executable, __file__, "--python-child", str(bundle), "--threads", str(threads)]
    command += ["--new", str(new), "--runs", str(runs), "--prompt-text", prompt]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def python_child(bundle: str, threads: int, prompt: str, new: int, runs: int) -> dict:
    from gpt2_edge.runtime import load

    start = time.perf_counter()
    gen = load(bundle, provider="cpu", threads=threads)
    load_s = time.perf_counter() - start
    gen.generate(prompt, max_new_tokens=4, temperature=0, ignore_eos=True)  # warm-up
    found = []
    for _ in range(runs):
        r = gen.generate(prompt, max_new_tokens=new, temperature=0, ignore_eos=True)
        tok_s = (len(r.tokens) - 1) / (r.timings.decode_ms / 1000)
        found.append((r.timings.prefill_ms, tok_s))
    return {
        "load_s": load_s,
        "ttft_ms": statistics.median(f[0] for f in found),
        "tok_s": statistics.median(f[1] for f in found),
        "tokens": [int(t) for t in r.tokens[:8]],
        "prompt_tokens": r.prompt_tokens,
    }


def browser_figures(
    playwright: Any, url: str, threads: int, prompt: str, new: int, runs: int
) -> dict:
    """Load time, time to first token and tokens/s of the pack's page in a fresh context."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
    try:
        page = browser.new_context().new_page()
        page.goto(f"{url}/?threads={threads}")
        page.wait_for_function(
            "performance.getEntriesByName('gpt2edge-loaded').length > 0"
            " || document.body.dataset.state === 'failed'",
            timeout=600_000,
        )
        return page.evaluate(
            """async ([prompt, threads, count, runs]) => {
              const g = await window.gpt2edge;
              const load = performance.getEntriesByName("gpt2edge-loaded")[0].startTime;
              const settings = {temperature: 0, ignore_eos: true};
              await g.generate(prompt, {...settings, max_new_tokens: 4});
              const found = [];
              let last;
              for (let i = 0; i < runs; i++) {
                last = await g.generate(prompt, {...settings, max_new_tokens: count});
                found.push([last.timings.prefill_ms, last.timings.tokens_per_second]);
              }
              const median = (xs) => {
                const s = [...xs].sort((a, b) => a - b);
                const m = Math.floor(s.length / 2);
                return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
              };
              return {load_s: load / 1000, ttft_ms: median(found.map((f) => f[0])),
                      tok_s: median(found.map((f) => f[1])), tokens: last.tokens.slice(0, 8),
                      threads: g.threads, isolated: crossOriginIsolated,
                      prompt_tokens: last.prompt_tokens};
            }""",
            [prompt, threads, new, runs],
        )
    finally:
        browser.close()


# One product per LM-head operator, in Node (onnxruntime-web's WASM build, 1 thread).
LM_HEAD_NODE = """
import * as ort from "onnxruntime-web";
import fs from "node:fs";
ort.env.wasm.numThreads = 1;
const out = {};
for (const path of process.argv.slice(1)) {
  const s = await ort.InferenceSession.create(fs.readFileSync(path), { logSeverityLevel: 3 });
  const data = Float32Array.from({ length: 768 }, (_, i) => Math.sin(i));
  const x = new ort.Tensor("float32", data, [1, 1, 768]);
  await s.run({ x });
  const t = performance.now();
  for (let i = 0; i < 5; i++) await s.run({ x });
  out[path] = (performance.now() - t) / 5;
}
console.log(JSON.stringify(out));
"""


def lm_head(folder: Path) -> dict[str, dict[str, float]]:
    """ms per LM-head product (768 x 50257, one token) per operator: WASM and this CPU."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    folder.mkdir(parents=True, exist_ok=True)
    weight = np.random.default_rng(0).standard_normal((768, 50257)).astype(np.float32) * 0.02
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "lm_head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 768])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 50257])],
        [numpy_helper.from_array(weight, "W")],
    )  # fmt: skip
    paths = {"fp32 MatMul": folder / "fp32.onnx"}
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), paths["fp32 MatMul"]
    )
    paths["int8 MatMulInteger (dynamic)"] = folder / "int8.onnx"
    quantize_dynamic(paths["fp32 MatMul"], paths["int8 MatMulInteger (dynamic)"],
                     weight_type=QuantType.QInt8, per_channel=True)  # fmt: skip
    for bits, block in ((8, 64), (4, 32)):  # the int8 bundle's LM head; the int4 bundle's layers
        quantizer = MatMulNBitsQuantizer(
            onnx.load(paths["fp32 MatMul"]), bits=bits, block_size=block, is_symmetric=True,
            accuracy_level=4,
        )  # fmt: skip
        quantizer.process()
        paths[f"{bits}-bit MatMulNBits"] = folder / f"nbits{bits}.onnx"
        onnx.save(quantizer.model.model, paths[f"{bits}-bit MatMulNBits"])
    for path in paths.values():  # onnxruntime-web 1.31.1 reads IR versions up to 10
        model = onnx.load(path)
        model.ir_version = 10
        onnx.save(model, path)
    done = subprocess.run(
        ["node", "--input-type=module", "-e", LM_HEAD_NODE, *map(str, paths.values())],
        cwd=ROOT / "web", capture_output=True, text=True, check=True,
    )  # fmt: skip
    wasm = json.loads(done.stdout.strip().splitlines()[-1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    found = {}
    x = np.sin(np.arange(768, dtype=np.float32)).reshape(1, 1, 768)
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {"x": x})
        start = time.perf_counter()
        for _ in range(5):
            session.run(None, {"x": x})
        cpu = (time.perf_counter() - start) / 5 * 1000
        found[name] = {"wasm_ms": wasm[str(path)], "onnxruntime_ms": cpu}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=bench_models.DEFAULT_WORKDIR)
    parser.add_argument("--json-out", type=Path, default=HERE / "results" / "browser.json")
    parser.add_argument("--python-child", help=argparse.SUPPRESS)  # a bundle: one child's run
    parser.add_argument("--prompt-text", help=argparse.SUPPRESS)
    parser.add_argument("--lm-head", action="store_true", help="time the LM head per operator")
    args = parser.parse_args()
    if args.lm_head:
        found = lm_head(args.workdir / "lm-head")
        print("| LM head (768 x 50257, 1 token) | onnxruntime-web WASM ms | onnxruntime ms |")
        print("|---|---|---|")
        for name, f in found.items():
            print(f"| {name} | {f['wasm_ms']:.1f} | {f['onnxruntime_ms']:.1f} |")
        return
    if args.python_child:
        found = python_child(
            args.python_child, int(args.threads), args.prompt_text, args.new, args.runs
        )
        print(json.dumps(found))
        return
    from playwright.sync_api import sync_playwright

    prompt = prompt_text(bench_models.TOKENIZER_DIR / "tokenizer.json", args.prompt)
    rows = []
    with sync_playwright() as playwright:
        for name in args.models.split(","):
            bundle = bundle_for(name, args.workdir)
            folder, sizes = pack_for(bundle, name, args.workdir)
            with static_server(folder) as url:
                for threads in (int(t) for t in args.threads.split(",")):
                    started = time.perf_counter()
                    web = browser_figures(playwright, url, threads, prompt, args.new, args.runs)
                    py = python_figures(bundle, threads, prompt, args.new, args.runs)
                    same = web["tokens"] == py["tokens"]
                    rows.append(
                        {"model": name, "threads": threads, "sizes": sizes, "browser": web,
                         "python": py, "same_first_tokens": same}
                    )  # fmt: skip
                    took = time.perf_counter() - started
                    print(f"[browser] {name}, {threads} thread(s): {took:.0f} s", file=sys.stderr)
    version = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
    result = {
        "cpu": _cpu(),
        "load_average": os.getloadavg(),
        "chromium": version.strip(),
        "scenario": {"prompt_tokens": args.prompt, "new_tokens": args.new, "runs": args.runs},
        "rows": rows,
    }  # fmt: skip
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"\nJSON: {args.json_out}")


def table(rows: list[dict]) -> str:
    lines = [
        "| model | download MiB (runtime + model; gzip) | threads | load s (page / Python) "
        "| first token ms (page / Python) | tokens/s (page / Python) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, w, p = r["sizes"], r["browser"], r["python"]
        runtime = (s["wasm"] - s["model"]) / MIB
        lines.append(
            f"| {r['model']} | {s['wasm'] / MIB:.1f} ({runtime:.1f} + {s['model'] / MIB:.1f}; "
            f"{s['wasm_gzip'] / MIB:.1f}) | {w['threads']} | {w['load_s']:.1f} / "
            f"{p['load_s']:.1f} | {w['ttft_ms']:.0f} / {p['ttft_ms']:.0f} | "
            f"{w['tok_s']:.1f} / {p['tok_s']:.1f} |"
        )
    return "\n".join(lines)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
    return "?"


if __name__ == "__main__":
    main()
