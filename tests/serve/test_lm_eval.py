"""lm-evaluation-harness through gpt2-serve gives what lm-eval's own ``hf`` backend gives.

Three local tasks are built from ``../shared/data/wikitext-2`` (``support/lm_eval_runs.py``: a
multiple-choice cloze, rolling perplexity, greedy generation with stop strings). lm-eval's Python
API runs them with its ``hf`` backend on the trained fixture (float32, CPU) and with
``local-completions`` against a ``gpt2-serve`` process serving the fp32 export of the same
fixture, the way a user points lm-eval at a local OpenAI-compatible server: the tokenizer is the
server's own (``tokenizer_backend`` left at lm-eval's ``auto``, which finds the server's
``/tokenizer_info`` and ``/tokenize``), or the bundle's Hugging Face files. Per sample: each
choice's loglikelihood within 1e-3 nats, each document's rolling sum within 1e-2, the same
greedy text. ``benchmarks/lm_eval_compare.py`` runs the same for int8 and reports the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.lm_eval, pytest.mark.export]

pytest.importorskip("uvicorn")
pytest.importorskip("lm_eval", reason="needs lm-eval: pip install '.[test]'")
pytest.importorskip("accelerate", reason="lm-eval's hf backend needs accelerate")

from support.lm_eval_runs import (
    CLOZE,
    GREEDY,
    ROLLING,
    Comparison,
    Run,
    TaskSizes,
    build_tasks,
    compare,
    hf_run,
    server_run,
    serving,
)
from support.shipped import ShippedBundles

LOGLIKELIHOOD_TOL = 1e-3  # nats per choice (the bar; the old rule was off by up to 1.38)
ROLLING_TOL = 1e-2  # nats per document (a sum over up to ~1,600 tokens here)
# A few dozen samples; one rolling document spans several windows, the first of which takes the
# model's whole context through the server (1,023 tokens sent, one generated).
SIZES = TaskSizes(cloze=24, rolling=4, greedy=16)


@pytest.fixture(scope="module")
def tasks(
    wikitext_dir: Path, trained_fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    folder = tmp_path_factory.mktemp("lm-eval-tasks")
    return build_tasks(wikitext_dir, trained_fixture_dir, folder, SIZES)


@pytest.fixture(scope="module")
def reference(tasks: Path, trained_fixture_dir: Path) -> Run:
    return hf_run(trained_fixture_dir, tasks)


def _check(result: Comparison, run: Run, reference: Run) -> None:
    assert result.choices == 4 * SIZES.cloze and result.rolling_docs == SIZES.rolling
    assert result.max_abs_ll <= LOGLIKELIHOOD_TOL, result
    assert result.answers_changed == 0 and result.greedy_flags_changed == 0, result
    assert result.max_abs_rolling <= ROLLING_TOL, result
    assert result.generations_identical == result.generations == SIZES.greedy, (
        result.first_differing
    )
    # The task-level figures follow: the same accuracy, the same perplexity to 1e-4 relative.
    assert run.metrics[CLOZE]["acc"] == reference.metrics[CLOZE]["acc"]
    ppl, want = (
        run.metrics[ROLLING]["word_perplexity"],
        reference.metrics[ROLLING]["word_perplexity"],
    )
    assert ppl == pytest.approx(want, rel=1e-4)
    assert run.metrics[GREEDY]["exact_match"] == reference.metrics[GREEDY]["exact_match"]


def test_lm_eval_through_the_server_matches_its_hf_backend(
    tasks: Path, shipped_bundles: ShippedBundles, reference: Run
) -> None:
    fp32_bundle = shipped_bundles["fp32"]  # gpt2-export FIXTURE, the shipped defaults
    with serving(fp32_bundle) as url:
        # lm-eval's default tokenizer_backend for local-completions ("auto") probes the server.
        remote = server_run(url, fp32_bundle.name, tasks)
        # The bundle's tokenizer files, as a user who names a tokenizer gives them.
        local = server_run(url, fp32_bundle.name, tasks, tokenizer=fp32_bundle)
    for run in (remote, local):
        _check(compare(reference, run), run, reference)
