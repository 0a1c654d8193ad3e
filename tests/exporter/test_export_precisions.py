"""Exports of the tiny GPT-2 at every precision: int4, fp16, the int8 recipe, the quality gate.

The gate measures on the built-in text (~2,900 tokens, ~8 s per export on the tiny model with its
50k vocabulary); here it reads a slice of it, which exercises the same code in a fraction of the
time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpt2_edge.exporter.checks import quality
from gpt2_edge.exporter.cli import app
from gpt2_edge.exporter.pipeline import export_bundle
from typer.testing import CliRunner

pytestmark = pytest.mark.export
SHORT_TEXT_CHARS = 1500  # ~300 tokens: one window


@pytest.fixture(scope="module")
def short_gate_text() -> Iterator[None]:
    text = quality.builtin_text()[:SHORT_TEXT_CHARS]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quality, "builtin_text", lambda: text)
        yield


@pytest.fixture(scope="module")
def fp32_size(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    out = tmp_path_factory.mktemp("prec") / "fp32"
    export_bundle(str(tiny_checkpoint), out, verify=False, progress=False)
    return (out / "model.onnx").stat().st_size


@pytest.fixture(scope="module")
def int4_bundle(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, short_gate_text: None
) -> Path:
    out = tmp_path_factory.mktemp("prec") / "int4"
    text = out.parent / "eval.txt"
    text.write_text("It was a bright cold day in April, and the clocks were striking. " * 8)
    return export_bundle(
        str(tiny_checkpoint), out, quantize=True, bits=4, eval_text=text, progress=False
    )


@pytest.fixture(scope="module")
def fp16_bundle(
    tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, short_gate_text: None
) -> Path:
    out = tmp_path_factory.mktemp("prec") / "fp16"
    return export_bundle(str(tiny_checkpoint), out, dtype="fp16", progress=False)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def generate(folder: Path) -> list[int]:
    from gpt2_edge.runtime import load

    result = load(folder).generate(
        "The history of", max_new_tokens=6, temperature=0, ignore_eos=True
    )
    return list(result.tokens)


def test_int4_bundle_is_smaller_and_generates(int4_bundle: Path, fp32_size: int) -> None:
    m = manifest_of(int4_bundle)
    p = m["precision"]
    assert p["dtype"] == "int4" and p["operators"] == ["MatMulNBits"]
    assert p["weights"]["block_size"] == 32 and p["weights"]["accuracy_level"] == 4
    import onnx

    ops = [n.op_type for n in onnx.load(str(int4_bundle / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 2 * 4 + 1  # every projection and the LM head
    assert (int4_bundle / "model.onnx").stat().st_size < 0.5 * fp32_size
    assert len(generate(int4_bundle)) == 6


def test_fp16_bundle_generates_with_fp16_kv(fp16_bundle: Path) -> None:
    m = manifest_of(fp16_bundle)
    assert m["precision"]["dtype"] == "float16"
    assert m["architecture"]["kv_dtype"] == "float16"
    assert len(generate(fp16_bundle)) == 6


def test_quality_figures_in_manifest(int4_bundle: Path, fp16_bundle: Path) -> None:
    for folder in (int4_bundle, fp16_bundle):
        q = manifest_of(folder)["verification"]["quality"]
        assert q["max_ppl_increase"] == 0.05
        builtin = q["builtin"]
        assert builtin["ppl_increase"] <= 0.05 and 0 < builtin["top1_agreement"] <= 1
        assert builtin["perplexity"] > 0 and builtin["tokens"] > 0
        assert 0 <= q["greedy"]["greedy_exact"] <= 1
    assert manifest_of(fp16_bundle)["verification"]["quality"]["builtin"]["top1_agreement"] > 0.95
    user = manifest_of(int4_bundle)["verification"]["quality"]["user_text"]
    assert user["file"].endswith("eval.txt") and user["tokens"] > 50


def test_help_lists_the_precision_flags() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    for flag in ("--bits", "--dtype", "--block-size", "--accuracy-level", "--eval-text"):
        assert flag in result.stdout
    assert "--max-ppl-increase" in result.stdout and "skips both" in result.stdout


def test_gate_failure_leaves_no_bundle(
    tiny_checkpoint: Path, tmp_path: Path, short_gate_text: None, monkeypatch
) -> None:
    from gpt2_edge.exporter import plan

    # A negative limit is refused before the export; let it through to force a gate failure.
    monkeypatch.setattr(plan, "check_gate_options", lambda *args: None)
    out = tmp_path / "gated"
    args = [str(tiny_checkpoint), "-o", str(out), "--bits", "4", "--max-ppl-increase", "-1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "The int4 export has" in result.stderr and "on the built-in text" in result.stderr
    assert "-100.00%" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["--dtype", "fp16", "--quantize"], "exclude each other"),
        (["--dtype", "bf16"], "Unknown dtype"),
        (["--bits", "4", "--block-size", "24"], "power of two"),
        (["--bits", "4", "--accuracy-level", "9"], "Accuracy level"),
        (["--quantize", "--eval-text", "/nonexistent.txt"], "does not exist"),
    ],
)
def test_bad_precision_flags(tmp_path: Path, args: list[str], words: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [str(tmp_path), "-o", str(out), *args])
    assert result.exit_code == 1 and words in result.stderr, result.output
    assert not out.exists()


def test_int8_recipe_keeps_attention_matmuls_float(
    tiny_optimum_export: Path, tmp_path: Path
) -> None:
    """Optimum's graph: no MatMulInteger is fed by two activations; the projections are int8."""
    import onnx
    from gpt2_edge.exporter.recipes import apply_precision, choose_precision

    path, precision = apply_precision(
        choose_precision(quantize=True, target="avx2"),
        tiny_optimum_export / "model.onnx",
        tmp_path,
        "optimum",
    )
    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    integer = [n for n in model.graph.node if n.op_type.startswith("MatMulInteger")]
    assert integer
    for node in integer:  # an activation operand is quantized at run time: only input 0 may be
        assert producers.get(node.input[0]) == "QuantizeLinear"  # per row: ... Div, Quantize
        assert producers.get(node.input[1]) != "Cast", node.name
        assert node.input[1] in inits or producers.get(node.input[1]) == "Transpose"  # LM head
    float_matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    excluded = precision.weights["excluded"]
    assert len(excluded) == 2 * 2 and set(excluded) <= set(float_matmuls)  # QK^T and PV a layer
    assert precision.activations["granularity"] == "per row"
    assert "DynamicQuantizeLinear" not in {n.op_type for n in model.graph.node}


def test_default_output_names_per_precision() -> None:
    from gpt2_edge.exporter.pipeline import default_output
    from gpt2_edge.exporter.recipes import choose_precision

    assert default_output("gpt2", suffix=choose_precision(True, 4).suffix) == Path(
        "models/gpt2-int4"
    )
    assert default_output("gpt2", suffix=choose_precision(dtype="fp16").suffix) == Path(
        "models/gpt2-fp16"
    )
    assert choose_precision(True).kind == "int8"
