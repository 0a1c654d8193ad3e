"""gpt2-eval: the sliding-window perplexity equals transformers' on the trained fixture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from gpt2_edge.runtime.cli.evaluate import app
from gpt2_edge.runtime.generation.evaluate import plan_windows
from typer.testing import CliRunner

runner = CliRunner()
N_TOKENS, CONTEXT, STRIDE = 1500, 512, 200  # 6 overlapping windows; the last is 500 long


def guide_perplexity(model, ids, max_length: int, stride: int) -> float:
    """The loop of https://huggingface.co/docs/transformers/perplexity, unchanged in substance."""
    import torch

    encodings = torch.tensor(ids)[None, :]
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            neg_log_likelihood = model(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        # the guide subtracts batch_size "due to internal label shift"
        num_loss_tokens = num_valid_tokens - target_ids.size(0)
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return float(torch.exp(nll_sum / n_tokens))


def test_windows_follow_the_guide() -> None:
    spans = [(w.begin, w.end, w.trg_len) for w in plan_windows(10, 4, 3)]
    assert spans == [(0, 4, 4), (3, 7, 3), (6, 10, 3)]


@pytest.fixture(scope="module")
def fixture_fp32(trained_optimum_folder: Path) -> Path:
    """A plain Optimum export: every position's logits."""
    return trained_optimum_folder


@pytest.fixture(scope="module")
def fixture_fused(shipped_bundles) -> Path:
    """gpt2-export's default bundle: a fused graph that computes logits at the scored rows only."""
    return shipped_bundles["fp32"]


@pytest.mark.export
@pytest.mark.parametrize("graph", ["fixture_fp32", "fixture_fused"])
def test_eval_cli_matches_transformers(
    graph: str,
    request: pytest.FixtureRequest,
    trained_fixture_dir: Path,
    wikitext_dir: Path,
    tmp_path: Path,
) -> None:
    model_dir: Path = request.getfixturevalue(graph)
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    text = (wikitext_dir / "test.txt").read_text(encoding="utf-8")[:20_000]
    text_file = tmp_path / "sample.txt"
    text_file.write_text(text, encoding="utf-8")
    tokenizer = GPT2TokenizerFast.from_pretrained(trained_fixture_dir)
    ids = tokenizer(text)["input_ids"][:N_TOKENS]
    assert len(ids) == N_TOKENS
    model = GPT2LMHeadModel.from_pretrained(trained_fixture_dir).eval()
    expected = guide_perplexity(model, ids, CONTEXT, STRIDE)

    args = ["--model", str(model_dir), "--text", str(text_file), "--json", "--threads", "2"]
    args += ["--context", str(CONTEXT), "--stride", str(STRIDE), "--max-tokens", str(N_TOKENS)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["tokens"] == N_TOKENS and got["windows"] == 6
    print(f"gpt2-eval {got['perplexity']:.6f} vs transformers {expected:.6f}")
    # "Equal to 4 significant digits": within half a unit of the 4th digit (rounding both can
    # still straddle a boundary, so compare the difference); in fact we hold 2e-5 relative.
    half_unit = 0.5 * 10 ** (math.floor(math.log10(expected)) - 3)
    assert abs(got["perplexity"] - expected) < half_unit
    np.testing.assert_allclose(got["perplexity"], expected, rtol=2e-5)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "does not exist"),
        (b"\xff\xfe caf\xe9", [], "is not UTF-8"),
        (b"a", [], "too short"),
        (b"hello there general", ["--context", "4", "--stride", "9"], "stride must be"),
        (b"hello there general", ["--context", "1"], "context must be"),
        # a stride of 1 would leave every window after the first a weight of 0 (the guide's)
        (b"hello there general", ["--context", "2", "--stride", "1"], "stride must be between 2"),
        ("folder", [], "is a folder, not a text file"),
    ],
)
def test_user_errors_are_one_sentence(
    tiny_optimum_export: Path,
    tmp_path: Path,
    content: bytes | str | None,
    extra: list[str],
    message: str,
) -> None:
    text_file = tmp_path / "t.txt"
    if content == "folder":
        text_file.mkdir()
    elif content is not None:
        text_file.write_bytes(content)
    result = runner.invoke(
        app, ["--model", str(tiny_optimum_export), "--text", str(text_file), *extra]
    )
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_text_comes_from_stdin_a_pipe_or_a_device_as_from_a_file(
    tiny_optimum_export: Path, tmp_path: Path
) -> None:
    """``--text -`` reads standard input; a FIFO or /dev/null is read, not called missing."""
    import json
    import os
    import subprocess
    import sys
    import threading

    text = b"The quick brown fox jumps over the lazy dog. " * 8
    (tmp_path / "t.txt").write_bytes(text)
    command = [sys.executable, "-m", "gpt2_edge.runtime.cli.evaluate", "--model"]
    command += [str(tiny_optimum_export), "--json", "--text"]

    def score(source: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, source], input=stdin, capture_output=True, timeout=120, check=False
        )

    from_file = json.loads(score(str(tmp_path / "t.txt")).stdout)["perplexity"]
    assert json.loads(score("-", text).stdout)["perplexity"] == from_file
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(text))
    writer.start()
    assert json.loads(score(str(fifo)).stdout)["perplexity"] == from_file
    writer.join(timeout=60)
    empty = score(os.devnull)
    assert empty.returncode == 1 and b"too short" in empty.stderr
