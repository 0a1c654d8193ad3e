"""The export's quality gate: the finished bundle against the fp32 graph it was made from.

Runs after quantizing (or converting to fp16) and verifying, inside the staging folder, so a
failure leaves no bundle. The reference is the fp32 graph the precision step read (Optimum's or
the fused one), opened through the runtime's ``Session`` as the parity check opens a graph
(``checks/parity.graph_session``), so both sides run the same windows the same way.

All figures compare two onnxruntime sessions of the same architecture (fp32 reference and
candidate) on the same token ids, with the sliding window of ``gpt2-eval``:

- perplexity of both (the transformers guide's arithmetic) and the relative increase;
- top-1 agreement: share of scored positions where both models' argmax next token is the same;
- max (and mean) absolute logit difference over scored positions;
- greedy agreement over a few prompts: tokens generated greedily with the KV cache.

:func:`check_gate` turns the perplexity increase into a pass/fail with the figure in the message,
and :func:`check_greedy` the greedy agreement.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.generation.evaluate import encode, plan_windows, window_logits, window_loss
from gpt2_edge.runtime.graph.session import Session

from ..errors import ExportError
from .gate import DEFAULT_MAX_PPL_INCREASE, DEFAULT_MIN_GREEDY_AGREEMENT, GateOptions

QUALITY_CONTEXT = (
    512  # built-in text: ~2,900 GPT-2 tokens, so 11 windows even on 1024-context models
)
QUALITY_STRIDE = 256
GREEDY_NEW_TOKENS = 24
GREEDY_PROMPTS = (
    "The history of the city",
    "In the early 20th century, the",
    "He was born in",
    "We hold these truths to be self-evident, that",
)


@dataclass(frozen=True)
class TextComparison:
    """Reference vs candidate on one text."""

    ref_perplexity: float
    perplexity: float
    ppl_increase: float  # relative: perplexity / ref_perplexity - 1
    top1_agreement: float
    max_logit_diff: float
    mean_logit_diff: float
    tokens: int
    windows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def builtin_text() -> str:
    """Public-domain English prose shipped with the package (see the file's header)."""
    return files("gpt2_edge.exporter").joinpath("data/quality_text.txt").read_text("utf-8")


def _as_session(model: Session | str | Path, threads: int | None) -> Session:
    if isinstance(model, Session):
        return model
    return Session(load_bundle(model, check_hashes=False), provider="cpu", threads=threads)


def compare_on_ids(
    ref: Session,
    cand: Session,
    ids: np.ndarray,
    context: int = QUALITY_CONTEXT,
    stride: int = QUALITY_STRIDE,
) -> TextComparison:
    """Run both sessions over the same windows; one pass, logits never kept beyond a window."""
    context = min(context, ref.arch.context_length)
    windows = plan_windows(len(ids), context, min(stride, context))
    sums = {"ref": 0.0, "cand": 0.0}
    weight_sum, agree, scored, max_diff, diff_sum = 0, 0, 0, 0.0, 0.0
    for w in windows:
        chunk = ids[w.begin : w.end]
        ref_logits = window_logits(ref, chunk)  # (T, V)
        cand_logits = window_logits(cand, chunk).astype(np.float32)  # fp16 graphs: upcast
        ref_loss, weight, first = window_loss(ref_logits, chunk, w)
        cand_loss, _, _ = window_loss(cand_logits, chunk, w)
        sums["ref"] += ref_loss * weight
        sums["cand"] += cand_loss * weight
        weight_sum += weight
        rows = slice(first - 1, len(chunk) - 1)  # the rows that predict this window's targets
        a, b = ref_logits[rows], cand_logits[rows]
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        scored += a.shape[0]
        diff = np.abs(a - b)
        max_diff = max(max_diff, float(diff.max(initial=0.0)))
        diff_sum += float(diff.mean(axis=-1).sum())
    if weight_sum == 0:
        raise ExportError("The evaluation text is too short to score a single token.")
    ref_ppl = math.exp(sums["ref"] / weight_sum)
    ppl = math.exp(sums["cand"] / weight_sum)
    return TextComparison(
        ref_perplexity=ref_ppl,
        perplexity=ppl,
        ppl_increase=ppl / ref_ppl - 1.0,
        top1_agreement=agree / max(scored, 1),
        max_logit_diff=max_diff,
        mean_logit_diff=diff_sum / max(scored, 1),
        tokens=len(ids),
        windows=len(windows),
    )


def greedy_tokens(session: Session, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding with the KV cache, batch 1, through the runtime's own decoder (the path a
    user's ``generate`` takes: prefill once, then one token per step)."""
    from gpt2_edge.runtime.decoders.interface import open_decoder
    from gpt2_edge.runtime.generation.steps import TokenSteps
    from gpt2_edge.runtime.sampling.sampler import Sampler
    from gpt2_edge.runtime.settings.sampling import SamplingSettings

    decoder = open_decoder(session, pad_id=0, capacity=len(prompt_ids) + new_tokens)
    greedy = Sampler(SamplingSettings(temperature=0.0))
    steps = TokenSteps(decoder, greedy, [np.asarray(prompt_ids, np.int64)], [new_tokens])
    out: list[int] = []
    for step in steps:
        out.extend(step.tokens[0])
        if len(out) >= new_tokens:
            break
    return out[:new_tokens]


def greedy_agreement(
    ref: Session,
    cand: Session,
    tokenizer_path: Path,
    prompts: tuple[str, ...] = GREEDY_PROMPTS,
    new_tokens: int = GREEDY_NEW_TOKENS,
) -> dict[str, Any]:
    """Share of prompts whose greedy continuations are identical, and the mean shared prefix."""
    exact, prefix_sum = 0, 0.0
    for prompt in prompts:
        ids = encode(tokenizer_path, prompt).tolist()
        a = greedy_tokens(ref, ids, new_tokens)
        b = greedy_tokens(cand, ids, new_tokens)
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), new_tokens)
        exact += same == new_tokens
        prefix_sum += same / new_tokens
    return {
        "greedy_exact": exact / len(prompts),
        "greedy_prefix_agreement": prefix_sum / len(prompts),
        "greedy_prompts": len(prompts),
        "greedy_new_tokens": new_tokens,
    }


def measure_quality(
    reference: Session | str | Path,
    candidate: Session | str | Path,
    eval_text: str | Path | None = None,
    threads: int | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """All gate figures of ``candidate`` against ``reference``, as a dict for bundle.json.

    Args:
        reference: the fp32 model: a bundle/Optimum folder or an open Session.
        candidate: the quantized (or fp16) model, same forms.
        eval_text: a user's UTF-8 file (``--eval-text``), measured besides the built-in text.
        threads: intra-op threads for sessions opened here.
        max_tokens: cap on the user text's tokens (default: all).

    Returns:
        ``{"builtin": {...}, "user_text": {...} (if given), "greedy": {...}}``; the gate figure
        is ``["builtin"]["ppl_increase"]`` (and the user text's, when given).
    """
    from gpt2_edge.runtime.generation.evaluate import read_text

    ref, cand = _as_session(reference, threads), _as_session(candidate, threads)
    tok = cand.bundle.tokenizer_path
    report: dict[str, Any] = {
        "builtin": compare_on_ids(ref, cand, encode(tok, builtin_text())).to_dict(),
    }
    if eval_text is not None:
        ids = encode(tok, read_text(eval_text))
        ids = ids[:max_tokens] if max_tokens else ids
        report["user_text"] = {"file": str(eval_text), **compare_on_ids(ref, cand, ids).to_dict()}
    report["greedy"] = greedy_agreement(ref, cand, tok)
    return report


def check_gate(
    fp32_ppl: float,
    quant_ppl: float,
    max_increase: float = DEFAULT_MAX_PPL_INCREASE,
    model: str = "The reduced-precision model",
    text: str = "the built-in text",
) -> float:
    """Return the relative perplexity increase, or raise :class:`ExportError` above the threshold.

    Args:
        fp32_ppl: the reference perplexity.
        quant_ppl: the candidate's perplexity on the same text and windows.
        max_increase: the largest allowed relative increase (default 0.05, i.e. 5 %).
        model: what the candidate is, to start the message ("The int8 export").
        text: which text was measured, for the message.
    """
    if not (math.isfinite(fp32_ppl) and fp32_ppl > 0):
        raise ExportError(f"The reference perplexity {fp32_ppl} is not a positive number.")
    increase = quant_ppl / fp32_ppl - 1.0 if math.isfinite(quant_ppl) else math.inf
    if increase > max_increase:
        raise ExportError(
            f"{model} has {increase:.2%} higher perplexity than fp32 on {text} "
            f"({fp32_ppl:.3f} -> {quant_ppl:.3f}), more than the allowed {max_increase:.2%}; "
            "the export is stopped (raise --max-ppl-increase or choose another precision)."
        )
    return increase


def check_greedy(
    greedy: dict[str, Any],
    min_agreement: float = DEFAULT_MIN_GREEDY_AGREEMENT,
    model: str = "The reduced-precision model",
) -> float:
    """Return the greedy agreement, or raise :class:`ExportError` below ``min_agreement``.

    Args:
        greedy: :func:`greedy_agreement`'s figures.
        min_agreement: the smallest allowed mean share of each greedy continuation that
            matches fp32 before the first different token (default 0.25).
        model: what the candidate is, to start the message ("The int4 export").
    """
    agreement = float(greedy["greedy_prefix_agreement"])
    if agreement < min_agreement:
        raise ExportError(
            f"{model}'s greedy text follows fp32 for only {agreement:.0%} of its tokens on "
            f"average ({greedy['greedy_prompts']} prompts, {greedy['greedy_new_tokens']} tokens "
            f"each), less than the required {min_agreement:.0%}; the export is stopped (lower "
            "--min-greedy-agreement or choose another precision)."
        )
    return agreement


def gate_report(
    report: dict[str, Any],
    max_increase: float = DEFAULT_MAX_PPL_INCREASE,
    model: str = "The reduced-precision model",
    min_greedy: float = DEFAULT_MIN_GREEDY_AGREEMENT,
) -> None:
    """Apply :func:`check_gate` to every text in a :func:`measure_quality` report, then
    :func:`check_greedy` to its greedy figures."""
    for key in ("builtin", "user_text"):
        if key in report:
            figures = report[key]
            text = figures["file"] if key == "user_text" else "the built-in text"
            check_gate(figures["ref_perplexity"], figures["perplexity"], max_increase, model, text)
    if "greedy" in report:
        check_greedy(report["greedy"], min_greedy, model)


def run_gate(bundle: Session, reference: Session, gate: GateOptions) -> dict[str, Any]:
    """Measure ``bundle`` against the fp32 ``reference`` and apply the gate's limits.

    Returns:
        The figures for bundle.json ``verification["quality"]``.

    Raises:
        ExportError: perplexity grew more than allowed on the built-in text or on the
            ``--eval-text``, or greedy text follows fp32 for less than the required share of its
            tokens; the message holds the figure.
    """
    report = measure_quality(reference, bundle, eval_text=gate.eval_text)
    report["reference"] = "the fp32 graph this bundle was made from (onnxruntime CPU)"
    report["max_ppl_increase"] = gate.max_ppl_increase
    report["min_greedy_agreement"] = gate.min_greedy_agreement
    model = f"The {bundle.bundle.manifest.precision.get('dtype', '?')} export"
    gate_report(report, gate.max_ppl_increase, model, gate.min_greedy_agreement)
    return report
