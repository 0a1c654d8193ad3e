"""Text to token ids and back through the bundle's ``tokenizer.json`` (Hugging Face ``tokenizers``).

Streaming uses ``tokenizers.decoders.DecodeStream``, which holds back bytes until they form whole
UTF-8 characters, so a piece never ends in half an emoji.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cached_property

import numpy as np
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.decoders import DecodeStream

from ..errors import EdgeError

# Special tokens stay in the text (as transformers' decode does by default), so that a run with
# ignore_eos shows where the model wanted to stop.
SKIP_SPECIAL_TOKENS = False
# How far before a cut :meth:`Tokenizer.tail` looks for a word's start to cut at instead.
_CUT_SEARCH = 1024
# An ASCII whitespace character followed by a non-whitespace one (Python's \S is narrower than
# the tokenizer's, so this never finds a place the tokenizer would not split at).
_WORD_START = re.compile(r"[ \t\n\r\f\v](?=\S)")
# :meth:`Tokenizer.encode_long` tokenizes a long text in pieces of about this many characters:
# one call on WikiText-2's training set (10.8 MB) peaks at 1.6 GB (the Encoding keeps offsets and
# token strings), in 64K pieces at 0.2 GB, in the same 19 s and to the same ids.
_PIECE_CHARS = 1 << 16
# :meth:`Tokenizer.decode_unchecked` decodes a long list in pieces of about this many ids (the
# GIL is held about 4 ms for each).
_PIECE_IDS = 8192


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

    @cached_property
    def _longest_entry(self) -> int:
        """The longest vocabulary entry in characters: a copy of the vocabulary (20-30 ms for
        GPT-2's), made only for a prompt long enough to need :attr:`max_token_chars`."""
        return max(map(len, self._tok.get_vocab(with_added_tokens=True)), default=1)

    @cached_property
    def token_count(self) -> int:
        """How many distinct tokens there are, added ones included."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def max_token_chars(self) -> int | None:
        """The most characters of text one token can stand for, or None when unknown.

        A byte-level BPE token (GPT-2's) stands for at most as many bytes as its vocabulary entry
        has characters, and a character is at least one byte, so ``n`` tokens never cover more
        than ``n * max_token_chars`` characters. A tokenizer that normalizes text first (which may
        merge characters) gets None: no such bound holds for it.
        """
        if self._tok.normalizer is not None:
            return None
        return self._longest_entry

    def encode(self, text: str, add_special_tokens: bool = True) -> np.ndarray:
        """Token ids of ``text`` as a (T,) int64 array; EdgeError if it is not valid UTF-8.

        ``add_special_tokens=False`` skips the tokenizer's post-processor additions, as
        transformers' ``GPT2TokenizerFast(text)`` does (the perplexity evaluation needs that).

        A long text is tokenized in pieces of about :data:`_PIECE_CHARS`, cut only where GPT-2's
        pre-tokenizer starts a piece anyway (as :meth:`tail` cuts), so the ids are the same: one
        call peaks at ten times the memory (the Encoding keeps offsets and token strings) and
        holds the GIL throughout (seconds for a 4 MiB /tokenize, every other thread of a server
        stalled). A tokenizer that may not split there (a normalizer, another pre-tokenizer, a
        post-processor that adds tokens) gets one call.
        """
        if not isinstance(text, str):
            raise EdgeError(f"encode() takes a string, got {type(text).__name__}.")
        try:
            text.encode("utf-8")  # lone surrogates (from undecodable argv bytes) fail here
        except UnicodeEncodeError:
            raise EdgeError("The prompt is not valid UTF-8 text.") from None
        whole = len(text) <= _PIECE_CHARS or not self._splits_at_word_starts
        if whole or (add_special_tokens and self._adds_tokens):
            ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
            return np.asarray(ids, dtype=np.int64)
        pieces, start = [], 0
        while start < len(text):
            end = start + _PIECE_CHARS
            if end < len(text):  # the last word start before ``end``, else the first after it
                cuts = [m.start() for m in _WORD_START.finditer(text, end - _CUT_SEARCH, end)]
                later = None if cuts else _WORD_START.search(text, end)
                end = cuts[-1] if cuts else (later.start() if later else len(text))
            piece = self._tok.encode(text[start:end], add_special_tokens=False).ids
            pieces.append(np.asarray(piece, dtype=np.int64))
            start = end
        return np.concatenate(pieces)

    @cached_property
    def _adds_tokens(self) -> bool:
        """Whether the post-processor adds tokens (a start token, say): GPT-2's adds none."""
        return self._tok.encode("a").ids != self._tok.encode("a", add_special_tokens=False).ids

    @cached_property
    def _splits_at_word_starts(self) -> bool:
        """Whether the pre-tokenizer is GPT-2's: byte-level with its regex, no prefix space
        added, no normalizer before it."""
        from tokenizers.pre_tokenizers import ByteLevel

        pre = self._tok.pre_tokenizer
        return (
            self._tok.normalizer is None
            and isinstance(pre, ByteLevel)
            and pre.use_regex
            and not pre.add_prefix_space
        )

    def tail(self, text: str, size: int) -> str:
        """The end of ``text`` to tokenize when only its last tokens are wanted.

        At least the last ``size`` characters, starting at the last whitespace character that
        precedes a non-whitespace one within ``_CUT_SEARCH`` characters before them, when there
        is one. GPT-2's pre-tokenizer always starts a piece there, so the tail's tokens are then
        exactly the last tokens of the whole text. Without such a place (one word longer than
        the search) the tokens near the cut may differ; callers drop the tail's first token and
        keep only the last ones, far from the cut.
        """
        start = len(text) - size
        if start <= 0:
            return text
        low = max(0, start - _CUT_SEARCH)
        cuts = [m.start() for m in _WORD_START.finditer(text, low, start + 2)]
        return text[cuts[-1] :] if cuts else text[start:]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (special tokens kept).

        Raises:
            EdgeError: ``ids`` is not a list (or 1-D integer array) of ints in [0, token_count).
        """
        rule = f"decode() takes token ids, integers from 0 to {self.token_count - 1}"
        return self.decode_unchecked(token_id_array(ids, self.token_count, rule).tolist())

    def token_bytes(self, token_id: int) -> bytes | None:
        """The bytes one token stands for (None for an id the tokenizer lacks): a byte-level
        BPE token (GPT-2's) may hold part of a UTF-8 character, which its decoded text shows only
        as U+FFFD; its vocabulary entry maps back to the bytes themselves."""
        entry = self._tok.id_to_token(int(token_id))
        if entry is None:
            return None
        table = self._byte_of_char
        if table is not None and all(c in table for c in entry):
            return bytes(table[c] for c in entry)
        return self.decode_unchecked([int(token_id)]).encode("utf-8")  # whole characters

    @cached_property
    def _byte_of_char(self) -> dict[str, int] | None:
        """GPT-2's byte-to-character table inverted, for a byte-level decoder; else None."""
        from tokenizers.decoders import ByteLevel

        if not isinstance(self._tok.decoder, ByteLevel):
            return None
        # GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other
        # 68 bytes for the characters from U+0100 on, in byte order.
        kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
        shifted = [b for b in range(256) if b not in kept]
        table = {chr(b): b for b in kept}
        table.update({chr(256 + i): b for i, b in enumerate(shifted)})
        return table

    def decode_unchecked(self, ids: list[int]) -> str:
        """:meth:`decode` of ids already known to be ints (the model's own tokens); an id the
        tokenizer lacks (a model's padded vocabulary) decodes to nothing.

        A long list is decoded in pieces of about :data:`_PIECE_IDS`, each cut after a token
        that is whole UTF-8 characters (so the text is the same): one call holds the GIL
        throughout (0.25 s for 500,000 ids), which stalls every other thread of a server.
        """
        if len(ids) <= _PIECE_IDS or self._byte_of_char is None:
            return self._tok.decode(ids, skip_special_tokens=SKIP_SPECIAL_TOKENS)
        whole, pieces, start = self._whole_tokens, [], 0
        while start < len(ids):
            end = min(start + _PIECE_IDS, len(ids))
            while end < len(ids) and not (0 <= ids[end - 1] < len(whole) and whole[ids[end - 1]]):
                end += 1
            pieces.append(self._tok.decode(ids[start:end], skip_special_tokens=SKIP_SPECIAL_TOKENS))
            start = end
        return "".join(pieces)

    @cached_property
    def _whole_tokens(self) -> list[bool]:
        """For each id, whether its bytes are whole UTF-8 characters: after such a token a
        byte-level decode is at a character's end, so the text can be cut there."""

        def whole(token_id: int) -> bool:
            raw = self.token_bytes(token_id)
            try:
                return raw is not None and bool(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return False

        return [whole(i) for i in range(self.token_count)]

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
        self.ids.append(int(token_id))
        piece = self._stream.step(self._backend, token_id)
        if not piece:
            return ""
        self.text += piece
        return piece

    def finish(self) -> str:
        """Return whatever is still held back, so that the pieces add up to the full decode.

        Bytes that never completed a character decode to U+FFFD here, exactly as in ``decode``.
        """
        full = self._tokenizer.decode_unchecked(self.ids)
        if not full.startswith(self.text):
            # Only a decoder that rewrites earlier text could get here; the joined pieces would
            # then differ from the full decode, which callers rely on.
            raise RuntimeError("incremental decode diverged from the full decode")
        rest = full[len(self.text) :]
        self.text = full
        return rest


def token_id_array(ids: object, count: int, rule: str) -> np.ndarray:
    """``ids`` (a list, tuple or range of ints, or a 1-D integer array) as a (T,) int64 array
    of ids in [0, ``count``); otherwise EdgeError ``"{rule}, got ..."``. One vectorized check
    for an array, one cheap pass for a list."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise EdgeError(f"{rule}, got a {ids.ndim}-D {ids.dtype} array.")
        outside = ids[(ids < 0) | (ids >= count)]
        if outside.size:
            raise EdgeError(f"{rule}, got {_shown_id(outside[0])}.")
        return ids.astype(np.int64, copy=False)
    if not isinstance(ids, (list, tuple, range)):
        raise EdgeError(f"{rule}, got {type(ids).__name__}.")
    for i in ids:
        # bool is no token id; type() rather than isinstance keeps this pass cheap.
        if not (type(i) is int or isinstance(i, np.integer)) or not 0 <= i < count:
            raise EdgeError(f"{rule}, got {_shown_id(i)}.")
    return np.asarray(ids, dtype=np.int64)


def _shown_id(value: object) -> str:
    value = int(value) if isinstance(value, np.integer) else value
    return repr(value) if len(repr(value)) <= 30 else type(value).__name__
