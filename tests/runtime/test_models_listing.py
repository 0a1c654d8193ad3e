"""Which bundles ``models/`` holds, as a user finds out: ``gpt2-generate --list``, and the sentence
for a name that is not there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gpt2_edge.runtime import EdgeError, pick_model
from gpt2_edge.runtime.cli import generate as cli
from typer.testing import CliRunner

runner = CliRunner()


def _bundle(folder: Path, dtype: str, context: int, weights: int) -> None:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\0" * weights)
    manifest = {"precision": {"dtype": dtype}, "architecture": {"context_length": context}}
    (folder / "bundle.json").write_text(json.dumps(manifest))


@pytest.fixture()
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    _bundle(tmp_path / "models" / "gpt2-int8", "int8", 1024, 3 << 20)
    _bundle(tmp_path / "models" / "tiny-fp32", "float32", 128, 1 << 20)
    (tmp_path / "models" / ".gpt2.partial-1-x").mkdir()  # an export in progress: not listed
    return tmp_path / "models"


def test_list_shows_name_precision_size_and_context(models: Path) -> None:
    result = runner.invoke(cli.app, ["--list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "PRECISION", "SIZE", "CONTEXT"]
    assert [line.split() for line in lines[1:]] == [
        ["gpt2-int8", "int8", "3.0", "MiB", "1024"],
        ["tiny-fp32", "float32", "1.0", "MiB", "128"],
    ]


def test_list_with_no_bundle_says_how_to_make_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli.app, ["--list"])
    assert result.exit_code == 0 and "holds no bundle; export one" in result.stdout


def test_a_wrong_name_lists_the_bundles_there_are(models: Path) -> None:
    with pytest.raises(EdgeError, match=r"'gpt2-int4'.*holds gpt2-int8, tiny-fp32") as caught:
        pick_model("gpt2-int4", "cpu")
    assert caught.value.field == "model"
    result = runner.invoke(cli.app, ["hi", "--model", "gpt2-int4"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("Error: There is no bundle 'gpt2-int4'")
    shutil.rmtree(models)
    with pytest.raises(EdgeError, match="models/ holds none"):
        pick_model("gpt2-int4", "cpu")
