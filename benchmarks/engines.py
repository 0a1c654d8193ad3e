"""One engine, one model, one scenario, in this process: the child that ``bench_peers.py`` starts.

Runs under the main venv (gpt2-edge) or the peers venv (llama.cpp, CTranslate2), so it imports
each engine only when asked. Prints one JSON line: load s, prefill ms and decode tok/s (median of
``--repeats`` runs after one warm-up), every run's figures, this process's peak RSS, the first
greedy tokens (a check that each engine really decoded ``--new`` tokens).

Timing is the same for every engine: prefill is the prompt's forward up to the first new token;
decode is the ``new - 1`` later tokens over the time from the first new token to the last.
Greedy, EOS ignored, batch 1, ``--threads`` threads.

    python benchmarks/engines.py --engine llama-q8_0 --path X.gguf --prompt 128 --new 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOKENIZER = HERE.parent.parent / "shared" / "gpt2-tokenizer" / "tokenizer.json"

# (ids, new) -> (prefill s, decode tok/s, tokens)
Run = Callable[[list[int], int], tuple[float, float, list[int]]]


def prompt_ids(n: int) -> list[int]:
    """Exactly ``n`` ids of bench_generate's fixed English text (the prompt of every table)."""
    from bench_generate import prompt_ids as ids

    return ids(TOKENIZER, n)


def prompt_text(n: int) -> str:
    from bench_generate import prompt_text as text

    return text(TOKENIZER, n)


def peak_rss_mib() -> float:
    """VmHWM: Linux carries ru_maxrss across fork+exec, VmHWM is this process's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def patch_session_options(settings: list[str]) -> None:
    """Make every ``onnxruntime.InferenceSession`` this process opens take ``settings``:
    ``level=basic|extended|all``, ``disable=Name,Name`` (optimizers to disable), ``mode=parallel``,
    or any ``session.*`` config entry as ``key=value``. Done at onnxruntime's door, so it holds
    whatever the runtime's modules are called (experiments only; the runtime offers no such
    option)."""
    import onnxruntime as ort

    plain = ort.InferenceSession
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }

    def session(path_or_bytes: Any, sess_options: Any = None, *a: Any, **kw: Any) -> Any:
        opts = sess_options or ort.SessionOptions()
        for item in settings:
            key, _, value = item.partition("=")
            if key == "level":
                opts.graph_optimization_level = levels[value]
            elif key == "disable":
                kw["disabled_optimizers"] = value.split(",")
            elif key == "mode" and value == "parallel":
                opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL
            else:
                opts.add_session_config_entry(key, value)
        return plain(path_or_bytes, opts, *a, **kw)

    ort.InferenceSession = session  # type: ignore[misc]


def ours(path: Path, threads: int, opts: dict[str, Any]) -> tuple[Run, str]:
    """gpt2-edge's runtime, as a user calls it (``load(...).generate``)."""
    if opts.get("ort"):
        patch_session_options(opts["ort"])
    from gpt2_edge.runtime import load

    gen = load(str(path), provider="cpu", threads=threads)

    def run(ids: list[int], new: int) -> tuple[float, float, list[int]]:
        res = gen.generate(opts["text"], max_new_tokens=new, temperature=0, ignore_eos=True)
        t = res.timings
        return t.prefill_ms / 1000, t.decode_tokens_per_s, list(res.tokens)

    return run, "gpt2_edge.runtime"


def llama(path: Path, threads: int, opts: dict[str, Any]) -> tuple[Run, str]:
    """llama.cpp through llama-cpp-python's C API (no Python sampler in the loop): one
    ``llama_decode`` of the prompt, then one per token, argmax of the last logits in numpy."""
    import ctypes

    import llama_cpp as L
    import numpy as np

    L.llama_backend_init()
    quiet = L.llama_log_callback(lambda level, text, data: None)
    L.llama_log_set(quiet, ctypes.c_void_p())
    opts["_keep"] = quiet  # the callback must outlive the library's use of it
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(str(path).encode(), mp)
    if not model:
        raise RuntimeError(f"llama.cpp cannot load {path}")
    cp = L.llama_context_default_params()
    cp.n_ctx = opts["n_ctx"]
    cp.n_batch = opts["n_ctx"]  # the whole prompt in one llama_decode (ubatches of 512 inside)
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[opts["flash_attn"]]
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise RuntimeError("llama.cpp cannot make a context")
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    memory = L.llama_get_memory(ctx)
    one = (L.llama_token * 1)()

    def decode(tokens: ctypes.Array, n: int) -> int:
        if L.llama_decode(ctx, L.llama_batch_get_one(tokens, n)) != 0:
            raise RuntimeError("llama_decode failed")
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(vocab,))
        return int(logits.argmax())

    def run(ids: list[int], new: int) -> tuple[float, float, list[int]]:
        L.llama_memory_clear(memory, True)
        prompt = (L.llama_token * len(ids))(*ids)
        t0 = time.perf_counter()
        tokens = [decode(prompt, len(ids))]
        t1 = time.perf_counter()
        for _ in range(new - 1):
            one[0] = tokens[-1]
            tokens.append(decode(one, 1))
        t2 = time.perf_counter()
        return t1 - t0, (new - 1) / (t2 - t1), tokens

    fa = L.llama_flash_attn_type_name(cp.flash_attn_type).decode()
    return run, f"llama-cpp-python {L.__version__}, flash attention {fa}"


def ct2(path: Path, threads: int, opts: dict[str, Any]) -> tuple[Run, str]:
    """CTranslate2 int8 ``generate_tokens`` (the prompt forwarded at once, then token by token)."""
    import ctranslate2
    from tokenizers import Tokenizer

    gen = ctranslate2.Generator(str(path), device="cpu", compute_type="int8", intra_threads=threads)
    tok = Tokenizer.from_file(str(TOKENIZER))

    def run(ids: list[int], new: int) -> tuple[float, float, list[int]]:
        prompt = [tok.id_to_token(i) for i in ids]  # it takes token strings
        times: list[float] = []
        tokens: list[int] = []
        t0 = time.perf_counter()
        # min_length = max_length = new masks EOS until exactly ``new`` tokens are made
        for step in gen.generate_tokens(prompt, max_length=new, min_length=new, sampling_topk=1):
            times.append(time.perf_counter())
            tokens.append(step.token_id)
        if len(tokens) != new:
            raise RuntimeError(f"ctranslate2 made {len(tokens)} tokens, not {new}")
        return times[0] - t0, (new - 1) / (times[-1] - times[0]), tokens

    return run, f"ctranslate2 {ctranslate2.__version__}"


ENGINES = {"ours": ours, "llama": llama, "ct2": ct2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", required=True, help="ours-*, llama-*, ct2-*")
    p.add_argument("--path", type=Path, required=True)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--flash-attn", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--ort", action="append", default=[], help="ours: onnxruntime setting k=v")
    args = p.parse_args()
    ids = prompt_ids(args.prompt)
    opts: dict[str, Any] = {"flash_attn": args.flash_attn, "n_ctx": args.prompt + args.new}
    opts["ort"] = args.ort
    kind = args.engine.split("-")[0]
    if kind == "ours":
        opts["text"] = prompt_text(args.prompt)
    t0 = time.perf_counter()
    run, label = ENGINES[kind](args.path, args.threads, opts)
    load_s = time.perf_counter() - t0
    run(ids, args.new)  # warm-up
    runs = [run(ids, args.new) for _ in range(args.repeats)]
    print(
        json.dumps(
            {
                "label": label,
                "load_s": round(load_s, 3),
                "prefill_ms": round(statistics.median(r[0] for r in runs) * 1000, 2),
                "decode_tok_s": round(statistics.median(r[1] for r in runs), 2),
                "runs": [[round(r[0] * 1000, 2), round(r[1], 2)] for r in runs],
                "peak_rss_mib": peak_rss_mib(),
                "tokens_head": runs[0][2][:8],
                "tokens": len(runs[0][2]),
            }
        )
    )


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
