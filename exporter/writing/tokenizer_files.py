"""Write the bundle's ``tokenizer.json`` (Hugging Face ``tokenizers`` format).

Older GPT-2 checkpoints ship only the slow tokenizer's ``vocab.json`` + ``merges.txt``; for those
the same byte-level BPE is built here with the ``tokenizers`` library.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ExportError

EOS_TOKEN = "<|endoftext|>"


def write_tokenizer(checkpoint: Path, target: Path) -> Path:
    """Copy or build ``tokenizer.json`` for ``checkpoint`` at ``target``."""
    existing = checkpoint / "tokenizer.json"
    if existing.is_file():
        shutil.copyfile(existing, target)
        return target
    vocab, merges = _slow_files(checkpoint)
    build_tokenizer(vocab, merges).save(str(target))
    return target


def check_tokenizer(checkpoint: Path) -> None:
    """Load the checkpoint's tokenizer files once, so a missing or broken one fails before the
    slow steps (in about 0.1 s) instead of after them."""
    existing = checkpoint / "tokenizer.json"
    files = (existing,) if existing.is_file() else _slow_files(checkpoint)
    for path in files:
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            reason = exc.strerror or exc
            raise ExportError(f"The tokenizer file {path} cannot be read ({reason}).") from None
    try:
        if existing.is_file():
            from tokenizers import Tokenizer

            Tokenizer.from_file(str(existing))
        else:
            build_tokenizer(*files)
    except Exception as exc:  # tokenizers raises plain Exception for files it cannot parse
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        names = " and ".join(str(p) for p in files)
        verb = "file is" if len(files) == 1 else "files are"
        raise ExportError(f"The tokenizer {verb} not valid: {names} ({detail}).") from None


def _slow_files(checkpoint: Path) -> tuple[Path, Path]:
    vocab, merges = checkpoint / "vocab.json", checkpoint / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise ExportError(
            f"{checkpoint} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)."
        )
    return vocab, merges


def build_tokenizer(vocab: Path, merges: Path):  # -> tokenizers.Tokenizer
    """GPT-2's byte-level BPE, as ``GPT2TokenizerFast`` builds it from the same two files."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    tokenizer = Tokenizer(BPE.from_file(str(vocab), str(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    if tokenizer.token_to_id(EOS_TOKEN) is not None:
        tokenizer.add_special_tokens([AddedToken(EOS_TOKEN, special=True, normalized=False)])
    return tokenizer
