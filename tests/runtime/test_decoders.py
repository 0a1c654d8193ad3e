"""The Decoder interface on both backends, without torch: every call (prefill, decode of one or
several tokens, rollback, reorder, drop, add, growth) must leave each row's logits equal to a
forward over that row's whole history from scratch.

The fused graph (the default path) is built from random weights with onnx and numpy; the
growing-past backend runs on the fake session of ``support/fakes.py``, whose logits can only
come out right when past, mask and positions agree.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.decoders.interface import Decoder, open_decoder
from gpt2_edge.runtime.decoders.past import PastDecoder
from gpt2_edge.runtime.decoders.shared import SharedKVDecoder
from gpt2_edge.runtime.graph.session import Session
from support.fakes import FakeSession
from support.fused_bundle import build_fused_bundle

needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None, reason="building the fused graph needs onnx"
)


def tiny_session(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, **kw) -> Session:
    """The random 2-layer fused bundle of ``support/fused_bundle.py``, opened on the CPU."""
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("building the fused graph needs onnx")
    folder = tmp_path_factory.mktemp("fused") / "tiny"
    build_fused_bundle(folder, tokenizer_dir / "tokenizer.json", **kw)
    return Session(load_bundle(folder), provider="cpu", threads=1)


@pytest.fixture(scope="module")
def fused_session(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Session:
    return tiny_session(tmp_path_factory, gpt2_tokenizer_dir)


Reference = Callable[[list[int]], np.ndarray]  # a history -> logits at its last token (V,)


def fused_reference(session: Session) -> Reference:
    return lambda history: session.logits(np.array([history]))[0, -1]


def fake_reference(session: FakeSession) -> Reference:
    def last(history: list[int]) -> np.ndarray:
        return PastDecoder(session, 0).prefill([np.array(history)])[0]  # type: ignore[arg-type]

    return last


class Checker:
    """Drives a decoder beside plain lists of tokens, and checks every logit it returns."""

    def __init__(self, decoder: Decoder, reference: Reference, every_position: bool):
        self.decoder, self.reference, self.every = decoder, reference, every_position
        self.histories: list[list[int]] = []
        self.rng = np.random.default_rng(7)

    def check(self, logits: np.ndarray, rows: range | list[int], count: int = 1) -> None:
        for j, row in enumerate(rows):
            history = self.histories[row]
            offsets = range(count) if self.every else [count - 1]
            for k in offsets:
                want = self.reference(history[: len(history) - count + k + 1])
                got = logits[j] if logits.ndim == 2 else logits[j, k]
                np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
        assert self.decoder.lengths.tolist() == [len(h) for h in self.histories]

    def prompts(self, lengths: list[int]) -> list[np.ndarray]:
        return [self.rng.integers(200, 5000, n) for n in lengths]

    def start(self, lengths: list[int]) -> None:
        prompts = self.prompts(lengths)
        self.histories = [p.tolist() for p in prompts]
        self.check(self.decoder.prefill(prompts), range(len(prompts)))

    def decode(self, count: int) -> None:
        tokens = self.rng.integers(200, 5000, (len(self.histories), count))
        for history, new in zip(self.histories, tokens.tolist(), strict=True):
            history.extend(new)
        self.check(self.decoder.decode(tokens), range(len(self.histories)), count)

    def rollback(self, counts: list[int]) -> None:
        self.decoder.rollback(counts)
        for history, count in zip(self.histories, counts, strict=True):
            del history[len(history) - count :]

    def reorder(self, index: list[int]) -> None:
        self.decoder.reorder(index)
        self.histories = [list(self.histories[i]) for i in index]

    def drop(self, rows: list[int]) -> None:
        self.decoder.drop(rows)
        self.histories = [h for i, h in enumerate(self.histories) if i not in rows]

    def add(self, lengths: list[int]) -> None:
        prompts = self.prompts(lengths)
        first = len(self.histories)
        self.histories += [p.tolist() for p in prompts]
        self.check(self.decoder.add(prompts), range(first, len(self.histories)))


def run_script(checker: Checker) -> None:
    checker.start([5, 9, 3])
    checker.decode(1)
    checker.decode(1)
    checker.decode(3)  # several tokens per row at once (drafting)
    checker.rollback([2, 0, 3])  # forget rejected drafts, a different number per row
    checker.decode(1)
    checker.reorder([2, 2, 0])  # beams: rows copied, one twice
    checker.decode(1)
    checker.drop([1])
    checker.add([7, 2])  # a server joins requests into the running batch
    checker.decode(1)
    checker.decode(2)
    checker.rollback([1, 1, 0, 2])
    checker.drop([0, 2])
    checker.decode(1)
    checker.add([4])
    for _ in range(12):  # past the first allocation of the shared buffers: they grow
        checker.decode(3)


@pytest.fixture(scope="module")
def half_kv_session(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Session:
    """The same kind of graph with the exporter's float16 KV cache
    (``exporter/edits/kv_cache.py``)."""
    return tiny_session(tmp_path_factory, gpt2_tokenizer_dir, half_kv=True)


@needs_onnx
@pytest.mark.parametrize("chunk", [256, 4], ids=["one-call-prefill", "chunked-prefill"])
@pytest.mark.parametrize("shared_buffers", [True, False], ids=["cpu-views", "device-path"])
def test_shared_buffer_decoder_follows_every_call(
    fused_session: Session, shared_buffers: bool, chunk: int
) -> None:
    """Chunks of 4 tokens: every prompt of the script but one is prefilled in several calls."""
    decoder = SharedKVDecoder(
        fused_session, pad_id=0, capacity=16, shared_buffers=shared_buffers, prefill_chunk=chunk
    )
    run_script(Checker(decoder, fused_reference(fused_session), every_position=True))
    assert decoder.capacity > 16


@needs_onnx
def test_a_float16_cache_follows_every_call(half_kv_session: Session) -> None:
    """The float16 cache gives, step by step, the logits of a from-scratch forward of the same
    graph (both round the keys and values to float16 alike)."""
    assert half_kv_session.kv_dtype == np.float16
    decoder = SharedKVDecoder(half_kv_session, pad_id=0, capacity=16, prefill_chunk=4)
    run_script(Checker(decoder, fused_reference(half_kv_session), every_position=True))
    assert decoder._buffers is not None and decoder._buffers.read()[0].dtype == np.float16


def test_growing_past_decoder_follows_every_call() -> None:
    session = FakeSession(context=128)
    decoder = PastDecoder(session, pad_id=0)  # type: ignore[arg-type]
    # The fake puts logits at the last position only, so only those are compared.
    run_script(Checker(decoder, fake_reference(session), every_position=False))


@needs_onnx
def test_open_decoder_picks_the_backend_the_graph_wants(fused_session: Session) -> None:
    assert isinstance(open_decoder(fused_session, 0, 8), SharedKVDecoder)
    assert isinstance(open_decoder(FakeSession(), 0, 8), PastDecoder)  # type: ignore[arg-type]


@needs_onnx
def test_dropping_half_the_rows_packs_the_buffers(fused_session: Session) -> None:
    decoder = SharedKVDecoder(fused_session, pad_id=0, capacity=16)
    checker = Checker(decoder, fused_reference(fused_session), every_position=True)
    checker.start([3, 4, 5, 6])
    checker.drop([0])  # one slot of four free: kept, fed a pad token
    assert decoder._lengths.size == 4
    checker.decode(1)
    checker.add([2])  # fills the free slot: no copy of the others
    assert decoder._lengths.size == 4
    checker.drop([0, 1, 3])
    assert decoder._lengths.size == 1  # a quarter live: packed
    checker.decode(2)
