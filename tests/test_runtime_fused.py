"""Bundles with the fused GQA graph (the exporter's default) driven through the shared KV buffer:
greedy parity with transformers, right-padded batches, the context end, and the ``--graph
optimum`` path that keeps Optimum's graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpt2_edge.runtime import Generator, load
from gpt2_edge.runtime.session import NumpyRunner
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
    batch = gen.generate(PROMPTS, max_new_tokens=24, temperature=0)
    assert [r.tokens for r in batch] == [r.tokens for r in alone]
    # A row that stops early stays in the batch, frozen; the others must not notice.
    stop = gen.tokenizer.decode(alone[0].tokens[3:5])
    settings = {"max_new_tokens": 24, "temperature": 0, "stop": stop}
    expected = [gen.generate(p, **settings) for p in PROMPTS]
    batch = gen.generate(PROMPTS, **settings)
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
    batch = gen.generate([hundred, "Hello"], max_new_tokens=60, temperature=0, ignore_eos=True)
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
    assert not gen.session.shared_kv and isinstance(gen.session.runner, NumpyRunner)
    for prompt in PROMPTS[:2]:
        ours = gen.generate(prompt, max_new_tokens=16, temperature=0).tokens
        assert ours == tiny_fused.generate(prompt, max_new_tokens=16, temperature=0).tokens
    bad = CliRunner().invoke(app, [str(tiny_checkpoint), "-o", str(tmp_path / "x"), "--graph", "x"])
    assert bad.exit_code == 1 and "Unknown graph" in bad.output
