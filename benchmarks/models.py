"""Build (and cache) the benchmark models: random-weight GPT-2 checkpoints and their ONNX exports.

Everything lands under a work folder (default ``benchmarks/.cache``) so a rerun only measures.
Random weights with the real configs are enough for speed: the work per token depends on the
shapes, not the values. The real GPT-2 tokenizer comes from ``../shared/gpt2-tokenizer``
(no download).

Run directly to build ahead of time::

    python benchmarks/models.py --models 124m,355m --variants optimum-fp32,optimum-int8,ours-int8

Our bundles are exported by the ``gpt2-export`` command in a child process
(``export_stats.py``): its wall time and peak RSS, in all and per step, land in
``<bundle>.export.json`` beside the bundle (the export's cost is one of the figures of the large
models); ``EXPORT_LIMIT_MIB`` caps the export in a memory cgroup.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
TOKENIZER_DIR = SHARED / "gpt2-tokenizer"
DEFAULT_WORKDIR = HERE / ".cache"
# Trained weights (4 layers, 128 wide, the real vocabulary): where fidelity means something.
FIXTURE_DIR = SHARED / "fixtures" / "gpt2-wikitext-tiny"

# name -> GPT2Config overrides. "tiny" is for dev runs that must take seconds.
MODEL_CONFIGS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_embd=128, n_head=4),
    "124m": {},  # GPT2Config() defaults: 12 layers, 768 wide, 12 heads
    "355m": dict(n_layer=24, n_embd=1024, n_head=16),
    "774m": dict(n_layer=36, n_embd=1280, n_head=20),  # gpt2-large
    "1.5b": dict(n_layer=48, n_embd=1600, n_head=25),  # gpt2-xl
}


def log(msg: str) -> None:
    print(f"[models] {msg}", file=sys.stderr, flush=True)


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A fresh ``<folder>.tmp`` to build in; it becomes ``folder`` only when the block ends
    without an error, so a failed build never leaves a folder that looks cached."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def checkpoint(model: str, workdir: Path = DEFAULT_WORKDIR, seed: int = 0) -> Path:
    """A transformers checkpoint folder with random weights and the real GPT-2 tokenizer
    (``fixture``: the small GPT-2 trained on WikiText-2 in ``../shared``, as it is)."""
    if model == "fixture":
        return FIXTURE_DIR
    folder = workdir / model / "checkpoint"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return _with_n_ctx(folder)
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    log(f"building random {model} checkpoint")
    with staged(folder) as tmp:
        tmp.mkdir(parents=True)
        for name in ("vocab.json", "merges.txt", "tokenizer.json"):
            shutil.copy(TOKENIZER_DIR / name, tmp / name)
        tokenizer = GPT2TokenizerFast.from_pretrained(str(tmp))
        eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        config = GPT2Config(bos_token_id=eos, eos_token_id=eos, **MODEL_CONFIGS[model])
        torch.manual_seed(seed)
        # One file whatever the size (1.5B is 6.2 GB): every converter reads it the same way.
        GPT2LMHeadModel(config).eval().save_pretrained(tmp, max_shard_size="100GB")
        tokenizer.save_pretrained(tmp)
        (tmp / "generation_config.json").write_text(
            json.dumps({"bos_token_id": eos, "eos_token_id": eos}), encoding="utf-8"
        )
    return _with_n_ctx(folder)


def _with_n_ctx(folder: Path) -> Path:
    """The real GPT-2 configs carry ``n_ctx`` beside ``n_positions``; transformers no longer
    writes it, and llama.cpp's GGUF converter reads it (KeyError 'n_ctx' without it)."""
    path = folder / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if "n_ctx" not in config:
        config["n_ctx"] = config.get("n_positions", 1024)
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def optimum_fp32(model: str, workdir: Path = DEFAULT_WORKDIR) -> Path:
    """Optimum ``text-generation-with-past`` export of the checkpoint (one decoder graph)."""
    folder = workdir / model / "optimum-fp32"
    if (folder / "model.onnx").is_file():
        return folder
    from optimum.exporters.onnx import main_export

    ckpt = checkpoint(model, workdir)
    log(f"exporting {model} with optimum")
    with staged(folder) as tmp:
        main_export(str(ckpt), output=tmp, task="text-generation-with-past", no_post_process=False)
    return folder


def optimum_int8(model: str, workdir: Path = DEFAULT_WORKDIR) -> Path:
    """Optimum's own dynamic int8 (``ORTQuantizer``, avx2, per-channel): the peer's int8."""
    folder = workdir / model / "optimum-int8"
    if (folder / "model.onnx").is_file():
        return folder
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    src = optimum_fp32(model, workdir)
    log(f"quantizing {model} with ORTQuantizer avx2 dynamic per-channel")
    with staged(folder) as tmp:
        quantizer = ORTQuantizer.from_pretrained(src, file_name="model.onnx")
        qconfig = AutoQuantizationConfig.avx2(is_static=False, per_channel=True)
        quantizer.quantize(save_dir=tmp, quantization_config=qconfig)
        # ORTQuantizer writes model_quantized.onnx; ORTModelForCausalLM and our runtime read
        # model.onnx.
        (tmp / "model_quantized.onnx").rename(tmp / "model.onnx")
        for name in src.iterdir():
            if name.suffix != ".onnx" and not name.name.endswith(".onnx_data") and name.is_file():
                shutil.copy(name, tmp / name.name)
    return folder


def ours(
    model: str, precision: str, workdir: Path = DEFAULT_WORKDIR, kv_cache: str = "auto"
) -> tuple[Path, str]:
    """Our bundle for ``precision`` (fp32|int8|int4), exported once by ``gpt2-export`` in a child
    process; ``kv_cache`` as ``gpt2-export --kv-cache`` (a non-default one gets its own folder).
    The export's wall time and peak RSS are written to ``<bundle>.export.json``."""
    tail = "" if kv_cache == "auto" else f"-kv-{kv_cache}"
    folder = workdir / model / f"ours-{precision}{tail}"
    if (folder / "bundle.json").is_file():
        return folder, "gpt2-export"
    ckpt = checkpoint(model, workdir)
    log(f"exporting {model} {precision} with gpt2-export")
    args = [str(ckpt), "--output", str(folder), "--kv-cache", kv_cache]
    if precision != "fp32":
        # Random weights give near-flat logits, so greedy agreement with fp32 is chance (int4
        # got 15%); the perplexity gate and the parity checks still run.
        args += ["--quantize", "--bits", "8" if precision == "int8" else "4"]
        args += ["--min-greedy-agreement", "0"]
    from export_stats import timed_export

    # EXPORT_LIMIT_MIB: run the export in a memory cgroup capped there (the large models);
    # EXPORT_OVER_2GB=1: through export_over_2gb.py, which 774M and 1.5B need (see there).
    limit = int(os.environ.get("EXPORT_LIMIT_MIB", "0")) or None
    record = folder.with_name(folder.name + ".export.json")
    if record.is_file():  # an earlier attempt that failed: keep its record beside the new one
        record.rename(record.with_name(f"{folder.name}.export-failed-{int(time.time())}.json"))
    stats = timed_export(args, limit, os.environ.get("EXPORT_OVER_2GB") == "1")
    record.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    if stats["returncode"] != 0:  # a failure must stop the benchmark, not hide
        raise RuntimeError(
            f"gpt2-export {model} {precision} failed: {stats['output_tail'][-1500:]}"
        )
    return folder, "gpt2-export"


def ct2_int8(model: str, workdir: Path = DEFAULT_WORKDIR) -> Path:
    """CTranslate2's own int8 conversion of the checkpoint: a peer engine, benchmark-only
    (``pip install ctranslate2``, not a project dependency)."""
    folder = workdir / model / "ct2-int8"
    if (folder / "model.bin").is_file():
        return folder
    from ctranslate2.converters import TransformersConverter

    ckpt = checkpoint(model, workdir)
    log(f"converting {model} with ctranslate2 (int8)")
    with staged(folder) as tmp:  # a fresh folder: the converter refuses an existing one
        TransformersConverter(str(ckpt)).convert(str(tmp), quantization="int8")
    return folder


VARIANTS = {
    "checkpoint": lambda m, w: checkpoint(m, w),
    "optimum-fp32": optimum_fp32,
    "optimum-int8": optimum_int8,
    "ours-fp32": lambda m, w: ours(m, "fp32", w)[0],
    "ours-int8": lambda m, w: ours(m, "int8", w)[0],
    "ours-int4": lambda m, w: ours(m, "int4", w)[0],
    "ours-int8-kv32": lambda m, w: ours(m, "int8", w, "float32")[0],
    "ct2-int8": ct2_int8,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="124m")
    parser.add_argument("--variants", default="optimum-fp32,optimum-int8")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args()
    for model in args.models.split(","):
        for variant in args.variants.split(","):
            t0 = time.perf_counter()
            path = VARIANTS[variant](model, args.workdir)
            log(f"{model} {variant}: {path} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
