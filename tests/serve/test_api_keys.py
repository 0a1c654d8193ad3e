"""Every way of giving gpt2-serve an API key is held to one rule (``config.check_api_key``): an
empty key, one of spaces or one clients cannot send in a header is refused in one sentence,
whether it comes from ``--api-key``, from ``GPT2_SERVE_API_KEY`` (click reads an empty variable
as unset: that started an open server without a word) or from ``ServeConfig`` in Python."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("starlette")

from gpt2_edge.runtime import EdgeError
from gpt2_edge.serve import ServeConfig
from gpt2_edge.serve.cli import API_KEY_ENV, app
from typer.testing import CliRunner

BAD_KEYS = {"empty": "", "spaces": "   ", "inner-space": "a key", "non-ascii": "clé", "tab": "\t"}


def serve(tmp_path: Path, args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    # A model that does not exist: a key that passes would fail there, later, on another line.
    result = CliRunner().invoke(app, ["--model", str(tmp_path / "none"), *args], env=env)
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=list(BAD_KEYS))
def test_a_bad_key_from_the_environment_is_refused(tmp_path: Path, key: str) -> None:
    code, lines = serve(tmp_path, [], {API_KEY_ENV: key})
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"Error: {API_KEY_ENV}"), lines


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=list(BAD_KEYS))
def test_a_bad_key_from_the_flag_is_refused(tmp_path: Path, key: str) -> None:
    code, lines = serve(tmp_path, ["--api-key", key], {})
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: --api-key"), lines


def test_a_good_key_from_the_environment_passes_the_check(tmp_path: Path) -> None:
    code, lines = serve(tmp_path, [], {API_KEY_ENV: "s3cret"})
    assert code == 1 and "does not exist" in lines[-1]  # on to the model


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=list(BAD_KEYS))
def test_a_bad_key_in_python_is_refused(key: str) -> None:
    with pytest.raises(EdgeError, match="api_key"):
        ServeConfig(("tiny",), api_key=key)


def test_a_key_that_is_no_string_says_so() -> None:
    with pytest.raises(EdgeError, match="api_key must be a string, got int."):
        ServeConfig(("tiny",), api_key=5)  # type: ignore[arg-type]
