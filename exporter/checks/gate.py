"""The quality gate's limits: how far a reduced-precision bundle may drift from its fp32 graph
before the export refuses to write it (``quality.py`` measures; ``plan.py`` takes the flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_PPL_INCREASE = 0.05  # --max-ppl-increase: 5 % relative
# --min-greedy-agreement: the mean share of each greedy continuation that matches fp32 before
# the first different token. Measured on the trained fixture (gate's 4 prompts x 24 tokens):
# int8 1.00, fp16 1.00, int4 0.46 (1 of 4 continuations identical); on the tiny random test
# model int4 gives 0.72. A quarter passes those with a margin and still stops an export whose
# text drifts from fp32 within the first few tokens.
DEFAULT_MIN_GREEDY_AGREEMENT = 0.25


@dataclass(frozen=True)
class GateOptions:
    """The quality gate's limits (it runs for int8, int4 and fp16, with verification)."""

    eval_text: Path | None = None
    max_ppl_increase: float = DEFAULT_MAX_PPL_INCREASE
    min_greedy_agreement: float = DEFAULT_MIN_GREEDY_AGREEMENT

    def title(self) -> str:
        return (
            f"perplexity +{self.max_ppl_increase:.1%} at most, greedy agreement "
            f"{self.min_greedy_agreement:.0%} at least"
        )
