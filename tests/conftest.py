"""Shared fixtures: tiny random GPT-2 checkpoints, their exports, and paths into ../shared.

Everything that needs torch/transformers/optimum skips when the export extra is missing, and
everything that needs ../shared skips with a reason when that folder is absent.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HAS_EXPORT_EXTRA = all(
    importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "optimum", "onnx")
)
TINY_CONFIG = dict(n_layer=2, n_embd=64, n_head=4, n_positions=128)


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
    """The runtime remembers hashed files under ~/.cache (``runtime/verified.py``); tests keep
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


def train_small_bpe(texts: list[str], vocab_size: int):  # -> tokenizers.Tokenizer
    """A GPT-2-style byte-level BPE trained on ``texts``, with ``<|endoftext|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def _train_small_bpe(folder: Path) -> int:
    """A byte-level BPE trained on a few sentences, for when the real GPT-2 files are absent."""
    text = ["The quick brown fox jumps over the lazy dog. " * 4, "Hello world, this is a test."]
    tok = train_small_bpe(text, 400)
    tok.model.save(str(folder))  # vocab.json + merges.txt, which GPT2TokenizerFast reads
    return tok.get_vocab_size()


def make_checkpoint(folder: Path, seed: int = 0, **overrides) -> Path:
    """Save a randomly initialised GPT2LMHeadModel plus tokenizer files into ``folder``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    real = SHARED / "gpt2-tokenizer"
    if real.exists():
        for name in ("vocab.json", "merges.txt"):
            (folder / name).write_bytes((real / name).read_bytes())
        vocab = 50257
    else:
        vocab = _train_small_bpe(folder)
    tokenizer = GPT2TokenizerFast(
        vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt")
    )
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=vocab, bos_token_id=eos, eos_token_id=eos, **{**TINY_CONFIG, **overrides}
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": eos, "eos_token_id": eos, "max_new_tokens": 20})
    )
    return folder


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
