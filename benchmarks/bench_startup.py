"""Cold start of ``gpt2-generate``: process start to the first token, where the time goes, peak RSS.

Target (issue 14): with the 124M int8 bundle, at most 0.5 s to the first token (issue 5 asked
1.5 s) and under 300 MiB. The first token is the first byte the CLI writes to stdout (past the
prompt, if ``--echoes-prompt``), greedy, a handful of new tokens. Peak RSS is the child's
``ru_maxrss`` from ``os.wait4``.

Three parts, each in fresh child processes, alternating the variants round by round (medians):

- end to end: the CLI as installed, the CLI without the verified-files record (so every file is
  hashed, as on the first load after an export), and with ``--baseline REV`` the CLI of an older
  commit (its ``runtime/`` from ``git archive``; or a folder that holds ``gpt2_edge/runtime``);
- phases: interpreter start, the CLI's imports, then inside one process each step of a load
  (manifest, hashing, tokenizer, session, prefill) and ``load()`` as a whole;
- ``--session-variants``: onnxruntime session creation under other graph optimization levels,
  from an optimized-model cache (``optimized_model_filepath``, with and without the prepacked
  weights), and with prepacking off, each with its first token, decode speed and RSS.

Children run with bytecode caching on (in a temporary ``PYTHONPYCACHEPREFIX``), as an installed
package runs; the warm-up run fills it and the page cache.

    python benchmarks/bench_startup.py [--bundle benchmarks/.cache/124m/ours-int8] [--runs 5]
        [--baseline HEAD~1] [--session-variants] [--json-out startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_BUNDLE = HERE / ".cache" / "124m" / "ours-int8"
PROMPT = "The history of the lighthouse is a story of"
TARGET_FIRST_TOKEN_S = 0.5
TARGET_RSS_MIB = 300
CLI = (
    "import sys; sys.argv[0] = 'gpt2-generate'; "
    "from gpt2_edge.runtime.cli.generate import main; main()"
)

# One process: the CLI's imports, load() as the CLI calls it, then each part of a load alone.
PHASES = r"""
import json, sys, time
from pathlib import Path
now = time.perf_counter
t = now()
from gpt2_edge.runtime.cli import generate as cli
imports = now() - t
from gpt2_edge.runtime import api, bundle as B
from gpt2_edge.runtime.graph.session import Session
from gpt2_edge.runtime.contract.tokenizer import Tokenizer
path, threads, prompt, new = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
out = {"imports": imports}
t = now(); generator = api.load(path, provider="cpu", threads=threads); out["load"] = now() - t
t = now()
next(iter(generator.stream(prompt, max_new_tokens=new, temperature=0)))
out["prefill"] = now() - t
t = now(); manifest = B.read_manifest(path); B.verify_files(path, manifest, check_hashes=False)
out["manifest"] = now() - t
t = now()
for name in manifest.files:
    B.sha256_of(path / name)
out["sha256_read"] = now() - t
t = now()
if hasattr(B, "check_hashes_of"):  # with the verified-files record
    B.check_hashes_of(path, manifest)
else:
    B.verify_files(path, manifest, check_hashes=True)
out["sha256_check"] = now() - t
t = now(); tok = Tokenizer(path / "tokenizer.json"); out["tokenizer"] = now() - t
t = now()
getattr(tok, "token_count", None) or tok.backend.get_vocab_size()
out["vocab_check"] = now() - t
bundle = B.load_bundle(path, check_hashes=False)
t = now(); Session(bundle, provider="cpu", threads=threads); out["session"] = now() - t
print(json.dumps(out))
"""

# One onnxruntime session under one variant, then the runtime's generator on it.
VARIANT = r"""
import json, os, resource, sys, time
from pathlib import Path
import onnxruntime as ort
from gpt2_edge.runtime.graph import session as S
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.generation.generator import Generator
variant, path, cache, threads = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
prompt, new = sys.argv[5], int(sys.argv[6])
level = ort.GraphOptimizationLevel
opts = S.session_options(threads)
model = str(path / "model.onnx")
if variant in ("extended", "basic"):
    opts.graph_optimization_level = getattr(level, "ORT_ENABLE_" + variant.upper())
elif variant.startswith("write"):  # fill an optimized-model cache; timed as a variant too
    folder = cache / variant.removeprefix("write-")
    folder.mkdir(parents=True, exist_ok=True)
    opts.optimized_model_filepath = str(folder / "model.onnx")
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "model.onnx.data")
    opts.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    if variant.endswith("prepacked"):
        opts.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")
elif variant.startswith("cached"):
    opts.graph_optimization_level = level.ORT_DISABLE_ALL
    model = str(cache / variant.removeprefix("cached-") / "model.onnx")
elif variant == "no-prepacking":
    opts.add_session_config_entry("session.disable_prepacking", "1")
bundle = load_bundle(path, check_hashes=False)
bundle.tokenizer
t = time.perf_counter()
ort_session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
created = time.perf_counter() - t
S.create_inference_session = lambda *args: ort_session
generator = Generator(S.Session(bundle, "cpu", threads), bundle.tokenizer)
t = time.perf_counter()
pieces = generator.stream(prompt, max_new_tokens=new, temperature=0, ignore_eos=True)
next(pieces)
first = time.perf_counter() - t
t = time.perf_counter()
text = "".join(pieces)
rate = (new - 1) / (time.perf_counter() - t)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"session": created, "prefill": first, "decode_tok_s": rate, "peak_rss_mib": rss}))
"""
PHASE_LABELS = {
    "interpreter": "interpreter start (python -c pass)",
    "imports": "the CLI's imports",
    "load": "load(): checks, tokenizer, session",
    "prefill": "first token: encode, prefill, sample",
    "manifest": "  of which: manifest and file sizes",
    "sha256_read": "  SHA-256, reading every file",
    "sha256_check": "  SHA-256 as load() checks it",
    "tokenizer": "  tokenizer.json",
    "vocab_check": "  vocabulary size (and longest entry)",
    "session": "  onnxruntime session",
}
VARIANTS = ["all", "extended", "basic", "cached-plain", "cached-prepacked", "no-prepacking"]


def child_env(pycache: Path, records: str, tree: Path | None) -> dict[str, str]:
    """The environment of a child: bytecode cached, its own verified-files records, the tree."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(pycache), GPT2_EDGE_CACHE_DIR=records)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if tree is not None:  # an older runtime shadows the installed one
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    return env


def cli_command(bundle: Path, new_tokens: int, threads: int, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-c", CLI, "--model", str(bundle), "--max-new-tokens", str(new_tokens),
        "--temperature", "0", "--threads", str(threads), *extra, PROMPT,
    ]  # fmt: skip


def one_run(cmd: list[str], env: dict[str, str], echo_prefix: str) -> dict[str, float]:
    """Spawn the CLI; time to the first stdout byte past the echoed prompt; RSS via wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    first = None
    while True:
        if not sel.select(timeout=60):
            proc.kill()
            raise TimeoutError("no output from gpt2-generate within 60 s")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
        # The CLI may echo the prompt first: the first token is what comes after it.
        if first is None and len(seen.decode("utf-8", "ignore")) > len(echo_prefix):
            first = time.perf_counter() - t0
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"gpt2-generate exited {proc.returncode}: {err.strip()[-500:]}")
    return {
        "first_token_s": first if first is not None else total,
        "total_s": total,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux: KiB
    }


def json_child(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a child that prints one JSON object as its last line; return it."""
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def baseline_tree(spec: str, into: Path) -> Path:
    """A folder holding ``gpt2_edge/runtime`` of ``spec``: a folder as is, or a git revision."""
    if Path(spec).is_dir():
        return Path(spec)
    package = into / "gpt2_edge"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", spec, "runtime"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(package)], input=archive, check=True)
    return into


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def end_to_end(args: argparse.Namespace, work: Path, tree: Path | None) -> dict[str, dict]:
    """The CLI's time to the first token, per variant, alternating, after one warm-up each."""
    cmd = cli_command(args.bundle, args.new_tokens, args.threads, args.extra)
    records = str(work / "records")
    variants = {"current": child_env(work / "pyc", records, None)}
    variants["current, hashing every file"] = child_env(work / "pyc", "", None)
    if tree is not None:
        variants["baseline"] = child_env(work / "pyc-base", records, tree)
    echo = PROMPT if args.echoes_prompt else ""
    for env in variants.values():
        one_run(cmd, env, echo)  # warm-up: page cache, bytecode, the verified-files record
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, env in variants.items():
            runs[name].append(one_run(cmd, env, echo))
    return {
        name: {
            "first_token_s": round(median(rows, "first_token_s"), 3),
            "total_s": round(median(rows, "total_s"), 3),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in rows), 1),
        }
        for name, rows in runs.items()
    }


def phases(args: argparse.Namespace, work: Path, tree: Path | None) -> dict[str, dict]:
    """Interpreter start and each phase of a load, per tree, alternating."""
    trees = {"current": child_env(work / "pyc", str(work / "records"), None)}
    if tree is not None:
        trees["baseline"] = child_env(work / "pyc-base", str(work / "records"), tree)
    cmd = [sys.executable, "-c", PHASES, str(args.bundle), str(args.threads), PROMPT, "2"]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, env in trees.items():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
            row = {"interpreter": time.perf_counter() - t}
            runs[name].append({**row, **json_child(cmd, env)})
    return {
        name: {key: round(median(rows, key), 3) for key in rows[0]} for name, rows in runs.items()
    }


def session_variants(args: argparse.Namespace, work: Path) -> dict[str, dict]:
    """onnxruntime session creation under each variant, alternating, decode speed alongside."""
    env = child_env(work / "pyc", str(work / "records"), None)
    cache = work / "optimized"

    def run(variant: str) -> dict[str, float]:
        cmd = [sys.executable, "-c", VARIANT, variant, str(args.bundle), str(cache)]
        return json_child([*cmd, str(args.threads), PROMPT, "33"], env)

    for kind in ("plain", "prepacked"):  # write the optimized-model caches first
        run(f"write-{kind}")
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.runs):
        for variant in VARIANTS:
            runs[variant].append(run(variant))
    result = {}
    for variant, rows in runs.items():
        result[variant] = {key: round(median(rows, key), 3) for key in rows[0]}
        folder = cache / variant.removeprefix("cached-")
        if variant.startswith("cached"):
            size = sum(f.stat().st_size for f in folder.iterdir())
            result[variant]["cache_mib"] = round(size / 2**20, 1)
    return result


def print_tables(result: dict) -> None:
    print(
        f"\n{'gpt2-generate, end to end':<34} {'first token s':>13} {'total s':>8} {'RSS MiB':>8}"
    )
    for name, row in result["end_to_end"].items():
        print(
            f"{name:<34} {row['first_token_s']:>13.3f} {row['total_s']:>8.3f} "
            f"{row['peak_rss_mib']:>8.1f}"
        )
    trees = list(result["phases"])
    print(f"\n{'phase (s)':<44}" + "".join(f"{name:>10}" for name in trees))
    for key in result["phases"]["current"]:
        label = PHASE_LABELS.get(key, key)
        print(f"{label:<44}" + "".join(f"{result['phases'][t][key]:>10.3f}" for t in trees))
    if "session_variants" in result:
        cols = ["session", "prefill", "decode_tok_s", "peak_rss_mib", "cache_mib"]
        print(f"\n{'session variant':<18}" + "".join(f"{c:>14}" for c in cols))
        for name, row in result["session_variants"].items():
            cells = "".join(f"{row[c]:>14}" if c in row else f"{'':>14}" for c in cols)
            print(f"{name:<18}{cells}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--runs", type=int, default=5, help="measured rounds after one warm-up")
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--baseline", help="a git revision (or a folder with gpt2_edge/runtime)")
    p.add_argument("--session-variants", action="store_true", help="compare session options")
    p.add_argument(
        "--echoes-prompt",
        action="store_true",
        help="the CLI prints the prompt before the generated text",
    )
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("extra", nargs="*", help="extra CLI flags, after --")
    args = p.parse_args()
    args.bundle = args.bundle.resolve()
    if not (args.bundle / "model.onnx").is_file():
        sys.exit(
            f"{args.bundle} has no model.onnx; build it: python benchmarks/models.py "
            "--variants ours-int8"
        )
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        tree = baseline_tree(args.baseline, work / "baseline") if args.baseline else None
        result: dict = {
            "command": " ".join(["gpt2-generate", *cli_command(args.bundle, args.new_tokens,
                                                               args.threads, args.extra)[3:]]),
            "runs": args.runs,
            "baseline": args.baseline,
            "end_to_end": end_to_end(args, work, tree),
            "phases": phases(args, work, tree),
        }  # fmt: skip
        if args.session_variants:
            result["session_variants"] = session_variants(args, work)
    current = result["end_to_end"]["current"]
    result["target_first_token_s"] = TARGET_FIRST_TOKEN_S
    result["meets_first_token"] = current["first_token_s"] <= TARGET_FIRST_TOKEN_S
    result["meets_rss"] = current["peak_rss_mib"] < TARGET_RSS_MIB
    print_tables(result)
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
