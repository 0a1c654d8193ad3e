"""Bundles with the fused GQA graph (the exporter's default) driven through the shared KV buffer:
its manifest, the context end, logits at each row's last position only, bundles from before
``logits_index``, and the ``--graph optimum`` path that keeps Optimum's graph. (Greedy parity with
transformers: test_parity.py; batches: test_batch_invariance.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.runtime import Generator, load
from gpt2_edge.runtime.decoders.runners import NumpyRunner, runner_for
from gpt2_edge.runtime.decoders.shared import SharedKVDecoder
from support.reference import PROMPTS

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def tiny_fused(tiny_bundle: Path) -> Generator:
    return load(tiny_bundle, provider="cpu", threads=1)


@pytest.fixture(scope="module")
def trained_fused(shipped_bundles) -> Generator:
    """The shipped fp32 bundle (gpt2-export's defaults) of the trained fixture."""
    return shipped_bundles.load("fp32")


def test_manifest_says_shared_buffer(tiny_fused: Generator) -> None:
    graph = tiny_fused.manifest.graph
    assert graph["kind"] == "fused-gqa" and graph["kv_cache"] == "shared-buffer"
    assert graph["padding"] == "right"
    assert graph["parity_vs_optimum"]["max_abs_logit_diff"] <= 1e-3
    assert tiny_fused.session.shared_kv


@pytest.mark.usefixtures("gpt2_vocabulary")  # "word" is one token
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
    shipped_bundles, trained_fused: Generator, tmp_path: Path
) -> None:
    from gpt2_edge.exporter.cli import app
    from typer.testing import CliRunner

    out = shipped_bundles["optimum-fp32"]  # gpt2-export --graph optimum
    assert json.loads((out / "bundle.json").read_text())["graph"]["kind"] == "optimum"
    gen = shipped_bundles.load("optimum-fp32")
    assert not gen.session.shared_kv and isinstance(runner_for(gen.session), NumpyRunner)
    for prompt in PROMPTS[:2]:
        ours = gen.generate(prompt, max_new_tokens=16, temperature=0).tokens
        assert ours == trained_fused.generate(prompt, max_new_tokens=16, temperature=0).tokens
    source = str(shipped_bundles.source)
    bad = CliRunner().invoke(app, [source, "-o", str(tmp_path / "x"), "--graph", "x"])
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
