"""The server's tests share one model: the random 2-layer fused bundle of
``support/fused_bundle.py``
(onnx and numpy, no torch), built once per module, and a generator on it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from gpt2_edge.runtime import Generator, load


@pytest.fixture(scope="module")
def bundle(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("building the fused graph needs onnx")
    from support.fused_bundle import build_fused_bundle

    folder = tmp_path_factory.mktemp("serve") / "tiny"
    return build_fused_bundle(folder, gpt2_tokenizer_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def gen(bundle: Path) -> Generator:
    return load(bundle, provider="cpu", threads=1)
