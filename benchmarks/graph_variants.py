"""Variants of the exported graph, as bundles the runtime opens, for ``bench_variants.py``.

Nothing here changes the exporter: each variant starts from a bundle ``gpt2-export`` made (the fp32
one, or the int8 one) and applies the exporter's own recipe functions with other settings, plus the
edits below, then writes a bundle whose manifest is copied from a *donor* bundle with the same KV
cache type (the file list re-hashed), so the runtime's checks pass and it runs the variant as it
runs a shipped bundle.

Variants (``VARIANTS``):

- ``int8``, ``int4``, ``int8-kv32``: the bundles ``gpt2-export --quantize`` makes (defaults;
  ``--bits 4``; ``--kv-cache float32``), as they are.
- ``nbits8-b{32,64,128}``: every projection as ``MatMulNBits`` 8-bit, symmetric, blocks of 32 / 64 /
  128 along the input, accuracy level 4 (int8 compute: the kernel quantizes each row's activations
  per block itself), the c_attn bias folded into the node (``fold_bias``); the LM head 8-bit as
  shipped (block 64) and the embedding sharing it; float16 KV cache. One kernel a projection
  instead of seven (Abs, ReduceMax, Mul, Max, Div, QuantizeLinear, MatMulIntegerToFloat) plus the
  bias Add.
- ``nbits8-b32-head4``: the same with a 4-bit LM head (block 32): 20 instead of 39 MiB a token at
  124M.
- ``int8-head4``: the shipped int8 recipe with a 4-bit LM head.
- ``nbits8-b32-kv32``: ``nbits8-b32`` with the float32 KV cache (no Casts around attention).

Built under ``<workdir>/<model>/variants/<name>``; needs the export extra (onnx, onnxruntime's
quantizer) and the exporter (this checkout, or a snapshot on ``PYTHONPATH``).

    python benchmarks/graph_variants.py --models 124m --variants nbits8-b32,int8-head4
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models as bench_models  # noqa: E402

MODEL_FILES = ("model.onnx", "model.onnx.data")


def fold_bias(model: onnx.ModelProto) -> int:
    """``Add(MatMulNBits(x), bias)`` -> ``MatMulNBits(x, ..., bias)`` (its 6th input, onnxruntime
    >= 1.20) where the product has no other reader; returns how many were folded."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    dropped, folded = set(), 0
    for mnb in graph.node:
        if mnb.op_type != "MatMulNBits" or len(mnb.input) > 5 and mnb.input[5]:
            continue
        users = readers.get(mnb.output[0], [])
        if (
            len(users) != 1
            or users[0].op_type != "Add"
            or mnb.output[0] in [o.name for o in graph.output]
        ):
            continue
        add = users[0]
        bias = add.input[1] if add.input[0] == mnb.output[0] else add.input[0]
        n_out = next(a.i for a in mnb.attribute if a.name == "N")
        if bias not in inits or list(inits[bias].dims) != [n_out]:
            continue
        inputs = list(mnb.input) + [""] * (5 - len(mnb.input))
        del mnb.input[:]
        mnb.input.extend([*inputs[:5], bias])
        mnb.output[0] = add.output[0]
        dropped.add(add.name or id(add))
        folded += 1
    keep = [n for n in graph.node if (n.name or id(n)) not in dropped]
    del graph.node[:]
    graph.node.extend(keep)
    return folded


def nbits_from_fp32(fp32_model: Path, block: int, head_bits: int, head_block: int,
                    half_kv: bool) -> onnx.ModelProto:  # fmt: skip
    """Projections 8-bit MatMulNBits (block ``block``), the head ``head_bits`` (block
    ``head_block``), both symmetric, int8 compute; with the exporter's own functions."""
    from gpt2_edge.exporter.edits.kv_cache import half_kv_cache
    from gpt2_edge.exporter.edits.rewrites import gemm_to_matmul, materialize_lm_head
    from gpt2_edge.exporter.recipes.nbits import NBitsSettings, nbits_quantize, quantize_lm_head

    model = onnx.load(str(fp32_model))
    gemm_to_matmul(model)
    head = materialize_lm_head(model)
    proj = NBitsSettings(bits=8, block_size=block, accuracy_level=4, symmetric=True)
    model = nbits_quantize(model, proj, True, [head[0]])
    lm = NBitsSettings(bits=head_bits, block_size=head_block, accuracy_level=4, symmetric=True)
    model, _ = quantize_lm_head(model, head, lm)
    fold_bias(model)
    if half_kv:
        half_kv_cache(model)
    return model


def int8_head(fp32_model: Path, head_bits: int, head_block: int) -> onnx.ModelProto:
    """The shipped int8 recipe (ORTQuantizer, per-row activations, portable target) with another
    LM head: the recipe's head settings are swapped for this call only."""
    from gpt2_edge.exporter.edits.kv_cache import half_kv_cache
    from gpt2_edge.exporter.recipes import int8 as recipe
    from gpt2_edge.exporter.recipes.nbits import NBitsSettings
    from gpt2_edge.exporter.recipes.targets import resolve_target

    def head_settings(**kw: object) -> NBitsSettings:
        return NBitsSettings(**{**kw, "bits": head_bits, "block_size": head_block})  # type: ignore[arg-type]

    original = recipe.NBitsSettings
    recipe.NBitsSettings = head_settings  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path, _ = recipe.quantize_int8(fp32_model, Path(tmp), resolve_target("portable"),
                                           "fused-gqa", True)  # fmt: skip
            model = onnx.load(str(path))
    finally:
        recipe.NBitsSettings = original  # type: ignore[assignment]
    half_kv_cache(model)
    return model


def write_bundle(model: onnx.ModelProto, donor: Path, dst: Path) -> Path:
    """``model`` as a bundle at ``dst``: the donor's other files, its manifest with the model
    files' sizes and SHA-256 replaced."""
    from gpt2_edge.exporter.onnx_files import save_model

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in donor.iterdir():
        if f.is_file() and f.name not in MODEL_FILES:
            shutil.copy(f, tmp / f.name)
    save_model(model, tmp / "model.onnx", external=True)
    manifest = json.loads((tmp / "bundle.json").read_text())
    for name in MODEL_FILES:
        path = tmp / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest["files"][name] = {"size": path.stat().st_size, "sha256": digest}
    (tmp / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def _fp32(model: str, workdir: Path) -> Path:
    return bench_models.ours(model, "fp32", workdir)[0] / "model.onnx"


def _donor(model: str, workdir: Path, kv32: bool = False) -> Path:
    return bench_models.ours(model, "int8", workdir, "float32" if kv32 else "auto")[0]


# name -> (model, workdir) -> bundle folder
VARIANTS: dict[str, Callable[[str, Path], Path]] = {
    "int8": lambda m, w: bench_models.ours(m, "int8", w)[0],
    "int4": lambda m, w: bench_models.ours(m, "int4", w)[0],
    "int8-kv32": lambda m, w: bench_models.ours(m, "int8", w, "float32")[0],
}


def _built(name: str, make: Callable[[str, Path], onnx.ModelProto], kv32: bool = False) -> None:
    def build(model: str, workdir: Path) -> Path:
        dst = workdir / model / "variants" / name
        if (dst / "bundle.json").is_file():
            return dst
        bench_models.log(f"building variant {name} of {model}")
        return write_bundle(make(model, workdir), _donor(model, workdir, kv32), dst)

    VARIANTS[name] = build


for _b in (32, 64, 128):
    _built(f"nbits8-b{_b}", lambda m, w, b=_b: nbits_from_fp32(_fp32(m, w), b, 8, 64, True))
_built("nbits8-b32-head4", lambda m, w: nbits_from_fp32(_fp32(m, w), 32, 4, 32, True))
_built("nbits8-b32-kv32", lambda m, w: nbits_from_fp32(_fp32(m, w), 32, 8, 64, False), kv32=True)
_built("int8-head4", lambda m, w: int8_head(_fp32(m, w), 4, 32))


def count_ops(bundle: Path) -> dict[str, int]:
    """Nodes by type in the bundle's graph (as written, before onnxruntime's fusions)."""
    model = onnx.load(str(bundle / "model.onnx"), load_external_data=False)
    out: dict[str, int] = {}
    for n in model.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="124m")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--workdir", type=Path, default=bench_models.DEFAULT_WORKDIR)
    args = p.parse_args()
    for model in args.models.split(","):
        for name in args.variants.split(","):
            path = VARIANTS[name](model, args.workdir)
            ops = count_ops(path)
            top = ", ".join(f"{k} {v}" for k, v in sorted(ops.items(), key=lambda x: -x[1])[:6])
            print(f"{model} {name}: {path} ({sum(ops.values())} nodes: {top})")


if __name__ == "__main__":
    main()
