"""Parity: two graphs of the same model, run through the runtime on one random prompt plus
greedy decode steps, compared.

Both graphs are opened as the runtime opens a bundle (``graph_session``), so the check runs the
paths users run: the forward from scratch (``Session.logits``) over the prompt, then the runtime's
decoder for each cached step (the fused graph's shared buffers, Optimum's growing past).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gpt2_edge.runtime.graph.session import Session

from ..errors import ExportError
from ..graphs.fused import FUSED_GRAPH, OPTIMUM_GRAPH

PARITY_TOLERANCE = 1e-3  # max |logit diff| of the fused fp32 graph against Optimum's
PARITY_STEPS = 6  # decode steps after the prompt in the parity check


def graph_session(model_path: Path, checkpoint: Path, graph: dict[str, Any]) -> Session:
    """The fp32 graph at ``model_path`` as a runtime Session, described in memory (no bundle.json:
    the manifest is derived from the checkpoint's config and the graph's tensor names). The parity
    check opens both graphs this way, and the quality gate its fp32 reference."""
    from gpt2_edge.runtime.contract.bundle import Bundle

    from ..graphs.describe import graph_manifest

    manifest = graph_manifest(model_path, checkpoint, graph)
    return Session(Bundle(model_path.parent, manifest), provider="cpu")


def parity(
    reference: Session, candidate: Session, prompt_len: int = 16, steps: int = 4, seed: int = 0
) -> dict[str, float]:
    """The max |logit difference| over the prompt and ``steps`` greedy steps (the reference's
    picks fed to both), and the share of steps whose greedy picks agree."""
    from gpt2_edge.runtime.decoders.interface import open_decoder

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, reference.arch.vocab_size, size=prompt_len, dtype=np.int64)
    full = [s.logits(ids[None, :])[0] for s in (reference, candidate)]  # (T, V) each
    max_diff = float(np.abs(full[0] - full[1]).max())
    decoders = [open_decoder(s, 0, prompt_len + steps + 1) for s in (reference, candidate)]
    last = [d.prefill([ids])[0] for d in decoders]  # (V,) each
    agree = 0
    for _ in range(steps + 1):
        max_diff = max(max_diff, float(np.abs(last[0] - last[1]).max()))
        picks = [int(np.argmax(x)) for x in last]
        agree += picks[0] == picks[1]
        step = np.array([[picks[0]]], dtype=np.int64)  # (1, 1)
        last = [d.decode(step)[0, -1].copy() for d in decoders]
    return {"max_abs_logit_diff": max_diff, "greedy_agreement": agree / (steps + 1)}


def check_fused(fused: Path, reference: Path, checkpoint: Path) -> dict[str, Any]:
    """The fused graph at ``fused`` against Optimum's at ``reference``: the figures for
    ``bundle.json``'s ``graph.parity_vs_optimum``.

    Raises:
        ExportError: the logits differ by more than ``PARITY_TOLERANCE`` (a bug to report;
            ``--graph optimum`` exports without the fused graph).
    """
    sessions = (
        graph_session(reference, checkpoint, OPTIMUM_GRAPH),
        graph_session(fused, checkpoint, FUSED_GRAPH),
    )
    prompt_len = max(1, min(16, sessions[0].arch.context_length - PARITY_STEPS - 1))
    figures = parity(*sessions, prompt_len=prompt_len, steps=PARITY_STEPS)
    del sessions
    if figures["max_abs_logit_diff"] > PARITY_TOLERANCE:
        raise ExportError(
            f"The fused graph's logits differ from the Optimum graph's by up to "
            f"{figures['max_abs_logit_diff']:.3g} (limit {PARITY_TOLERANCE:g}); "
            "export with --graph optimum."
        )
    return {
        "reference": "Optimum export (onnxruntime CPU)",
        "prompt_tokens": prompt_len,
        "decode_steps": PARITY_STEPS,
        **figures,
    }
