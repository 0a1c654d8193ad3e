"""Check the finished bundle against the transformers model it came from.

The bundle is run through the runtime's own paths (onnxruntime, not PyTorch): the forward from
scratch that scoring uses, and the decoder that generation uses (prefill, a chunk with past, a
one-token decode step), so every path users run is covered. fp32 must match PyTorch to
``FP32_TOLERANCE``; int8 is
only measured (max logit difference, top-1 agreement, perplexity) and the figures are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.decoders.interface import open_decoder
from gpt2_edge.runtime.generation.evaluate import target_nll
from gpt2_edge.runtime.graph.session import Session

from ..errors import ExportError

FP32_TOLERANCE = 1e-3  # max absolute logit difference between the fp32 bundle and PyTorch
MIN_PROMPT_TOKENS = 3  # prefill, chunk and decode need one token each
# one prompt a line, "\\n" = newline
PROMPTS_FILE = Path(__file__).parents[1] / "data" / "prompts.txt"


def prompts() -> list[str]:
    text = PROMPTS_FILE.read_text(encoding="utf-8")
    return [line.replace("\\n", "\n") for line in text.splitlines() if line.strip()]


@dataclass
class Tally:
    """Running comparison figures over every position of every prompt."""

    max_diff: float = 0.0
    sum_diff: float = 0.0
    values: int = 0
    positions: int = 0
    top1_same: int = 0
    nll: dict[str, list[float]] = field(default_factory=lambda: {"bundle": [], "reference": []})

    def add(self, ours: np.ndarray, ref: np.ndarray, ids: list[int]) -> None:  # (T, V) each
        diff = np.abs(ours - ref)
        self.max_diff = max(self.max_diff, float(diff.max()))
        self.sum_diff += float(diff.sum())
        self.values += diff.size
        self.positions += ours.shape[0]
        self.top1_same += int((ours.argmax(-1) == ref.argmax(-1)).sum())
        tokens = np.asarray(ids, dtype=np.int64)
        for key, logits in (("bundle", ours), ("reference", ref)):
            self.nll[key].extend(target_nll(logits, tokens, 1))

    def figures(self) -> dict[str, Any]:
        return {
            "positions": self.positions,
            "max_abs_logit_diff": self.max_diff,
            "mean_abs_logit_diff": self.sum_diff / max(self.values, 1),
            "top1_agreement": self.top1_same / max(self.positions, 1),
            "perplexity": {k: float(np.exp(np.mean(v))) for k, v in self.nll.items() if v},
        }


def bundle_logits(session: Session, ids: list[int]) -> np.ndarray:
    """Logits (T, V) for ``ids`` through the paths users run: the forward from scratch that
    scoring and evaluation use over the first half, then the decoder that generation uses:
    its prefill of that half (its last position), a chunk of tokens with past (as drafted
    tokens are verified), and a one-token decode step."""
    cut1, cut2 = max(1, len(ids) // 2), len(ids) - 1
    tokens = np.asarray(ids, dtype=np.int64)
    first = session.logits(tokens[None, :cut1])[0]  # (cut1, V)
    decoder = open_decoder(session, pad_id=0, capacity=len(ids))
    first[-1] = decoder.prefill([tokens[:cut1]])[0]  # (V,) generation's prefill
    pieces = [first]
    for start, end in ((cut1, cut2), (cut2, len(ids))):
        if end > start:
            pieces.append(decoder.decode(tokens[None, start:end])[0].copy())  # (t, V)
    return np.concatenate(pieces, axis=0)


def open_bundle(folder: Path) -> Session:
    """The bundle in ``folder``, its files checked against the manifest's SHA-256, on the CPU."""
    return Session(load_bundle(folder, check_hashes=True), provider="cpu")


def verify_bundle(
    folder: Path, checkpoint: Path, precision: str, session: Session | None = None
) -> dict[str, Any]:
    """Compare the bundle in ``folder`` with the transformers model in ``checkpoint``.

    ``session``: the bundle already opened with :func:`open_bundle` (default: open it here).
    Returns the figures for ``bundle.json``; raises ``ExportError`` when fp32 parity fails.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    from ..graphs.optimum import quiet_libraries

    if session is None:
        session = open_bundle(folder)
    bundle = session.bundle
    tokenizer = Tokenizer.from_file(str(bundle.tokenizer_path))
    arch = bundle.manifest.architecture
    with quiet_libraries():
        model = GPT2LMHeadModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
    tally, used = Tally(), 0
    for prompt in prompts():
        ids = [i for i in tokenizer.encode(prompt).ids if i < arch.vocab_size][
            : arch.context_length
        ]
        if len(ids) < MIN_PROMPT_TOKENS:
            continue
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].float().numpy()  # (T, V)
        tally.add(bundle_logits(session, ids), ref, ids)
        used += 1
    if not used:
        raise ExportError(
            "No verification prompt gives 3 tokens with this tokenizer; use --no-verify."
        )
    figures = {
        "reference": f"transformers {_version('transformers')} float32 (PyTorch)",
        "runtime": "gpt2_edge.runtime.Session on onnxruntime CPU",
        "calls": [
            "forward from scratch",
            "decoder prefill",
            "chunk with past",
            "one-token decode",
        ],
        "prompts": used,
        **tally.figures(),
    }
    if precision == "float32":
        figures["tolerance"] = FP32_TOLERANCE
        if tally.max_diff > FP32_TOLERANCE:
            raise ExportError(
                f"Verification failed: the ONNX logits differ from PyTorch by up to "
                f"{tally.max_diff:.3g} (limit {FP32_TOLERANCE:g}), so no bundle was written."
            )
    return figures


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)
