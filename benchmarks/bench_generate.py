"""Generation speed and memory of gpt2-edge against its peers, each engine in its own process.

Engines: transformers+torch fp32; Optimum ``ORTModelForCausalLM`` fp32 and int8 (its own
``ORTQuantizer`` avx2 dynamic per-channel); CTranslate2 int8 (its own converter, run with
``compute_type="int8"``); ours fp32, int8, int4 (bundles from our exporter; while it cannot make
one, the Optimum files driven by our runtime stand in, labelled as such).
Models: random-weight GPT-2 124M and 355M with the real configs, built once under ``--workdir``.

CTranslate2 is a benchmark-only dependency, not in pyproject.toml; install it into the venv with
``pip install ctranslate2`` (without it the ``ct2-int8`` rows carry the import error).

Default scenario: a fixed 128-token English prompt, 128 greedy new tokens with EOS ignored,
batch 1, 2 threads, one warm-up then the median of 3. Extra rows: ``long`` (896-token prompt) and
``batch8`` (8 copies of the prompt; decode tok/s is the aggregate over the 8 rows). Reported: load
time, prefill ms, decode tokens/s, the child's peak RSS and the model's file size, as a table and
as JSON (``--json-out``), with ours-int8 / peer.

    python benchmarks/bench_generate.py                         # 124m, all engines, all scenarios
    python benchmarks/bench_generate.py --models 124m,355m --json-out results.json
    python benchmarks/bench_generate.py --quick                 # tiny model, seconds: a dev check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

ENGINES = (
    "transformers-fp32",
    "optimum-fp32",
    "optimum-int8",
    "ct2-int8",
    "ours-fp32",
    "ours-int8",
    "ours-int4",
)
PEERS = ("transformers-fp32", "optimum-fp32", "optimum-int8", "ct2-int8")
SCENARIOS = {  # name -> (prompt tokens, new tokens, batch)
    "base": (128, 128, 1),
    "long": (896, 128, 1),
    "batch8": (128, 128, 8),
}
THREADS = 2

# Plain English, long enough to cut 896 tokens from; fixed so every run sees the same prompt.
PROMPT_TEXT = (
    "The history of the lighthouse is a story of fire, glass and patience. Long before electric "
    "lamps, the keepers of the coast burned wood and coal on high towers so that sailors could "
    "find the harbour at night. In the seventeenth century, candles and oil lamps replaced the "
    "open fires, and mirrors were placed behind the flames to throw the light further out to sea. "
    "The great change came in 1822, when the French engineer Augustin Fresnel designed a lens made "
    "of rings of glass prisms. His lens bent the light into a narrow beam that could be seen more "
    "than twenty miles away, and it used far less oil than the old reflectors. Within a few "
    "decades, lighthouses from Scotland to Japan had been fitted with Fresnel lenses, and the "
    "number of ships lost on rocky shores fell sharply. The life of a keeper was lonely and "
    "demanding. Every evening he climbed the spiral stairs, trimmed the wick, cleaned the soot "
    "from the glass and wound the clockwork that turned the lens. Storms could cut a station off "
    "from the mainland for weeks, and families learned to keep gardens, goats and a good store of "
    "books. Some keepers wrote diaries that are now read by historians, who find in them careful "
    "notes on the weather, the passing ships and the birds that struck the lantern during their "
    "autumn migration. "
)


@dataclass
class Row:
    model: str
    engine: str
    scenario: str
    label: str = ""
    load_s: float | None = None
    prefill_ms: float | None = None
    decode_tok_s: float | None = None
    peak_rss_mib: float | None = None
    file_mib: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def prompt_ids(tokenizer_json: Path, n: int) -> list[int]:
    """Exactly ``n`` token ids of the fixed English text (repeated as needed)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    text = PROMPT_TEXT
    while len(tok.encode(text).ids) < n:
        text += PROMPT_TEXT
    return tok.encode(text).ids[:n]


def prompt_text(tokenizer_json: Path, n: int) -> str:
    """Text whose encoding is exactly the first ``n`` ids (checked: it must round-trip)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    ids = prompt_ids(tokenizer_json, n)
    text = tok.decode(ids)
    if tok.encode(text).ids != ids:  # cutting mid-word can re-merge; trim to a clean boundary
        raise RuntimeError(f"the {n}-token prompt does not round-trip through the tokenizer")
    return text


def folder_size_mib(path: Path) -> float:
    exts = (".onnx", ".onnx_data", ".data", ".safetensors", ".bin")
    files = [p for p in path.iterdir() if p.is_file() and p.name.endswith(exts)]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec,
    so a child of a parent that once held torch would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


# ----------------------------------------------------------------------------- child: one engine
class _Clock:
    """A transformers streamer that timestamps each ``put``: the prompt, then each new token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _hf_engine(engine: str, path: Path):
    """Load transformers or Optimum; returns a callable (ids, new) -> (prefill s, decode tok/s)."""
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    if engine == "transformers-fp32":
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel.from_pretrained(str(path)).eval()
    else:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.inter_op_num_threads = 1
        model = ORTModelForCausalLM.from_pretrained(
            str(path), use_cache=True, provider="CPUExecutionProvider", session_options=opts
        )

    def run(ids: list[list[int]], new: int) -> tuple[float, float, list[int]]:
        input_ids = torch.tensor(np.array(ids), dtype=torch.long)
        clock = _Clock()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=new,
                min_new_tokens=new,  # EOS ignored: always exactly ``new`` tokens
                do_sample=False,
                pad_token_id=50256,
                streamer=clock,
            )
        # put #0 is the prompt (before any forward), #1 the first new token (after prefill).
        prefill = clock.times[1] - t0
        decode = (new - 1) * len(ids) / (clock.times[-1] - clock.times[1])
        return prefill, decode, out[0, -new:].tolist()

    return run


def _ct2_engine(path: Path):
    """CTranslate2 int8; returns a callable (ids, new) -> (prefill s, decode tok/s, tokens).

    EOS is ignored as transformers' ``min_new_tokens`` does: ``min_length = max_length = new``
    masks the end token until exactly ``new`` tokens are made. The prompt is forwarded at once
    (``include_prompt_in_result=False``, as ``generate_tokens`` always does). Batch 1 streams with
    ``generate_tokens``: prefill is the time to the first token, decode the remaining ``new - 1``
    over the time from the first to the last. Batch > 1 runs ``generate_batch`` with a per-token
    callback and times it the same way: prefill to the first step's tokens, decode the remaining
    ``(new - 1) * batch`` tokens (aggregate) from the first step's last callback to the last one.
    """
    import ctranslate2
    from tokenizers import Tokenizer

    gen = ctranslate2.Generator(str(path), device="cpu", compute_type="int8", intra_threads=THREADS)
    tok = Tokenizer.from_file(str(bench_models.TOKENIZER_DIR / "tokenizer.json"))

    def run(ids: list[list[int]], new: int) -> tuple[float, float, list[int]]:
        prompts = [[tok.id_to_token(i) for i in row] for row in ids]  # it takes token strings
        opts: dict[str, Any] = dict(max_length=new, min_length=new, sampling_topk=1)
        if len(prompts) == 1:
            times: list[float] = []
            tokens: list[int] = []
            t0 = time.perf_counter()
            for step in gen.generate_tokens(prompts[0], **opts):
                times.append(time.perf_counter())
                tokens.append(step.token_id)
            first, last = times[0], times[-1]
        else:
            stamps: list[tuple[int, float]] = []  # (step, time) of every row's token

            def on_token(step: Any) -> bool:
                stamps.append((step.step, time.perf_counter()))
                return False  # never stop early

            t0 = time.perf_counter()
            res = gen.generate_batch(
                prompts, include_prompt_in_result=False, callback=on_token, **opts
            )
            tokens = list(res[0].sequences_ids[0])
            first = max(t for step, t in stamps if step == 0)
            last = max(t for _, t in stamps)
        if len(tokens) != new:  # a benchmark of the wrong length would compare nothing
            raise RuntimeError(f"ctranslate2 made {len(tokens)} tokens, not {new}")
        return first - t0, (new - 1) * len(ids) / (last - first), tokens

    return run, f"ctranslate2 {ctranslate2.__version__}"


def _ours_engine(path: Path):
    """Our runtime; returns a callable (ids, new, text) -> (prefill s, decode tok/s, tokens)."""
    from gpt2_edge.runtime import load

    gen = load(str(path), provider="cpu", threads=THREADS)

    def run(ids: list[list[int]], new: int, text: list[str]) -> tuple[float, float, list[int]]:
        res = gen.generate_batch(text, max_new_tokens=new, temperature=0, ignore_eos=True)
        res0 = res[0]
        prefill, decode = res0.timings.prefill_ms / 1000, res0.timings.decode_tokens_per_s
        return prefill, decode * len(ids), list(res0.tokens)

    return run, "gpt2_edge.runtime"


def child(args: argparse.Namespace) -> None:
    """Measure one engine on one model and scenario; print one JSON line."""
    path = Path(args.path)
    prompt_len, new, batch = SCENARIOS[args.scenario] if not args.quick else (32, 16, 1)
    if args.quick and args.scenario == "batch8":
        batch = 8
    tok_json = bench_models.TOKENIZER_DIR / "tokenizer.json"
    ids = [prompt_ids(tok_json, prompt_len)] * batch
    text = [prompt_text(tok_json, prompt_len)] * batch
    label = ""
    t0 = time.perf_counter()
    if args.engine.startswith("ours"):
        run, label = _ours_engine(path)

        def call() -> tuple[float, float, list[int]]:
            return run(ids, new, text)
    elif args.engine == "ct2-int8":
        ct2_run, label = _ct2_engine(path)

        def call() -> tuple[float, float, list[int]]:
            return ct2_run(ids, new)
    else:
        hf_run = _hf_engine(args.engine, path)

        def call() -> tuple[float, float, list[int]]:
            return hf_run(ids, new)

    load_s = time.perf_counter() - t0
    call()  # warm-up
    results = [call() for _ in range(args.repeats)]
    print(
        json.dumps(
            {
                "label": label,
                "load_s": round(load_s, 3),
                "prefill_ms": round(statistics.median(r[0] for r in results) * 1000, 1),
                "decode_tok_s": round(statistics.median(r[1] for r in results), 1),
                "peak_rss_mib": peak_rss_mib(),
                "tokens_head": results[0][2][:8],
            }
        )
    )


# ----------------------------------------------------------------------------- parent
def engine_path(engine: str, model: str, workdir: Path) -> tuple[Path, str]:
    if engine == "transformers-fp32":
        return bench_models.checkpoint(model, workdir), ""
    if engine == "optimum-fp32":
        return bench_models.optimum_fp32(model, workdir), ""
    if engine == "optimum-int8":
        return bench_models.optimum_int8(model, workdir), ""
    if engine == "ct2-int8":
        return bench_models.ct2_int8(model, workdir), ""
    return bench_models.ours(model, engine.split("-")[1], workdir)


def measure(engine: str, model: str, scenario: str, args: argparse.Namespace) -> Row:
    row = Row(model, engine, scenario)
    try:
        path, label = engine_path(engine, model, args.workdir)
    except Exception as exc:  # a missing variant (int4 before the exporter has it) is a row note
        row.error = f"{type(exc).__name__}: {exc}"
        return row
    row.label, row.file_mib = label, folder_size_mib(path)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--engine",
        engine,
        "--path",
        str(path),
        "--scenario",
        scenario,
        "--repeats",
        str(args.repeats),
    ]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        row.error = f"exit {proc.returncode}: {tail}"
        return row
    data = json.loads(lines[-1])
    row.label = " ".join(x for x in (row.label, data.pop("label", "")) if x)
    for key in ("load_s", "prefill_ms", "decode_tok_s", "peak_rss_mib"):
        setattr(row, key, data.pop(key))
    row.extra = data
    return row


def ratios(rows: list[Row]) -> list[dict[str, Any]]:
    """ours-int8 over each peer, per model and scenario: decode ×, prefill ×, RSS ×."""
    out = []
    index = {(r.model, r.engine, r.scenario): r for r in rows}
    for (model, engine, scenario), ours in index.items():
        if engine != "ours-int8" or ours.decode_tok_s is None:
            continue
        for peer in PEERS:
            p = index.get((model, peer, scenario))
            if p is None or p.decode_tok_s is None:
                continue
            out.append(
                {
                    "model": model,
                    "scenario": scenario,
                    "peer": peer,
                    "decode_x": round(ours.decode_tok_s / p.decode_tok_s, 2),
                    # > 1 means our prefill is faster
                    "prefill_speedup_x": round(p.prefill_ms / ours.prefill_ms, 2),
                    "rss_x": round(ours.peak_rss_mib / p.peak_rss_mib, 2),
                }
            )
    return out


def render(rows: list[Row], ratio_rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)  # wide even when piped, so cells do not wrap
    table = Table(title=f"GPT-2 generation, {THREADS} threads, greedy, EOS ignored (median)")
    for col in (
        "model",
        "scenario",
        "engine",
        "load s",
        "prefill ms",
        "decode tok/s",
        "peak RSS MiB",
        "file MiB",
        "note",
    ):
        table.add_column(col, justify="right" if col[0].islower() and " " in col else "left")

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:g}"

    for r in rows:
        note = r.error or r.label
        table.add_row(
            r.model,
            r.scenario,
            r.engine,
            fmt(r.load_s),
            fmt(r.prefill_ms),
            fmt(r.decode_tok_s),
            fmt(r.peak_rss_mib),
            fmt(r.file_mib),
            note,
        )
    console.print(table)
    if ratio_rows:
        rt = Table(title="ours-int8 / peer (decode ×, prefill speed-up ×, RSS ×)")
        for col in ("model", "scenario", "peer", "decode ×", "prefill ×", "RSS ×"):
            rt.add_column(col)
        for r in ratio_rows:
            rt.add_row(
                r["model"],
                r["scenario"],
                r["peer"],
                f"{r['decode_x']:g}",
                f"{r['prefill_speedup_x']:g}",
                f"{r['rss_x']:g}",
            )
        console.print(rt)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="124m", help="comma list of: tiny, 124m, 355m")
    p.add_argument(
        "--engines", default=",".join(ENGINES), help="comma list of: " + ", ".join(ENGINES)
    )
    p.add_argument(
        "--scenarios", default="base,long,batch8", help="comma list of: base, long, batch8"
    )
    p.add_argument("--repeats", type=int, default=3, help="measured runs after one warm-up")
    p.add_argument("--workdir", type=Path, default=bench_models.DEFAULT_WORKDIR)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per engine process")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, 32-token prompt, 16 new tokens, 1 repeat, base scenario",
    )
    # internal: the child process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--scenario", default="base", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        if args.models == "124m":
            args.models = "tiny"
        if args.scenarios == "base,long,batch8":
            args.scenarios = "base"
        args.repeats = 1
    rows: list[Row] = []
    for model in args.models.split(","):
        for scenario in args.scenarios.split(","):
            for engine in args.engines.split(","):
                t0 = time.perf_counter()
                row = measure(engine, model, scenario, args)
                print(
                    f"[bench] {model} {scenario} {engine}: {row.decode_tok_s} tok/s "
                    f"({time.perf_counter() - t0:.0f} s){' ' + row.error if row.error else ''}",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append(row)
    ratio_rows = ratios(rows)
    render(rows, ratio_rows)
    if args.json_out:
        payload = {
            "command": " ".join(sys.argv),
            "threads": THREADS,
            "scenarios": {k: dict(prompt=v[0], new=v[1], batch=v[2]) for k, v in SCENARIOS.items()},
            "rows": [asdict(r) for r in rows],
            "ratios": ratio_rows,
            "versions": _versions(),
        }
        args.json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    pkgs = ("onnxruntime", "torch", "transformers", "optimum", "optimum-onnx", "numpy")
    for pkg in (*pkgs, "ctranslate2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    main()
