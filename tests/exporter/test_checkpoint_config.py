"""A checkpoint whose config.json contradicts itself or its weights is one sentence naming the
field, before any slow step (the export step is a spy that must not be reached): heads that do
not divide the width, more or fewer layers than the weights hold, another vocabulary size, a
negative context, a string for a number, a flag that is a string, a token id outside the
vocabulary, weights that are not floating point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpt2_edge.exporter.graphs import optimum as onnx_export
from support.checkpoints import gpt2_safetensors
from typer.testing import CliRunner

CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "n_positions": 128,
    "vocab_size": 400,
}


def checkpoint(folder: Path, config: dict, weights: bytes | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(weights or gpt2_safetensors(CONFIG))
    (folder / "vocab.json").write_text('{"a": 0, "b": 1}')
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


@pytest.fixture
def export_spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []

    def spy(checkpoint: Path, *args: object, **kwargs: object) -> Path:
        calls.append(checkpoint)
        raise RuntimeError("the export step was reached")

    monkeypatch.setattr(onnx_export, "export_onnx", spy)
    return calls


def export(folder: Path) -> tuple[int, list[str]]:
    from gpt2_edge.exporter.cli import app

    result = CliRunner().invoke(app, [str(folder), "--output", str(folder.parent / "out")])
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return result.exit_code, lines


CASES = {
    # name: (config changes, weights changes, words the sentence holds)
    "heads-do-not-divide": ({"n_head": 5}, {}, ["n_head = 5", "n_embd = 64"]),
    "more-layers-than-weights": ({"n_layer": 3}, {}, ["h.2.", "n_layer = 3"]),
    "fewer-layers-than-weights": ({"n_layer": 1}, {}, ["n_layer = 1", "2 layers"]),
    "other-vocabulary": ({"vocab_size": 500}, {}, ["vocab_size = 500", "400 x 64"]),
    "negative-context": ({"n_positions": -1}, {}, ["n_positions = -1", "positive integer"]),
    "string-width": ({"n_embd": "64"}, {}, ['n_embd = "64"', "positive integer"]),
    "float-layers": ({"n_layer": 2.0}, {}, ["n_layer = 2.0"]),
    "bool-heads": ({"n_head": True}, {}, ["n_head = true"]),
    "alias-width": ({"hidden_size": 32, "n_embd": None}, {}, ["hidden_size = 32"]),
    "inner-size": ({"n_inner": 100}, {}, ["n_inner = 100", "64 x 256"]),
    "context-vs-weights": ({"n_positions": 1024}, {}, ["n_positions = 1024", "128 x 64"]),
    "string-flag": ({"scale_attn_weights": "false"}, {}, ["scale_attn_weights", "true or false"]),
    "epsilon-string": ({"layer_norm_epsilon": "1e-5"}, {}, ["layer_norm_epsilon"]),
    "dropout-nan": ({"attn_pdrop": float("nan")}, {}, ["attn_pdrop = NaN", "from 0 to 1"]),
    "eos-outside": ({"eos_token_id": 400}, {}, ["eos_token_id = 400", "0 to 399"]),
    "activation-number": ({"activation_function": 3}, {}, ["activation_function = 3"]),
    "architectures-string": ({"architectures": "GPT2LMHeadModel"}, {}, ["architectures"]),
    "weights-wrong-width": ({}, {"h__1__attn__c_proj__weight": [64, 32]}, ["h.1.attn.c_proj"]),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_contradiction_is_one_sentence_before_the_export(
    tmp_path: Path, export_spy: list[Path], case: str
) -> None:
    changes, weights, words = CASES[case]
    config = {k: v for k, v in {**CONFIG, **changes}.items() if v is not None}
    folder = checkpoint(tmp_path / "ckpt", config, gpt2_safetensors(CONFIG, **weights))
    code, errors = export(folder)
    assert code == 1 and len(errors) == 1, errors
    assert all(word in errors[0] for word in words), errors[0]
    assert export_spy == []
    assert not (tmp_path / "out").exists()


def test_integer_weights_are_refused(tmp_path: Path, export_spy: list[Path]) -> None:
    data = bytearray(gpt2_safetensors(CONFIG))
    size = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + size].replace(
        b'"transformer.wte.weight": {"dtype": "F16"', b'"transformer.wte.weight": {"dtype": "I16"'
    )
    code, errors = export(
        checkpoint(tmp_path / "ckpt", CONFIG, bytes(data[:8] + header + data[8 + size :]))
    )
    assert code == 1 and "I16" in errors[0] and "floating point" in errors[0], errors


def test_a_consistent_checkpoint_reaches_the_export(tmp_path: Path, export_spy: list[Path]) -> None:
    """The positive side: the same checks pass a checkpoint whose config and weights agree."""
    code, _ = export(checkpoint(tmp_path / "ckpt", CONFIG))
    assert export_spy == [tmp_path / "ckpt"] and code != 0


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_special_file_in_the_checkpoint_is_named(
    tmp_path: Path, export_spy: list[Path], name: str, kind: str
) -> None:
    """A FIFO, a folder or a link to /dev/zero where a file should be: its own sentence (it had
    read as "no config.json" or "no model weights"; a FIFO would hang the loader)."""
    import os

    folder = checkpoint(tmp_path / "ckpt", CONFIG)
    (folder / name).unlink()
    if kind == "fifo":
        os.mkfifo(folder / name)
    elif kind == "folder":
        (folder / name).mkdir()
    else:
        (folder / name).symlink_to("/dev/zero")
    code, errors = export(folder)
    assert code == 1 and len(errors) == 1 and f"{name} is " in errors[0], errors
    assert "where a file is expected" in errors[0] and export_spy == []


def test_an_empty_model_is_not_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    checkpoint(tmp_path / "here", CONFIG)
    monkeypatch.chdir(tmp_path / "here")  # Path("") is "." and this is a checkpoint
    from gpt2_edge.exporter.cli import app

    result = CliRunner().invoke(app, ["", "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Error: The model is empty; pass a hub id or a checkpoint folder." in result.output
