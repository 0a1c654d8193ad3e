"""Which int8 recipe keeps the trained fixture's perplexity? Measured, not guessed.

Usage (needs the export extra and ../shared):
    python benchmarks/quant_recipes.py [--tokens 8192] [--threads 1] [--out quant_recipes.json]

Exports the fixture (shared/fixtures/gpt2-wikitext-tiny) to fp32 ONNX with Optimum, builds each
recipe from that one graph, and scores every recipe against fp32 on the first ``--tokens`` GPT-2
tokens of WikiText-2 test.txt with the transformers guide's sliding window (context 1024,
stride 512): file size, perplexity, its change vs fp32, top-1 agreement, max logit difference.

Recipes vary one thing at a time:
- dynamic int8 (``MatMulInteger`` + ``DynamicQuantizeLinear``) through onnxruntime's
  ``quantize_dynamic``: per-channel vs per-tensor, ``reduce_range``, signed vs unsigned weights,
  and which ops: the projections only; + the attention activation x activation MatMuls;
  + the LM head (as the export leaves it, ``MatMul(h, Transpose(wte))``, quantized on both sides at
  run time); + the embedding ``Gather`` (int8 table);
- the exporter's current recipe (Optimum ``AutoQuantizationConfig.avx2``, per channel);
- weight-only 8-bit and 4-bit (``MatMulNBits``) after the Gemm -> MatMul rewrite
  (``exporter/edits/rewrites.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnx
from gpt2_edge.exporter.checks.quality import compare_on_ids
from gpt2_edge.exporter.edits.rewrites import attention_matmuls, gemm_to_matmul, materialize_lm_head
from gpt2_edge.exporter.recipes.nbits import NBitsSettings as Int4Settings
from gpt2_edge.exporter.recipes.nbits import nbits_quantize, quantize_weight_only
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.generation.evaluate import encode
from gpt2_edge.runtime.graph.session import Session

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURE = SHARED / "fixtures" / "gpt2-wikitext-tiny"
TEXT = SHARED / "data" / "wikitext-2" / "test.txt"
CONTEXT, STRIDE = 1024, 512

Builder = Callable[[Path, Path], None]  # (fp32 model.onnx, output model.onnx)


def lm_head_matmul(model: onnx.ModelProto) -> list[str]:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and producers.get(n.input[1]) == "Transpose"
    ]


def dynamic(
    per_channel: bool,
    reduce_range: bool,
    signed: bool,
    attention: bool,
    lm_head: bool,
    gather: bool,
) -> Builder:
    """A ``quantize_dynamic`` recipe on the Gemm->MatMul-rewritten graph."""

    def build(src: Path, dst: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = onnx.load(str(src))
        gemm_to_matmul(model)  # the dynamic quantizer has no Gemm entry for IntegerOps
        exclude = [] if attention else attention_matmuls(model)
        exclude += [] if lm_head else lm_head_matmul(model)
        tmp = dst.with_name("rewritten.onnx")
        onnx.save(model, str(tmp))
        quantize_dynamic(
            tmp,
            dst,
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8 if signed else QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Gather"] if gather else ["MatMul"],
            nodes_to_exclude=exclude,
            # quantize_dynamic skips activation x activation MatMuls unless told otherwise
            # (Optimum's ORTQuantizer does not set this, so it quantizes them).
            extra_options={"MatMulConstBOnly": not (attention or lm_head)},
        )
        tmp.unlink()

    return build


def optimum_avx2(src: Path, dst: Path) -> None:
    """What the exporter did before this study: attention MatMuls quantized too."""
    from optimum.onnxruntime import AutoQuantizationConfig, ORTQuantizer

    quantizer = ORTQuantizer.from_pretrained(src.parent, file_name=src.name)
    config = AutoQuantizationConfig.avx2(is_static=False, per_channel=True)
    quantizer.quantize(config, save_dir=dst.parent, file_suffix="quantized")
    (dst.parent / f"{src.stem}_quantized.onnx").rename(dst)


def optimum_avx2_no_attention(src: Path, dst: Path) -> None:
    """The exporter's --graph optimum recipe: attention MatMuls excluded, activations per row."""
    from gpt2_edge.exporter.recipes.int8 import quantize_int8
    from gpt2_edge.exporter.recipes.targets import TARGETS

    path, _ = quantize_int8(src, dst.parent / "int8", TARGETS["avx2"], "optimum")
    path.rename(dst)


def weight_only(settings: Int4Settings, lm_head: bool = True) -> Builder:
    def build(src: Path, dst: Path) -> None:
        model = onnx.load(str(src))
        if not lm_head:
            # Quantize projections only: hide the head from the quantizer by keeping Transpose.
            gemm_to_matmul(model)
            model = nbits_quantize(model, settings, settings.symmetric, [])
        else:
            model, _ = quantize_weight_only(model, settings)
        onnx.save(model, str(dst))

    return build


def const_head_dynamic(src: Path, dst: Path) -> None:
    """Projections + a constant LM head (wte.T) per-channel int8; the embedding stays float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    gemm_to_matmul(model)
    materialize_lm_head(model)
    tmp = dst.with_name("rewritten.onnx")
    onnx.save(model, str(tmp))
    quantize_dynamic(
        tmp,
        dst,
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=attention_matmuls(model),
    )
    tmp.unlink()


RECIPES: dict[str, Builder] = {
    "optimum avx2 per-channel (exporter before)": optimum_avx2,
    "optimum avx2 per-channel, attn excluded (exporter)": optimum_avx2_no_attention,
    "dyn u8 per-tensor, proj+Gather": dynamic(False, False, False, False, False, True),
    "dyn u8 per-channel, proj+Gather": dynamic(True, False, False, False, False, True),
    "dyn s8 per-channel rr, proj+Gather": dynamic(True, True, True, False, False, True),
    "dyn u8 per-channel, proj+attn+head+Gather": dynamic(True, False, False, True, True, True),
    "dyn s8 per-channel, proj+attn+head": dynamic(True, False, True, True, True, False),
    "dyn s8 per-channel, proj+attn": dynamic(True, False, True, True, False, False),
    "dyn s8 per-channel, proj+head(dyn)": dynamic(True, False, True, False, True, False),
    "dyn s8 per-channel, proj+Gather": dynamic(True, False, True, False, False, True),
    "dyn s8 per-tensor, proj only": dynamic(False, False, True, False, False, False),
    "dyn s8 per-tensor rr, proj only": dynamic(False, True, True, False, False, False),
    "dyn u8 per-channel, proj only": dynamic(True, False, False, False, False, False),
    "dyn s8 per-channel, proj only": dynamic(True, False, True, False, False, False),
    "dyn s8 per-channel rr, proj only": dynamic(True, True, True, False, False, False),
    "dyn s8 per-channel, proj + const head": const_head_dynamic,
    "w8 MatMulNBits b32, proj only": weight_only(
        Int4Settings(bits=8, accuracy_level=0, embedding="float"), False
    ),
    "w8 MatMulNBits b32, proj + head": weight_only(
        Int4Settings(bits=8, accuracy_level=0, embedding="float")
    ),
    "w8 MatMulNBits b32, proj + shared head/emb": weight_only(
        Int4Settings(bits=8, accuracy_level=0)
    ),
    "w8 MatMulNBits b32 acc4, proj + shared head/emb": weight_only(
        Int4Settings(bits=8, accuracy_level=4)
    ),
    "w4 MatMulNBits b32, proj + shared head/emb": weight_only(Int4Settings(accuracy_level=0)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("quant_recipes.json"))
    parser.add_argument("--only", default="", help="run recipes whose name contains this")
    args = parser.parse_args()

    from optimum.exporters.onnx import main_export
    from rich.console import Console
    from rich.table import Table

    console = Console()
    work = Path(tempfile.mkdtemp(prefix="quant-recipes-"))
    fp32 = work / "fp32"
    main_export(str(FIXTURE), output=fp32, task="text-generation-with-past")
    ref = Session(load_bundle(fp32), provider="cpu", threads=args.threads)
    ids = encode(ref.bundle.tokenizer_path, TEXT.read_text(encoding="utf-8"))[: args.tokens]
    fp32_size = (fp32 / "model.onnx").stat().st_size
    rows = []
    for name, build in RECIPES.items():
        if args.only not in name:
            continue
        folder = work / f"r{len(rows)}"
        shutil.copytree(fp32, folder, ignore=shutil.ignore_patterns("*.onnx*"))
        t0 = time.perf_counter()
        build(fp32 / "model.onnx", folder / "model.onnx")
        cand = Session(load_bundle(folder), provider="cpu", threads=args.threads)
        cmp = compare_on_ids(ref, cand, ids, context=CONTEXT, stride=STRIDE)
        ops = sorted({n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node})
        row = {
            "recipe": name,
            "file_mib": (folder / "model.onnx").stat().st_size / 2**20,
            "size_ratio": (folder / "model.onnx").stat().st_size / fp32_size,
            **cmp.to_dict(),
            "quant_ops": [o for o in ops if "Integer" in o or "NBits" in o or "Quant" in o],
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        console.print(f"{name}: ppl {row['perplexity']:.3f} ({row['ppl_increase']:+.2%})")
        shutil.rmtree(folder)

    table = Table(title=f"int8 recipes on gpt2-wikitext-tiny, WikiText-2 test, {len(ids)} tokens")
    for col in ("recipe", "MiB", "size", "ppl", "Δppl", "top-1", "max |Δlogit|"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    table.add_row(
        "fp32", f"{fp32_size / 2**20:.1f}", "100%", f"{rows[0]['ref_perplexity']:.3f}", "", "", ""
    )
    for r in rows:
        table.add_row(
            r["recipe"],
            f"{r['file_mib']:.1f}",
            f"{r['size_ratio']:.0%}",
            f"{r['perplexity']:.3f}",
            f"{r['ppl_increase']:+.2%}",
            f"{r['top1_agreement']:.2%}",
            f"{r['max_logit_diff']:.3f}",
        )
    console.print(table)
    meta = {
        "tokens": len(ids),
        "context": CONTEXT,
        "stride": STRIDE,
        "threads": args.threads,
        "fp32_mib": fp32_size / 2**20,
        "text": str(TEXT),
    }
    args.out.write_text(json.dumps({"meta": meta, "recipes": rows}, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
