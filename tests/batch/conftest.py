"""The batch command's tests share one model: the random 2-layer fused bundle of
``fused_bundle.py`` (onnx and numpy, no torch), built once per session, and a generator on it.
Helpers are in ``batch_support.py``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

# The server's test helpers (a server on a free loopback port in a thread): the results of
# gpt2-batch are compared with the server's own answers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))


@pytest.fixture(scope="session")
def bundle(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("building the fused graph needs onnx")
    from support.fused_bundle import build_fused_bundle

    folder = tmp_path_factory.mktemp("batch") / "tiny"
    return build_fused_bundle(folder, gpt2_tokenizer_dir / "tokenizer.json")


@pytest.fixture(scope="session")
def gen(bundle: Path) -> Any:
    from gpt2_edge.runtime import load

    return load(bundle, provider="cpu", threads=1)
