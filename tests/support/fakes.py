"""Stand-ins for the runtime's tests: :class:`FakeSession` for ``Session`` (the growing-past
decoder drives it; no onnxruntime graph), :func:`patch_cli_load` makes ``gpt2-generate`` load a
fake generator whatever ``--model`` names, and :class:`Spy` counts drafted tokens."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime import EdgeError, Generator, Tokenizer
from gpt2_edge.runtime.contract.bundle import Bundle
from gpt2_edge.runtime.contract.manifest import Architecture, Manifest
from gpt2_edge.runtime.graph.names import GraphNames

VOCAB = 50257
EOS = 50256


# The next token is a hash of the real (unpadded) history and positions.


class FakeSession:
    """Stands in for Session. The KV "cache" stores (token, position) per cached column, so the
    logits can only come out right if past, mask and position ids are fed consistently."""

    def __init__(
        self,
        context: int = 64,
        script: dict[int, int] | None = None,
        eos_at: dict[int, int] | None = None,
    ):
        self.arch = Architecture(1, 1, 2, 2, context, VOCAB)
        manifest = Manifest("fake", self.arch, special_tokens={"eos": EOS, "bos": EOS, "pad": EOS})
        self.bundle = Bundle(Path("."), manifest)
        self.notices: list[str] = []
        self.shared_kv = False  # Optimum's graph: the growing-past decoder and its runner
        self.provider, self.io_binding, self.kv_dtype = "cpu", False, np.dtype(np.float32)
        self.names = GraphNames("i", "m", "p", ("k", "v"), ("l", "pk", "pv"))
        self.ort = self  # the decoder's runner calls run(outputs, feeds) on it
        self.script = script or {}  # generated-count -> forced token, to plant EOS and words
        self.eos_at = eos_at or {}  # first prompt token -> generated-count where that row ends
        self.calls: list[dict[str, Any]] = []

    def run_failed(self, exc: Exception, position_ids: np.ndarray) -> EdgeError:
        return EdgeError(f"the fake graph failed: {exc}")

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """onnxruntime's ``InferenceSession.run`` as the numpy runner calls it."""
        logits, present = self.step(feeds["i"], feeds["m"], feeds["p"], [feeds["k"], feeds["v"]])
        return [logits, *present]

    def step(self, ids, mask, positions, past):  # noqa: ANN001, ANN201 (one call of the graph)
        batch, width = ids.shape
        assert mask.shape == (batch, past[0].shape[2] + width)
        new = np.stack([ids, positions], axis=-1)[:, None].astype(np.float32)  # (B, 1, T, 2)
        present = np.concatenate([past[0], new], axis=2)
        if past[0].shape[2] == 0:  # a new generation
            self.calls = []
        self.calls.append({"past_len": past[0].shape[2], "width": width, "past": past[0]})
        live = mask[:, None, :, None].astype(bool)  # (B, 1, L, 1)
        tok, pos = present[..., 0], present[..., 1]
        score = np.where(live[..., 0], (tok * 7 + pos * 3 + 1) % 977, 0).sum(axis=(1, 2))  # (B,)
        nxt = (score.astype(np.int64) * 31 + 11) % 5000 + 200
        generated = len(self.calls) - 1
        if generated in self.script:
            nxt[:] = self.script[generated]
        for row in range(batch):
            first = int(tok[row, 0][live[row, 0, :, 0]][0])
            if self.eos_at.get(first) == generated:
                nxt[row] = EOS
        logits = np.zeros((batch, width, VOCAB), dtype=np.float32)
        logits[np.arange(batch), -1, nxt] = 5.0
        return logits, [present, present.copy()]


def patch_cli_load(
    monkeypatch: pytest.MonkeyPatch,
    cli_module: Any,
    make: Callable[[], Generator],
    asked: list[Path] | None = None,
) -> None:
    """Make ``gpt2-generate`` (``cli_module``) load ``make()``'s fake generator whatever --model
    names (a name that is no bundle included); the paths it loads are appended to ``asked``.
    Without --model the command picks from models/ as it does."""
    pick = cli_module.pick_model

    def pick_model(model: Any, provider: Any) -> tuple[Path, Any, str | None]:
        try:
            return pick(model, provider)
        except EdgeError as exc:  # a name that is no bundle: the fake loads anyway
            if model is None or exc.field != "model":
                raise
            return Path(model), provider, None

    def load(path: Path, *_args: Any, **_kw: Any) -> Generator:
        if asked is not None:
            asked.append(Path(path))
        return make()

    monkeypatch.setattr(cli_module, "pick_model", pick_model)
    monkeypatch.setattr(cli_module, "load", load)


def fake_generator(tokenizer: Tokenizer, **kwargs: Any) -> Generator:
    return Generator(FakeSession(**kwargs), tokenizer)  # type: ignore[arg-type]


class Spy:
    """Counts drafted tokens fed and accepted through a decoder's rollback (``steps``: the
    module ``gpt2_edge.runtime.generation.steps``, whose ``TokenSteps._verify`` it wraps)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, steps: Any) -> None:
        self.fed = self.rejected = 0
        original = steps.TokenSteps._verify

        def verify(this: Any, drafts: list[np.ndarray]) -> Any:  # this: a TokenSteps
            tokens, raw = original(this, drafts)
            width = 1 + max(d.size for d in drafts)
            self.fed += (width - 1) * len(tokens)
            self.rejected += sum(width - len(t) for t in tokens)
            return tokens, raw

        monkeypatch.setattr(steps.TokenSteps, "_verify", verify)

    @property
    def accepted(self) -> int:
        return self.fed - self.rejected
