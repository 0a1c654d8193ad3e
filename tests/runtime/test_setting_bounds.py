"""Numeric settings are bounded where the arithmetic breaks: beam search divides float32 scores
by length ** length_penalty, which past 8 overflows and below -1 sinks a long beam under the
-1e9 that marks "no beam" (-8 returned an empty text, -1e308 a numpy warning and an empty text
with exit code 0, 1e308 an OverflowError traceback). Each is one sentence, before any loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from gpt2_edge.runtime import EdgeError, Generator, load
from gpt2_edge.runtime.cli.generate import app
from support.fused_bundle import build_fused_bundle
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def tiny_generator(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Generator:
    pytest.importorskip("onnx")  # the fused graph's builder
    folder = tmp_path_factory.mktemp("bounds") / "tiny"
    build_fused_bundle(folder, gpt2_tokenizer_dir / "tokenizer.json")
    return load(folder, provider="cpu", threads=1)


@pytest.mark.parametrize("value", ["-1e308", "1e308", "-8", "200", "-1.5", "8.5"])
def test_a_length_penalty_past_the_arithmetic_is_one_sentence(value: str) -> None:
    result = CliRunner().invoke(app, ["x", "--num-beams", "2", "--length-penalty", value])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: length_penalty must be a number from -1 to 8 (1 ranks beams by mean "
        f"log-probability), got {float(value)}."
    ]


@pytest.mark.parametrize("value", [-1.0, 0.0, 8.0])
def test_the_bounds_themselves_search_cleanly(tiny_generator: Generator, value: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning fails the test
        result = tiny_generator.generate_batch(
            ["Hello there"], num_beams=3, length_penalty=value, max_new_tokens=40
        )[0]
    assert len(result.tokens) == 40 and result.text


def test_python_api_refuses_the_same(tiny_generator: Generator) -> None:
    with pytest.raises(EdgeError, match="length_penalty must be a number from -1 to 8"):
        tiny_generator.generate("x", num_beams=2, length_penalty=-8)
