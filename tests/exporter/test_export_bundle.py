"""End-to-end exports of tiny GPT-2 checkpoints: fp32 and int8 bundles, parity, the manifest.

The bundles are built once per session (a tiny export takes a few seconds) and shared by the tests
of this module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.exporter import ExportError, export_bundle, onnx_files
from gpt2_edge.exporter.checks.verify import verify_bundle
from gpt2_edge.exporter.graphs.describe import graph_io
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.contract.files import sha256_of
from gpt2_edge.runtime.decoders.interface import open_decoder
from gpt2_edge.runtime.graph.session import Session

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def fp32_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny-gpt2"
    out.mkdir()
    # An older export (--force replaces only bundles), whose files must all go.
    (out / "bundle.json").write_text('{"format": "gpt2-edge-bundle", "name": "older"}')
    (out / "model.onnx.data").write_bytes(b"from an older export")
    return export_bundle(str(tiny_checkpoint), out, force=True, progress=False)


@pytest.fixture(scope="module")
def int8_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny-gpt2-int8"
    return export_bundle(str(tiny_checkpoint), out, quantize=True, progress=False)


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / "bundle.json").read_text())


def test_fp32_bundle_files(fp32_bundle: Path) -> None:
    assert sorted(p.name for p in fp32_bundle.iterdir()) == [
        "bundle.json",
        "genai_config.json",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert oct(fp32_bundle.stat().st_mode & 0o777) != oct(0o700)  # not left private by mkdtemp


def test_fp32_manifest(fp32_bundle: Path, tiny_checkpoint: Path) -> None:
    m = manifest_of(fp32_bundle)
    assert m["format"] == "gpt2-edge-bundle" and m["format_version"] == 2
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    arch = m["architecture"]
    assert arch["layers"] == config["n_layer"] == 2
    assert arch["heads"] == 4 and arch["head_size"] == 16 and arch["hidden_size"] == 64
    assert arch["context_length"] == 128 and arch["vocab_size"] == config["vocab_size"]
    assert arch["kv_dtype"] == "float32"
    inputs, outputs = graph_io(fp32_bundle / "model.onnx")
    io = m["io"]
    for role in ("input_ids", "attention_mask", "position_ids"):
        assert io[role] in inputs
    assert io["logits"] in outputs
    for i in range(arch["layers"]):
        assert io["past_key"] % i in inputs and io["past_value"] % i in inputs
        assert io["present_key"] % i in outputs and io["present_value"] % i in outputs
    assert m["precision"]["dtype"] == "float32"
    eos = config["eos_token_id"]
    assert m["special_tokens"] == {"bos": eos, "eos": eos, "pad": eos}
    assert m["generation"] == {"max_new_tokens": 20, "temperature": 0.0}
    for name, entry in m["files"].items():
        assert entry == {
            "size": (fp32_bundle / name).stat().st_size,
            "sha256": sha256_of(fp32_bundle / name),
        }
    assert set(m["files"]) == {
        "model.onnx",
        "tokenizer.json",
        "genai_config.json",
        "tokenizer_config.json",
    }
    assert m["source"]["model"] == str(tiny_checkpoint)
    assert {"torch", "transformers", "optimum", "onnxruntime"} <= set(m["source"]["libraries"])
    v = m["verification"]
    assert v["max_abs_logit_diff"] <= 1e-3 and v["top1_agreement"] == 1.0
    assert v["positions"] >= 200 and v["prompts"] >= 5


def test_fp32_greedy_matches_transformers(fp32_bundle: Path, tiny_checkpoint: Path) -> None:
    """A batch of two prompts decoded greedily through the runtime's Session, step by step."""
    import torch
    from transformers import GPT2LMHeadModel

    session = Session(load_bundle(fp32_bundle), provider="cpu")
    model = GPT2LMHeadModel.from_pretrained(tiny_checkpoint).eval()
    ids = np.array([[11, 22, 33, 44, 55], [66, 77, 88, 99, 111]], dtype=np.int64)  # (B, T)
    with torch.no_grad():
        want = model.generate(
            torch.tensor(ids),
            attention_mask=torch.ones_like(torch.tensor(ids)),
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
        )[:, ids.shape[1] :].numpy()
    decoder = open_decoder(session, pad_id=0, capacity=ids.shape[1] + 8)
    logits, got = decoder.prefill(list(ids)), []  # (B, V): the path generation runs
    for _ in range(8):
        tokens = logits.argmax(-1).astype(np.int64)  # (B,)
        got.append(tokens)
        logits = decoder.decode(tokens[:, None])[:, -1]
    np.testing.assert_array_equal(np.stack(got, 1), want)


def test_int8_bundle(int8_bundle: Path, fp32_bundle: Path) -> None:
    import onnx

    assert sorted(p.name for p in int8_bundle.iterdir()) == [
        "bundle.json",
        "genai_config.json",
        "model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    ratio = (int8_bundle / "model.onnx").stat().st_size / (
        fp32_bundle / "model.onnx"
    ).stat().st_size
    assert ratio <= 0.35
    ops = {n.op_type for n in onnx.load(str(int8_bundle / "model.onnx")).graph.node}
    assert {"MatMulIntegerToFloat", "MatMulNBits"} <= ops  # projections; the tied LM head
    # activations are quantized per row, never per tensor (which made rows batch-dependent)
    assert "DynamicQuantizeLinear" not in ops and "Gemm" not in ops
    m = manifest_of(int8_bundle)
    p = m["precision"]
    assert p["dtype"] == "int8" and p["method"] == "dynamic"
    assert p["activations"]["granularity"] == "per row"
    assert p["weights"]["granularity"] == "per output channel"
    # the portable default: 7-bit weights cannot saturate AVX2 kernels without VNNI
    assert p["target"] == "portable" and p["weights"]["reduce_range"] is True
    assert "AVX2" in p["cpus"] and "ARM64" in p["cpus"]
    assert "ORTQuantizer" in p["tool"]["weights"] and p["tool"]["optimum"]
    assert p["lm_head"]["block_size"] == 64 and p["embedding"].startswith("shares")
    assert m["graph"]["kind"] == "fused-gqa"  # the default graph
    v = m["verification"]
    assert v["positions"] >= 200
    assert 0 < v["max_abs_logit_diff"] < 1.0
    assert v["top1_agreement"] >= 0.8
    assert "tolerance" not in v  # int8 is measured, not held to the fp32 limit


def test_int8_goes_through_optimums_quantizer(tiny_checkpoint: Path, tmp_path: Path, monkeypatch):
    """--quantize calls Optimum's ORTQuantizer with the recipe's QuantizationConfig."""
    from gpt2_edge.exporter import export_bundle
    from optimum.onnxruntime import ORTQuantizer

    configs = []
    real = ORTQuantizer.quantize

    def spy(self, quantization_config, *args, **kwargs):
        configs.append(quantization_config)
        return real(self, quantization_config, *args, **kwargs)

    monkeypatch.setattr(ORTQuantizer, "quantize", spy)
    export_bundle(str(tiny_checkpoint), tmp_path / "b", quantize=True, verify=False, progress=False)
    [config] = configs
    assert not config.is_static and config.per_channel and config.reduce_range
    assert [str(getattr(o, "value", o)) for o in config.operators_to_quantize] == ["MatMul"]
    assert len(config.nodes_to_exclude) == 1  # the LM head, quantized as 8-bit blocks instead


def test_fp32_parity_failure_is_an_error(fp32_bundle, tiny_checkpoint, monkeypatch) -> None:
    from gpt2_edge.exporter.checks import verify

    monkeypatch.setattr(verify, "FP32_TOLERANCE", 0.0)
    with pytest.raises(ExportError, match=r"differ from PyTorch by up to .* \(limit 0\)"):
        verify_bundle(fp32_bundle, tiny_checkpoint, "float32")


def ort_logits(model: Path) -> np.ndarray:
    """Logits of a fixed 5-token prompt, straight from onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids = np.array([[464, 2068, 7586, 21831, 18045]], dtype=np.int64)
    positions = np.arange(ids.shape[1], dtype=np.int64)[None]
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": positions}
    for i in session.get_inputs():
        if i.name == "logits_index":
            feeds[i.name] = positions
        elif i.name.startswith("past"):
            feeds[i.name] = np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32)
    return session.run(["logits"], feeds)[0]


@pytest.mark.usefixtures("gpt2_vocabulary")  # 10 MB of embedding
def test_place_model_external_data(fp32_bundle: Path, tmp_path: Path, monkeypatch) -> None:
    """Weights over SPLIT_WEIGHTS_ABOVE (lowered here) go to model.onnx.data, then load."""
    monkeypatch.setattr(onnx_files, "SPLIT_WEIGHTS_ABOVE", 1_000_000)
    src = tmp_path / "src.onnx"
    shutil.copyfile(fp32_bundle / "model.onnx", src)
    written = onnx_files.place_model(src, tmp_path / "model.onnx")
    assert [p.name for p in written] == ["model.onnx", "model.onnx.data"]
    assert (tmp_path / "model.onnx").stat().st_size < 1_000_000
    assert (tmp_path / "model.onnx.data").stat().st_size > 10_000_000
    modes = {(tmp_path / n).stat().st_mode & 0o777 for n in ("model.onnx", "model.onnx.data")}
    assert len(modes) == 1  # not owner-only data beside a world-readable graph
    a, b = (ort_logits(path) for path in (fp32_bundle / "model.onnx", tmp_path / "model.onnx"))
    np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("gpt2_vocabulary")  # 1 MB of embedding
def test_external_data_export_int8(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """With the threshold lowered, quantization runs in external-data mode and the bundle keeps
    model.onnx + model.onnx.data, listed in the manifest and loadable by the runtime."""
    monkeypatch.setattr(onnx_files, "EXTERNAL_DATA_THRESHOLD", 1_000_000)
    out = export_bundle(str(tiny_checkpoint), tmp_path / "ext", quantize=True, progress=False)
    files = manifest_of(out)["files"]
    assert set(files) == {
        "model.onnx",
        "model.onnx.data",
        "tokenizer.json",
        "genai_config.json",
        "tokenizer_config.json",
    }
    assert files["model.onnx.data"]["size"] > files["model.onnx"]["size"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "bundle.json"])
    assert manifest_of(out)["verification"]["top1_agreement"] >= 0.8


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_shipped_bundles_of_the_trained_fixture_verify(shipped_bundles, precision: str) -> None:
    """The verification figures gpt2-export measured and wrote for what it ships."""
    v = manifest_of(shipped_bundles[precision])["verification"]
    ppl = v["perplexity"]
    if precision == "int8":
        assert v["top1_agreement"] >= 0.9
        assert abs(ppl["bundle"] / ppl["reference"] - 1) < 0.05
    else:
        assert v["max_abs_logit_diff"] <= 1e-3 and v["top1_agreement"] == 1.0
        assert ppl["bundle"] == pytest.approx(ppl["reference"], rel=1e-4)


def test_kill_mid_export_leaves_nothing(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A real `kill` (SIGTERM) while Optimum exports: no bundle, no hidden partial folder."""
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2_edge.exporter", str(tiny_checkpoint), "--output", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".killed.partial-*/.work")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the export step has started once Optimum creates its folder
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr  # 128 + SIGTERM, as the shell reports a kill
    assert "Interrupted; no bundle was written." in stderr and "Traceback" not in stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_python_m_entry_point_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_edge.exporter", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0
    for flag in (
        "--output",
        "--quantize",
        "--bits",
        "--target",
        "--opset",
        "--force",
        "--no-verify",
    ):
        assert flag in proc.stdout


def test_cli_default_output_opset_and_no_verify(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch
) -> None:
    """The CLI path: models/<name> under the working directory, --opset honoured, summary table."""
    import onnx
    from gpt2_edge.exporter.cli import app
    from typer.testing import CliRunner

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [str(tiny_checkpoint), "--opset", "17", "--no-verify"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "models" / tiny_checkpoint.name
    assert manifest_of(out)["verification"] == {"skipped": True}
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
    assert [o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")] == [17]
    for text in ("model.onnx", "tokenizer.json", "float32", "skipped"):
        assert text in result.stdout
    assert re.search(r"\d\.\d (KiB|MiB)", result.stdout)  # sizes in the unit that fits
    for step in ("Resolve", "Export ONNX", "Write tokenizer.json", "Write bundle.json"):
        assert step in result.stderr


@pytest.mark.export
@pytest.mark.parametrize(
    ("n_embd", "n_head", "graph_kind", "embedding"),
    [
        (48, 4, "optimum", "int8 (ORTQuantizer Gather)"),  # head size 12: GQA needs 8k
        (48, 6, "fused-gqa", "shares the 8-bit LM head's weight"),  # blocks of 16
        (40, 5, "fused-gqa", "float32"),  # no block size of 16 or more tiles a width of 40
    ],
)
def test_int8_export_of_odd_widths(
    n_embd: int, n_head: int, graph_kind: str, embedding: str | None, tmp_path: Path
) -> None:
    from gpt2_edge.runtime import load
    from support.tiny_models import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "ckpt", n_embd=n_embd, n_head=n_head)
    out = export_bundle(str(checkpoint), tmp_path / "int8", quantize=True, progress=False)
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["graph"]["kind"] == graph_kind
    assert manifest["precision"].get("embedding") == embedding
    result = load(out, provider="cpu").generate("Hello world", max_new_tokens=4, temperature=0)
    assert len(result.tokens) == 4


def test_ortquantizer_reads_the_fused_graph_once_its_tensors_are_typed(
    fp32_bundle: Path, tmp_path: Path
) -> None:
    """Why ``edits.type_intermediates`` exists: Optimum's ORTQuantizer stops on the fused graph
    as built (shape inference cannot type com.microsoft outputs), and quantizes it once typed."""
    import onnx
    from gpt2_edge.exporter.edits.rewrites import materialize_lm_head, type_intermediates
    from gpt2_edge.exporter.recipes.int8 import OPERATORS, quantization_config
    from gpt2_edge.exporter.recipes.targets import TARGETS
    from optimum.onnxruntime import ORTQuantizer

    model = onnx.load(str(fp32_bundle / "model.onnx"))
    head = materialize_lm_head(model)
    config = quantization_config(TARGETS["portable"], [head[0]], OPERATORS["fused-gqa"])
    for typed in (False, True):
        folder = tmp_path / f"typed-{typed}"
        folder.mkdir()
        if typed:
            assert type_intermediates(model) > 0
        onnx.save(model, str(folder / "model.onnx"))
        quantizer = ORTQuantizer.from_pretrained(folder, file_name="model.onnx")
        if not typed:
            with pytest.raises(Exception, match="Unable to find data type for weight_name"):
                quantizer.quantize(config, save_dir=folder / "q")
            continue
        quantizer.quantize(config, save_dir=folder / "q")
        ops = {n.op_type for n in onnx.load(str(folder / "q" / "model_quantized.onnx")).graph.node}
        assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
