"""Bundles with the fused GQA graph (the exporter's default) driven through the shared KV buffer:
greedy parity with transformers, right-padded batches, the context end, and the ``--graph
optimum`` path that keeps Optimum's graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.runtime import Generator, load
from gpt2_edge.runtime.decoders.runners import NumpyRunner, runner_for
from gpt2_edge.runtime.decoders.shared import SharedKVDecoder
from test_runtime_parity import NEW, PROMPTS, reference

pytestmark = pytest.mark.export


def _export(checkpoint: Path, out: Path, **kwargs: object) -> Path:
    from gpt2_edge.exporter.pipeline import export_bundle

    # verify=False: test_export_bundle covers verification; these tests check generation.
    return export_bundle(str(checkpoint), out, verify=False, progress=False, **kwargs)


@pytest.fixture(scope="module")
def tiny_fused(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Generator:
    folder = _export(tiny_checkpoint, tmp_path_factory.mktemp("fused") / "tiny")
    return load(folder, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def trained_fused(trained_fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Generator:
    folder = _export(trained_fixture_dir, tmp_path_factory.mktemp("fused") / "trained")
    return load(folder, provider="cpu", threads=1)


def test_manifest_says_shared_buffer(tiny_fused: Generator) -> None:
    graph = tiny_fused.manifest.graph
    assert graph["kind"] == "fused-gqa" and graph["kv_cache"] == "shared-buffer"
    assert graph["padding"] == "right"
    assert graph["parity_vs_optimum"]["max_abs_logit_diff"] <= 1e-3
    assert tiny_fused.session.shared_kv


@pytest.mark.parametrize("which", ["trained", "tiny"])
def test_greedy_equals_transformers(
    which: str, request: pytest.FixtureRequest, trained_fixture_dir: Path, tiny_checkpoint: Path
) -> None:
    gen: Generator = request.getfixturevalue(f"{which}_fused")
    checkpoint = trained_fixture_dir if which == "trained" else tiny_checkpoint
    for prompt in [*PROMPTS[:3], ""]:
        result = gen.generate(prompt, max_new_tokens=NEW, temperature=0)
        assert result.tokens == reference(checkpoint, gen.encode(prompt), NEW), prompt


def test_batch_of_different_lengths_equals_each_alone(trained_fused: Generator) -> None:
    gen = trained_fused
    alone = [gen.generate(p, max_new_tokens=24, temperature=0) for p in PROMPTS]
    assert len({len(gen.encode(p)) for p in PROMPTS}) > 1  # really different lengths
    batch = gen.generate_batch(PROMPTS, max_new_tokens=24, temperature=0)
    assert [r.tokens for r in batch] == [r.tokens for r in alone]
    # A row that stops early stays in the batch, frozen; the others must not notice.
    stop = gen.tokenizer.decode(alone[0].tokens[3:5])
    settings = {"max_new_tokens": 24, "temperature": 0, "stop": stop}
    expected = [gen.generate(p, **settings) for p in PROMPTS]
    batch = gen.generate_batch(PROMPTS, **settings)
    assert [(r.tokens, r.text, r.finish_reason) for r in batch] == [
        (r.tokens, r.text, r.finish_reason) for r in expected
    ]
    assert batch[0].finish_reason == "stop"


def test_context_end(tiny_fused: Generator) -> None:
    gen = tiny_fused
    assert gen.context_length == 128
    hundred = " ".join(["word"] * 100)
    full = gen.generate(hundred, max_new_tokens=100, temperature=0, ignore_eos=True)
    assert full.finish_reason == "context"
    assert full.prompt_tokens + len(full.tokens) == 128
    # The long row reaches the context and freezes while the short one goes on past it.
    short = gen.generate("Hello", max_new_tokens=60, temperature=0, ignore_eos=True)
    settings = {"max_new_tokens": 60, "temperature": 0, "ignore_eos": True}
    batch = gen.generate_batch([hundred, "Hello"], **settings)
    assert batch[0].tokens == full.tokens and batch[0].finish_reason == "context"
    assert batch[1].tokens == short.tokens and batch[1].finish_reason == "length"


def test_graph_optimum_keeps_optimum_graph(
    tiny_checkpoint: Path, tmp_path: Path, tiny_fused: Generator
) -> None:
    from gpt2_edge.exporter.cli import app
    from typer.testing import CliRunner

    out = tmp_path / "optimum"
    args = [str(tiny_checkpoint), "--output", str(out), "--graph", "optimum", "--no-verify"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "bundle.json").read_text())["graph"]["kind"] == "optimum"
    gen = load(out, provider="cpu", threads=1)
    assert not gen.session.shared_kv and isinstance(runner_for(gen.session), NumpyRunner)
    for prompt in PROMPTS[:2]:
        ours = gen.generate(prompt, max_new_tokens=16, temperature=0).tokens
        assert ours == tiny_fused.generate(prompt, max_new_tokens=16, temperature=0).tokens
    bad = CliRunner().invoke(app, [str(tiny_checkpoint), "-o", str(tmp_path / "x"), "--graph", "x"])
    assert bad.exit_code == 1 and "Unknown graph" in bad.output


def test_prefill_computes_only_each_rows_last_logits(trained_fused: Generator) -> None:
    session = trained_fused.session
    assert session.names.logits_index == "logits_index"
    prompts = [trained_fused.encode(p) for p in PROMPTS[:3]]
    decoder = SharedKVDecoder(session, pad_id=0, capacity=64)
    last = decoder.prefill(prompts)  # (B, V), from a (B, 1, V) output
    for row, ids in enumerate(prompts):
        full = session.logits(ids[None])  # the forward from scratch, every position
        assert full.shape[1] == len(ids)
        np.testing.assert_allclose(last[row], full[0, -1], atol=1e-4)


def test_bundles_without_logits_index_still_generate(tiny_fused: Generator, tmp_path: Path) -> None:
    """A fused graph from before ``logits_index`` (format v1 too) computes every position."""
    import onnx
    from gpt2_edge.runtime.contract.files import file_entry
    from gpt2_edge.runtime.contract.manifest import read_manifest, write_manifest

    src = tiny_fused.session.bundle.path
    dst = tmp_path / "v1"
    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    graph = model.graph
    gather = next(n for n in graph.node if n.op_type == "GatherND")
    head = next(n for n in graph.node if gather.output[0] in n.input)
    head.input[0] = gather.input[0]
    graph.node.remove(gather)
    graph.node.remove(next(n for n in graph.node if n.output[0] == gather.input[1]))
    graph.input.remove(next(i for i in graph.input if i.name == "logits_index"))
    onnx.save(model, str(dst / "model.onnx"))
    manifest = read_manifest(dst)
    manifest.files["model.onnx"] = file_entry(dst / "model.onnx")
    write_manifest(dst, manifest)
    data = json.loads((dst / "bundle.json").read_text())
    (dst / "bundle.json").write_text(json.dumps({**data, "format_version": 1}))  # as exported then
    old = load(dst, provider="cpu", threads=1)
    assert old.session.names.logits_index is None and old.session.shared_kv
    for prompt in PROMPTS[:2]:
        settings = {"max_new_tokens": 12, "temperature": 0}
        assert (
            old.generate(prompt, **settings).tokens
            == tiny_fused.generate(prompt, **settings).tokens
        )
    assert [r.tokens for r in old.generate_batch(PROMPTS[:2], max_new_tokens=8, temperature=0)] == [
        r.tokens for r in tiny_fused.generate_batch(PROMPTS[:2], max_new_tokens=8, temperature=0)
    ]
