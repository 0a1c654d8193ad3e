"""Tiny GPT-2 checkpoints and tokenizers for tests, built from scratch (needs the export extra).

A plain module, not conftest.py: test modules import these (``from support.tiny_models import
...``), and ``conftest`` is a name that every conftest.py in the tree would claim.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
HAS_EXPORT_EXTRA = all(
    importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "optimum", "onnx")
)
TINY_CONFIG = dict(n_layer=2, n_embd=64, n_head=4, n_positions=128)


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
