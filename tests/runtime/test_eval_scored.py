"""gpt2-eval asks the graph for logits only at the scored positions, and loses nothing by it.

The reference is the path before issue 14: logits at every position of each window and a float64
log-softmax, written out here independently of ``runtime/generation/evaluate.py``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.runtime.cli.evaluate import app
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.generation.evaluate import (
    encode,
    negative_log_likelihood,
    perplexity,
    plan_windows,
    window_logits,
)
from gpt2_edge.runtime.graph.session import Session
from typer.testing import CliRunner

runner = CliRunner()
VOCAB = 50257


def float64_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """NLL of ``targets[j]`` under ``logits[j]`` by a float64 log-softmax: the reference."""
    out = np.empty(len(targets))
    for start in range(0, len(targets), 64):  # (64, V) float64 at a time: 26 MB
        rows = logits[start : start + 64].astype(np.float64)  # (R, V)
        peak = rows.max(axis=-1)
        log_z = np.log(np.exp(rows - peak[:, None]).sum(axis=-1)) + peak
        out[start : start + 64] = log_z - rows[np.arange(len(rows)), targets[start : start + 64]]
    return out


def every_position_nll(session: Session, ids: np.ndarray, context: int, stride: int) -> float:
    """The guide's mean NLL from the logits of every position (the transformers guide's loop)."""
    nll_sum, n_scored, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        chunk, trg_len = ids[begin:end], end - prev_end
        logits = window_logits(session, chunk)  # (T, V): every position
        first = max(len(chunk) - trg_len, 1)
        if first < len(chunk):  # a 1-token window has no target with a predecessor: weight 0
            weight = trg_len - 1
            nll = float64_nll(logits[first - 1 : -1], chunk[first:])
            nll_sum, n_scored = nll_sum + nll.mean() * weight, n_scored + weight
        prev_end = end
        if end == len(ids):
            break
    return nll_sum / n_scored


def same_to_6_digits(got: float, expected: float) -> bool:
    """Within half a unit of the 6th significant digit of ``expected``."""
    return abs(got - expected) < 0.5 * 10 ** (math.floor(math.log10(abs(expected))) - 5)


@pytest.fixture(scope="module")
def bundles(shipped_bundles) -> dict:
    """The trained fixture as the two shipped fused bundles: gpt2-export and --quantize."""
    return {name: shipped_bundles[name] for name in ("fp32", "int8")}


@pytest.fixture(scope="module")
def wikitext_ids(bundles: dict, wikitext_dir: Path) -> np.ndarray:
    text = (wikitext_dir / "test.txt").read_text(encoding="utf-8")[:20_000]
    return encode(load_bundle(bundles["int8"]).tokenizer_path, text)


# (tokens, context, stride): which windows each plan exercises
PLANS = {
    "first-middle-last": (1600, 1024, 512),  # the standard plan; the last window scores 64
    "short-text": (300, 1024, 512),  # one window shorter than the context
    "one-token-tail": (129, 64, 64),  # the last window is 1 token: nothing to score
    "odd-stride": (301, 100, 37),  # every window's first target keeps its predecessor
    "two-tokens": (2, 1024, 512),
}


@pytest.mark.export
@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("plan", PLANS)
def test_scored_positions_give_the_every_position_perplexity_to_6_digits(
    bundles: dict, wikitext_ids: np.ndarray, precision: str, plan: str
) -> None:
    n_tokens, context, stride = PLANS[plan]
    session = Session(load_bundle(bundles[precision]), provider="cpu", threads=2)
    ids = wikitext_ids[:n_tokens]
    assert len(ids) == n_tokens
    result = perplexity(session, ids, context=context, stride=stride)
    expected = every_position_nll(session, ids, context, stride)
    assert same_to_6_digits(result.perplexity, math.exp(expected))
    assert abs(result.mean_nll - expected) < 1e-6
    windows = plan_windows(n_tokens, context, stride)
    assert result.windows == len(windows)
    assert result.scored_tokens == sum(min(w.trg_len, w.end - w.begin) - 1 for w in windows)


@pytest.mark.export
def test_the_cli_asks_the_graph_for_the_scored_rows_only(
    bundles: dict, wikitext_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, np.ndarray | None, tuple[int, ...]]] = []
    logits = Session.logits

    def spy(self: Session, input_ids: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        out = logits(self, input_ids, *args, **kwargs)
        calls.append((input_ids.shape[1], kwargs.get("positions"), out.shape))
        assert self.names.logits_index  # the fused graph computes the head at those rows only
        return out

    monkeypatch.setattr(Session, "logits", spy)
    text_file = tmp_path / "sample.txt"
    text_file.write_text((wikitext_dir / "test.txt").read_text(encoding="utf-8")[:3000])
    args = ["--model", str(bundles["int8"]), "--text", str(text_file), "--json"]
    result = runner.invoke(app, [*args, "--context", "64", "--stride", "24", "--max-tokens", "200"])
    assert result.exit_code == 0, result.output
    windows = plan_windows(200, 64, 24)
    assert len(calls) == len(windows) == json.loads(result.stdout)["windows"]
    for (width, positions, shape), w in zip(calls, windows, strict=True):
        first = max(width - w.trg_len, 1)
        assert positions is not None
        np.testing.assert_array_equal(positions, np.arange(first - 1, width - 1)[None, :])
        assert shape == (1, width - first, VOCAB)
    assert calls[1][2][1] == 24  # a middle window: 24 rows of logits, not 64


@pytest.mark.export
def test_the_cli_reports_scored_tokens_per_second(
    bundles: dict, wikitext_dir: Path, tmp_path: Path
) -> None:
    text_file = tmp_path / "sample.txt"
    text_file.write_text((wikitext_dir / "test.txt").read_text(encoding="utf-8")[:3000])
    args = ["--model", str(bundles["int8"]), "--text", str(text_file), "--max-tokens", "300"]
    args += ["--context", "128", "--stride", "64"]
    started = time.perf_counter()
    result = runner.invoke(app, [*args, "--json"])
    wall = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert 0 < got["seconds"] < wall  # the windows alone: not the load, not the tokenizer
    assert got["tokens_per_second"] > 0
    assert got["tokens_per_second"] == pytest.approx(got["scored_tokens"] / got["seconds"])
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "tokens/s" in table.stdout and "scored tokens in" in table.stdout


def _rows(case: str) -> tuple[np.ndarray, np.ndarray]:
    """Hostile rows of logits (N, V) and targets for the log-softmax."""
    rng = np.random.default_rng(len(case))
    if case == "gpt2-like":  # GPT-2's logits sit near -100; 37 rows cross chunk boundaries
        rows = rng.normal(-100, 3, (37, VOCAB)).astype(np.float32)
        return rows, np.r_[0, VOCAB - 1, rng.integers(0, VOCAB, 35)]
    if case == "peaked":  # one logit far above the rest: the target is it, or not
        rows = rng.normal(0, 1, (2, VOCAB)).astype(np.float32)
        rows[:, 7] = 1e4
        return rows, np.array([7, 8])
    if case == "huge":  # a shift by the row max must keep exp() finite
        rows = rng.uniform(-3e37, 3e37, (3, VOCAB)).astype(np.float32)
        return rows, np.array([int(rows[0].argmax()), 0, int(rows[2].argmin())])
    if case == "masked":  # -inf entries (a banned token) weigh nothing
        rows = rng.normal(0, 5, (4, VOCAB)).astype(np.float32)
        rows[:, ::3] = -np.inf
        return rows, np.array([1, 2, 4, 5])
    # float64 logits near 1e6: their differences are far below float32's resolution there
    rows = 1e6 + rng.normal(0, 1e-3, (5, VOCAB))
    return rows, rng.integers(0, VOCAB, 5)


@pytest.mark.parametrize("case", ["gpt2-like", "peaked", "huge", "masked", "float64"])
def test_the_log_softmax_matches_float64(case: str) -> None:
    rows, targets = _rows(case)
    got = negative_log_likelihood(rows, targets)
    expected = float64_nll(rows, targets)
    assert got.dtype == np.float64 and np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7)


def test_a_uniform_row_costs_exactly_log_vocab() -> None:
    rows = np.full((20, VOCAB), -123.25, dtype=np.float32)
    got = negative_log_likelihood(rows, np.arange(20) * 2500)
    assert (got == math.log(VOCAB)).all()
