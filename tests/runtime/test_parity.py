"""The runtime against transformers: greedy parity through the KV cache on every kind of model
folder it reads (the shipped bundles of both graphs, a plain Optimum export, the tiny model's),
the context bound, the IO-binding path, a manifest bundle, and generation in a process that cannot
import torch, transformers or optimum. Needs the export extra (to make the models and the
reference). A batch's rows against each alone: test_batch_invariance.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gpt2_edge.runtime import EdgeError, Generator, load
from gpt2_edge.runtime.contract.bundle import load_bundle, manifest_from_optimum
from gpt2_edge.runtime.contract.files import file_entry
from gpt2_edge.runtime.contract.manifest import write_manifest
from gpt2_edge.runtime.decoders.runners import BindingRunner, runner_for
from gpt2_edge.runtime.graph.session import Session
from support.reference import NEW, PROMPTS, transformers_greedy

pytestmark = pytest.mark.export

# Each kind of model folder the runtime reads -> the fixture of the checkpoint it came from.
KINDS = {
    "shipped-fp32": "trained_fixture_dir",  # gpt2-export's default: the fused graph
    "shipped-optimum-fp32": "trained_fixture_dir",  # gpt2-export --graph optimum
    "trained-optimum-folder": "trained_fixture_dir",  # a plain Optimum export, no bundle.json
    "tiny-fused": "tiny_checkpoint",
    "tiny-optimum-folder": "tiny_checkpoint",
}
SHARED_BUFFER = {"shipped-fp32", "tiny-fused"}  # the fused graph's KV cache; else a growing past


@pytest.fixture(scope="session")
def trained(trained_optimum_folder: Path) -> Generator:
    return load(trained_optimum_folder, provider="cpu", threads=1)


@pytest.fixture(scope="session")
def tiny(tiny_optimum_export: Path) -> Generator:
    return load(tiny_optimum_export, provider="cpu", threads=1)


def generator(kind: str, request: pytest.FixtureRequest) -> Generator:
    if kind.startswith("shipped-"):
        return request.getfixturevalue("shipped_bundles").load(kind.removeprefix("shipped-"))
    if kind == "tiny-fused":
        return load(request.getfixturevalue("tiny_bundle"), provider="cpu", threads=1)
    return request.getfixturevalue(kind.split("-")[0])


@pytest.mark.parametrize("kind", list(KINDS))
def test_greedy_equals_transformers(kind: str, request: pytest.FixtureRequest) -> None:
    gen = generator(kind, request)
    assert gen.session.shared_kv == (kind in SHARED_BUFFER)
    checkpoint = request.getfixturevalue(KINDS[kind])
    for prompt in [*PROMPTS, ""]:
        result = gen.generate(prompt, max_new_tokens=NEW, temperature=0)
        expected = transformers_greedy(checkpoint, gen.encode(prompt), NEW)
        assert result.tokens == expected, prompt
        assert result.finish_reason == ("eos" if expected[-1] == gen.eos_id else "length")
        assert result.text == gen.tokenizer.decode(
            [t for t in result.tokens if t != gen.eos_id or result.finish_reason != "eos"]
        )


def test_binding_runner_matches_numpy_runner(trained: Generator) -> None:
    """The CUDA code path (IO binding, cache as OrtValues), run on the CPU device."""
    first = trained.generate(PROMPTS[0], max_new_tokens=16, temperature=0)
    stop = trained.tokenizer.decode(first.tokens[3:5])  # row 0 stops early: the batch shrinks
    settings = {"max_new_tokens": 16, "temperature": 0, "stop": stop}
    expected = [trained.generate(p, **settings) for p in PROMPTS[:3]]
    session = Session(trained.session.bundle, provider="cpu", threads=1, io_binding=True)
    assert isinstance(runner_for(session), BindingRunner)
    batch = Generator(session, trained.tokenizer).generate_batch(PROMPTS[:3], **settings)
    assert [(r.tokens, r.text) for r in batch] == [(r.tokens, r.text) for r in expected]
    assert {r.finish_reason for r in batch} == {"stop", "length"}


@pytest.mark.usefixtures("gpt2_vocabulary")  # "word" is one token
def test_context_bound_on_tiny_model(tiny: Generator) -> None:
    assert tiny.context_length == 128
    long_prompt = " ".join(["word"] * 200)
    with pytest.raises(EdgeError, match="context is 128"):
        tiny.generate(long_prompt, max_new_tokens=4)
    kept = tiny.generate(long_prompt, max_new_tokens=8, truncate="left", temperature=0)
    assert kept.prompt_tokens == 120 and len(kept.tokens) == 8  # room for the 8 new tokens
    ids = tiny.encode(long_prompt)
    alone = tiny.generate(tiny.tokenizer.decode(ids[-120:]), max_new_tokens=8, temperature=0)
    assert kept.tokens == alone.tokens
    hundred = " ".join(["word"] * 100)
    full = tiny.generate(hundred, max_new_tokens=100, temperature=0, ignore_eos=True)
    assert full.finish_reason == "context"
    assert full.prompt_tokens + len(full.tokens) == 128


def test_manifest_bundle_and_hash_check(tiny_optimum_export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(tiny_optimum_export, folder)
    manifest = manifest_from_optimum(folder)
    manifest.files = {n: file_entry(folder / n) for n in ("model.onnx", "tokenizer.json")}
    manifest.generation = {"max_new_tokens": 5, "temperature": 0.0}
    write_manifest(folder, manifest)
    result = load(folder, provider="cpu").generate("Hello")
    assert len(result.tokens) == 5  # the bundle's defaults apply
    assert load_bundle(folder).manifest.name == "bundle"
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(EdgeError, match="SHA-256"):
        load(folder)


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "optimum"}:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_runtime_never_imports_torch(tiny_optimum_export: Path, tiny: Generator) -> None:
    """Generation where torch, transformers and optimum cannot be imported gives what it gives
    here (whose greedy tokens test_greedy_equals_transformers checks)."""
    settings = "max_new_tokens=8, temperature=0, ignore_eos=True"
    code = BLOCKER + (
        "import json, sys\n"
        "from gpt2_edge.runtime import load\n"
        "from gpt2_edge.runtime.cli import generate  # the CLI's imports too\n"
        f"r = load({str(tiny_optimum_export)!r}, provider='cpu').generate('Hi', {settings})\n"
        "blocked = {'torch', 'transformers', 'optimum'}\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in blocked]\n"
        "print(json.dumps({'tokens': r.tokens, 'text': r.text, 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["heavy"] == []
    here = tiny.generate("Hi", max_new_tokens=8, temperature=0, ignore_eos=True)
    assert (data["tokens"], data["text"]) == (here.tokens, here.text) and len(here.tokens) == 8


def test_exporter_bundle_generates_like_the_optimum_export(
    tiny_bundle: Path, tiny: Generator
) -> None:
    bundle = load(tiny_bundle, provider="cpu", threads=1)
    for prompt in PROMPTS[:2]:
        ours = bundle.generate(prompt, max_new_tokens=16, temperature=0).tokens
        assert ours == tiny.generate(prompt, max_new_tokens=16, temperature=0).tokens
