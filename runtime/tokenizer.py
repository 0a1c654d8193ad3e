"""Text to token ids and back through the bundle's ``tokenizer.json`` (Hugging Face ``tokenizers``).

Streaming uses ``tokenizers.decoders.DecodeStream``, which holds back bytes until they form whole
UTF-8 characters, so a piece never ends in half an emoji.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.decoders import DecodeStream

from .errors import EdgeError

# Special tokens stay in the text (as transformers' decode does by default), so that a run with
# ignore_eos shows where the model wanted to stop.
SKIP_SPECIAL_TOKENS = False


class Tokenizer:
    """Encode and decode with one ``tokenizer.json``.

    Args:
        path: the ``tokenizer.json`` file.
    """

    def __init__(self, path: str | os.PathLike[str]):
        try:
            self._tok = _HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise EdgeError(f"{path} cannot be read as a tokenizer ({exc}).") from None

    @property
    def backend(self) -> _HFTokenizer:
        """The underlying ``tokenizers.Tokenizer``."""
        return self._tok

    def encode(self, text: str, add_special_tokens: bool = True) -> np.ndarray:
        """Token ids of ``text`` as a (T,) int64 array; EdgeError if it is not valid UTF-8.

        ``add_special_tokens=False`` skips the tokenizer's post-processor additions, as
        transformers' ``GPT2TokenizerFast(text)`` does (the perplexity evaluation needs that).
        """
        try:
            text.encode("utf-8")  # lone surrogates (from undecodable argv bytes) fail here
        except UnicodeEncodeError:
            raise EdgeError("The prompt is not valid UTF-8 text.") from None
        ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (special tokens kept)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=SKIP_SPECIAL_TOKENS)

    def stream(self) -> TextStream:
        """A fresh incremental detokenizer."""
        return TextStream(self)


class TextStream:
    """Incremental detokenizer: :meth:`push` one id at a time, :meth:`finish` at the end.

    The pieces returned by ``push`` and ``finish`` join to exactly ``decode(all ids)``, and no piece
    ends inside a multi-byte character.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._backend = tokenizer.backend
        self._stream = DecodeStream(skip_special_tokens=SKIP_SPECIAL_TOKENS)
        self.ids: list[int] = []
        self.text = ""  # everything returned so far

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text ("" while a character is incomplete)."""
        self.ids.append(token_id)
        piece = self._stream.step(self._backend, token_id)
        if not piece:
            return ""
        self.text += piece
        return piece

    def finish(self) -> str:
        """Return whatever is still held back, so that the pieces add up to the full decode.

        Bytes that never completed a character decode to U+FFFD here, exactly as in ``decode``.
        """
        full = self._tokenizer.decode(self.ids)
        if not full.startswith(self.text):
            # Only a decoder that rewrites earlier text could get here; the joined pieces would
            # then differ from the full decode, which callers rely on.
            raise RuntimeError("incremental decode diverged from the full decode")
        rest = full[len(self.text) :]
        self.text = full
        return rest
