"""What one export will do, decided and checked before any slow step: the :class:`ExportPlan`.

``gpt2-export``'s flags (and :func:`~gpt2_edge.exporter.export_bundle`'s keyword arguments, which
have the same names) become one frozen plan: the precision recipe, the graph, the output folder
and the quality gate's limits. Every flag a user can get wrong is refused here, in one sentence,
so a mistake never costs the 10-30 s of the export steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TypeVar

from gpt2_edge.runtime import MODELS_DIR
from gpt2_edge.runtime.contract.files import MAX_TEXT_BYTES, mib, read_bounded
from gpt2_edge.runtime.errors import EdgeError

from .checks.gate import DEFAULT_MAX_PPL_INCREASE, DEFAULT_MIN_GREEDY_AGREEMENT, GateOptions
from .errors import ExportError
from .graphs import GRAPHS
from .recipes import PrecisionChoice, choose_precision
from .recipes.nbits import DEFAULT_ACCURACY_LEVEL, DEFAULT_BLOCK_SIZE
from .recipes.targets import DEFAULT_TARGET
from .source import model_name

T = TypeVar("T")
DEFAULT_MODEL = "gpt2"
INT8_SUFFIX = "-int8"
# An --eval-text shorter than this measures noise: ~45 GPT-2 tokens, a fraction of one window.
MIN_EVAL_TEXT_CHARS = 200
# Options only one precision reads: option -> (its flag, that precision, the flag that selects it).
PRECISION_OPTIONS = {
    "target": ("--target", "int8", "--quantize"),
    "block_size": ("--block-size", "int4", "--bits 4"),
    "accuracy_level": ("--accuracy-level", "int4", "--bits 4"),
}
# Options only the quality gate reads (it runs for int8, int4 and fp16, with verification).
GATE_OPTIONS = {
    "eval_text": "--eval-text",
    "max_ppl_increase": "--max-ppl-increase",
    "min_greedy_agreement": "--min-greedy-agreement",
}


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
    target: str | None = None,
    opset: int | None = None,
    force: bool = False,
    verify: bool = True,
    graph: str = "fused",
    dtype: str = "fp32",
    block_size: int | None = None,
    accuracy_level: int | None = None,
    eval_text: str | Path | None = None,
    max_ppl_increase: float | None = None,
    min_greedy_agreement: float | None = None,
    kv_cache: str = "auto",
) -> ExportPlan:
    """The plan for these options (``export_bundle`` documents each); a bad one is an error.

    An option left at None was not given and gets its default; one that is given but that this
    export would not read (``target`` for fp32, ``block_size`` for int8, the gate's options with
    ``verify`` off) is refused rather than silently ignored.
    """
    check_types({k: v for k, v in locals().items() if k in OPTION_TYPES})
    if graph not in GRAPHS:
        raise ExportError(f"Unknown graph '{graph}'; choose one of {', '.join(GRAPHS)}.")
    from .graphs.optimum import check_opset

    check_opset(opset)
    # --bits implies --quantize (as on the command line): bits=4 alone must not give fp32.
    quantize = quantize or bits != 8
    choice = choose_precision(
        quantize,
        bits,
        dtype,
        _given_or(target, DEFAULT_TARGET),
        _given_or(block_size, DEFAULT_BLOCK_SIZE),
        _given_or(accuracy_level, DEFAULT_ACCURACY_LEVEL),
        kv_cache,
        graph,
    )
    given = {
        "target": target,
        "block_size": block_size,
        "accuracy_level": accuracy_level,
        "eval_text": eval_text,
        "max_ppl_increase": max_ppl_increase,
        "min_greedy_agreement": min_greedy_agreement,
    }
    check_options_apply(choice.kind, verify, given)
    gate = GateOptions(
        Path(eval_text) if eval_text is not None else None,
        _given_or(max_ppl_increase, DEFAULT_MAX_PPL_INCREASE),
        _given_or(min_greedy_agreement, DEFAULT_MIN_GREEDY_AGREEMENT),
    )
    check_gate_options(gate.eval_text, gate.max_ppl_increase, gate.min_greedy_agreement)
    out = Path(output) if output is not None else default_output(model, suffix=choice.suffix)
    return ExportPlan(model, out, choice, graph, opset, force, verify, gate)


# What each option of make_plan (and export_bundle) takes, checked before anything else: the
# command line gives these types, a Python caller may give any (a number for a path).
_PATH, _TEXT, _INT, _REAL, _FLAG = "a path", "a string", "an integer", "a number", "True or False"
OPTION_TYPES = {
    "model": (_TEXT,), "output": (_PATH, None), "quantize": (_FLAG,), "bits": (_INT,),
    "target": (_TEXT, None), "opset": (_INT, None), "force": (_FLAG,), "verify": (_FLAG,),
    "graph": (_TEXT,), "dtype": (_TEXT,), "block_size": (_INT, None),
    "accuracy_level": (_INT, None), "eval_text": (_PATH, None), "max_ppl_increase": (_REAL, None),
    "min_greedy_agreement": (_REAL, None), "kv_cache": (_TEXT,),
}  # fmt: skip
_IS = {
    _PATH: lambda v: isinstance(v, (str, PathLike)),
    _TEXT: lambda v: isinstance(v, str),
    _INT: lambda v: isinstance(v, int) and not isinstance(v, bool),
    _REAL: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    _FLAG: lambda v: isinstance(v, bool),
    None: lambda v: v is None,
}


def check_types(options: dict[str, object]) -> None:
    """Refuse an option of the wrong type, or one that no export has, in one sentence."""
    for name, value in options.items():
        kinds = OPTION_TYPES.get(name)
        if kinds is None:
            known = ", ".join(OPTION_TYPES)
            raise ExportError(f"Unknown option '{name}'; the options are {known}.")
        if not any(_IS[kind](value) for kind in kinds):
            wanted = " or ".join(k or "None" for k in kinds)
            shown = repr(value) if len(repr(value)) <= 40 else type(value).__name__
            raise ExportError(f"{name} must be {wanted}, got {shown}.")


def _given_or(value: T | None, default: T) -> T:
    """``value`` when the option was given, else its ``default``."""
    return default if value is None else value


def check_options_apply(kind: str, verify: bool, given: Mapping[str, object]) -> None:
    """Refuse an option that was given (not None) but that an export of ``kind`` would ignore."""
    for name, (option, only, selector) in PRECISION_OPTIONS.items():
        if given.get(name) is not None and kind != only:
            raise ExportError(
                f"{option} is for {only} exports ({selector}) and has no effect on this {kind} "
                f"one; drop {option}."
            )
    flag = next((flag for name, flag in GATE_OPTIONS.items() if given.get(name) is not None), None)
    if flag is None:
        return
    if not verify:
        raise ExportError(
            f"{flag} sets up the quality gate, which --no-verify skips; drop one of them."
        )
    if kind == "fp32":
        raise ExportError(
            f"{flag} sets up the quality gate, which only int8, int4 and fp16 exports go through "
            f"(it compares them with fp32); drop {flag} or choose --quantize, --bits 4 or "
            "--dtype fp16."
        )


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
    too_long = (
        f"The --eval-text file {path} holds more than {mib(MAX_TEXT_BYTES)}, more than the "
        "quality gate scores; pass a part of it."
    )
    try:
        text = read_bounded(path, MAX_TEXT_BYTES, too_long).decode("utf-8")
    except EdgeError as exc:
        raise ExportError(str(exc)) from None
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
