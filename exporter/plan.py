"""What one export will do, decided and checked before any slow step: the :class:`ExportPlan`.

``gpt2-export``'s flags (and :func:`~gpt2_edge.exporter.export_bundle`'s keyword arguments, which
have the same names) become one frozen plan: the precision recipe, the graph, the output folder
and the quality gate's limits. Every flag a user can get wrong is refused here, in one sentence,
so a mistake never costs the 10-30 s of the export steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError
from .graphs import GRAPHS
from .recipes import PrecisionChoice, choose_precision
from .recipes.nbits import DEFAULT_ACCURACY_LEVEL, DEFAULT_BLOCK_SIZE
from .recipes.targets import DEFAULT_TARGET
from .source import model_name

DEFAULT_MODEL = "gpt2"
MODELS_DIR = Path("models")  # relative to the current working directory
INT8_SUFFIX = "-int8"
DEFAULT_MAX_PPL_INCREASE = 0.05  # --max-ppl-increase: 5 % relative
# --min-greedy-agreement: the mean share of each greedy continuation that matches fp32 before
# the first different token. Measured on the trained fixture (gate's 4 prompts x 24 tokens):
# int8 1.00, fp16 1.00, int4 0.46 (1 of 4 continuations identical); on the tiny random test
# model int4 gives 0.72. A quarter passes those with a margin and still stops an export whose
# text drifts from fp32 within the first few tokens.
DEFAULT_MIN_GREEDY_AGREEMENT = 0.25
# An --eval-text shorter than this measures noise: ~45 GPT-2 tokens, a fraction of one window.
MIN_EVAL_TEXT_CHARS = 200


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


@dataclass(frozen=True)
class ExportPlan:
    """One export, every option decided."""

    model: str
    output: Path
    precision: PrecisionChoice
    graph: str = "fused"
    opset: int | None = None
    force: bool = False
    verify: bool = True
    gate: GateOptions = GateOptions()


def make_plan(
    model: str = DEFAULT_MODEL,
    output: str | Path | None = None,
    *,
    quantize: bool = False,
    bits: int = 8,
    target: str = DEFAULT_TARGET,
    opset: int | None = None,
    force: bool = False,
    verify: bool = True,
    graph: str = "fused",
    dtype: str = "fp32",
    block_size: int = DEFAULT_BLOCK_SIZE,
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL,
    eval_text: str | Path | None = None,
    max_ppl_increase: float = DEFAULT_MAX_PPL_INCREASE,
    min_greedy_agreement: float = DEFAULT_MIN_GREEDY_AGREEMENT,
    kv_cache: str = "auto",
) -> ExportPlan:
    """The plan for these options (``export_bundle`` documents each); a bad one is an error."""
    if graph not in GRAPHS:
        raise ExportError(f"Unknown graph '{graph}'; choose one of {', '.join(GRAPHS)}.")
    from .onnx_export import check_opset

    check_opset(opset)
    # --bits implies --quantize (as on the command line): bits=4 alone must not give fp32.
    quantize = quantize or bits != 8
    choice = choose_precision(
        quantize, bits, dtype, target, block_size, accuracy_level, kv_cache, graph
    )
    check_gate_options(eval_text, max_ppl_increase, min_greedy_agreement)
    out = Path(output) if output is not None else default_output(model, suffix=choice.suffix)
    gate = GateOptions(
        Path(eval_text) if eval_text is not None else None, max_ppl_increase, min_greedy_agreement
    )
    return ExportPlan(model, out, choice, graph, opset, force, verify, gate)


def default_output(model: str, quantize: bool = False, suffix: str | None = None) -> Path:
    """``models/<name>`` (fp32), ``models/<name>-int8`` (quantize) or ``models/<name><suffix>``."""
    tail = suffix if suffix is not None else (INT8_SUFFIX if quantize else "")
    return MODELS_DIR / (model_name(model) + tail)


def check_gate_options(
    eval_text: str | Path | None,
    max_increase: float,
    min_greedy: float = DEFAULT_MIN_GREEDY_AGREEMENT,
) -> None:
    """Fail before any work when the gate's options cannot be used."""
    if not math.isfinite(max_increase) or max_increase < 0:
        raise ExportError(
            f"--max-ppl-increase must be 0 or more (0.05 allows 5% higher perplexity than "
            f"fp32), got {max_increase}."
        )
    if not 0 <= min_greedy <= 1:  # also refuses NaN
        raise ExportError(
            f"--min-greedy-agreement must be a fraction from 0 to 1 (0.25 = a quarter of the "
            f"greedy tokens), got {min_greedy}."
        )
    if eval_text is not None:
        check_eval_text(Path(eval_text))


def check_eval_text(path: Path) -> None:
    """The ``--eval-text`` file must be readable UTF-8 text long enough to measure."""
    if not path.exists():
        raise ExportError(f"The --eval-text file {path} does not exist.")
    if not path.is_file():
        raise ExportError(f"The --eval-text {path} is not a file.")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ExportError(f"The --eval-text file {path} cannot be read ({exc.strerror}).") from None
    except UnicodeDecodeError as exc:
        raise ExportError(
            f"The --eval-text file {path} is not UTF-8 text (bad byte at offset {exc.start})."
        ) from None
    length = len(text.strip())
    if length < MIN_EVAL_TEXT_CHARS:
        raise ExportError(
            f"The --eval-text file {path} holds only {length} characters; the quality gate needs "
            f"at least {MIN_EVAL_TEXT_CHARS} to measure perplexity."
        )
