"""Shared fixtures: tiny random GPT-2 checkpoints, their exports, and paths into ../shared.

Everything that needs torch/transformers/optimum skips when the export extra is missing, and
everything that needs ../shared skips with a reason when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import HAS_EXPORT_EXTRA, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_export = pytest.mark.skip(reason="needs the export extra: pip install '.[export]'")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "export" in item.keywords and not HAS_EXPORT_EXTRA:
            item.add_marker(skip_export)


@pytest.fixture(scope="session", autouse=True)
def _verified_records_in_a_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The runtime remembers hashed files under ~/.cache (``runtime/contract/verified.py``);
    tests keep
    those records (and every subprocess's, through the environment) in a folder of their own."""
    import os

    os.environ["GPT2_EDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("verified-records"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    """The real GPT-2 BPE files (vocab.json, merges.txt, tokenizer.json)."""
    return _need(SHARED / "gpt2-tokenizer")


@pytest.fixture(scope="session")
def trained_fixture_dir() -> Path:
    """The small GPT-2 trained on WikiText-2 (4 layers, 128 wide, real vocabulary)."""
    return _need(SHARED / "fixtures" / "gpt2-wikitext-tiny")


@pytest.fixture(scope="session")
def wikitext_dir() -> Path:
    return _need(SHARED / "data" / "wikitext-2")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 64-wide GPT-2 checkpoint folder (transformers format)."""
    if not HAS_EXPORT_EXTRA:
        pytest.skip("needs the export extra: pip install '.[export]'")
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_optimum_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Optimum text-generation-with-past export of ``tiny_checkpoint``."""
    from optimum.exporters.onnx import main_export

    out = tmp_path_factory.mktemp("optimum") / "tiny-gpt2-onnx"
    main_export(str(tiny_checkpoint), output=out, task="text-generation-with-past")
    return out
