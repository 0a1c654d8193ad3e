"""Every input a command reads whole is read with a bound: a prompt on standard input, a line of
``--interactive``, a text to score, a checkpoint's or a bundle's JSON. An endless input (an
endless stream here, ``/dev/zero`` in a subprocess under a memory cap) ends in one sentence
after reading no more than the bound, never in a MemoryError or a hang."""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from gpt2_edge.runtime import EdgeError
from gpt2_edge.runtime.cli import generate as generate_cli
from gpt2_edge.runtime.contract import files
from gpt2_edge.runtime.contract.tokenizer import Tokenizer
from gpt2_edge.runtime.generation import evaluate

GUARD = 64 << 20  # the endless stream fails the test past this: a reader without a bound


class Endless(io.RawIOBase):
    """An input that never ends (``/dev/zero``'s bytes or one repeated line), failing the test
    once more than :data:`GUARD` bytes were read from it."""

    def __init__(self, fill: bytes = b"\0"):
        self.fill, self.given = fill, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        assert self.given < GUARD, "the input was read without a bound"
        size = len(buffer)
        buffer[:size] = (self.fill * (size // len(self.fill) + 1))[:size]
        self.given += size
        return size


def endless_stdin(monkeypatch: pytest.MonkeyPatch, fill: bytes = b"\0") -> Endless:
    raw = Endless(fill)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(raw)))
    return raw


def test_a_prompt_on_endless_stdin_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = endless_stdin(monkeypatch)
    with pytest.raises(EdgeError, match="Standard input holds more than 32 MiB"):
        generate_cli.read_prompt("-")
    assert raw.given <= files.MAX_TEXT_BYTES + (1 << 20)


def test_a_prompt_at_the_bound_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a" * (files.MAX_TEXT_BYTES - 1) + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert generate_cli.read_prompt("-") == text[:-1]


def test_an_endless_interactive_line_ends_the_loop_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    endless_stdin(monkeypatch, b"x")
    with pytest.raises(EdgeError, match="An input line is longer than 32 MiB"):
        generate_cli.interact(None, None, False)  # type: ignore[arg-type]  # fails before using them
    assert capsys.readouterr().err == "> \n"  # the sentence gets a line of its own


def test_a_line_of_exactly_the_bound_is_a_prompt() -> None:
    line = b"y" * files.MAX_TEXT_BYTES + b"\n"
    stream = io.BytesIO(line + b"next\n")
    assert files.read_line_bounded(stream, files.MAX_TEXT_BYTES, "too long") == line
    assert files.read_line_bounded(stream, files.MAX_TEXT_BYTES, "too long") == b"next\n"


def test_a_text_to_score_on_endless_stdin_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endless_stdin(monkeypatch)
    with pytest.raises(EdgeError, match="Standard input holds more than 32 MiB of text"):
        evaluate.read_text("-")


def _capped(limit: int = 1 << 30):  # -> preexec_fn
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_gpt2_eval_on_dev_zero_under_a_memory_cap(tmp_path: Path) -> None:
    """The issue's case: gpt2-eval --text /dev/zero grew to 22.6 GB. The text is read before
    any model is looked for, so no bundle is needed."""
    script = "from gpt2_edge.runtime.cli.evaluate import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", script, "--text", "/dev/zero", "--provider", "cpu"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        preexec_fn=_capped(2 << 30),
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "Error: /dev/zero holds more than 32 MiB of text, the most gpt2-eval scores; score a "
        "part of it (head -c 32M)."
    ]


def test_huge_sparse_json_files_are_refused_unread(tmp_path: Path) -> None:
    """A checkpoint's config.json or a bundle's manifest the size of a disk (sparse): one
    sentence, read no further than the bound (a subprocess under a 1 GiB memory cap)."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    with open(ckpt / "config.json", "wb") as fh:
        fh.truncate(1 << 40)
    models = tmp_path / "models" / "big"
    models.mkdir(parents=True)
    os.link(ckpt / "config.json", models / "bundle.json")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gpt2_edge.exporter.source import read_config\n"
        "from gpt2_edge.exporter.errors import ExportError\n"
        "from gpt2_edge.runtime.contract.models_dir import precision_of\n"
        "print(repr(precision_of(Path('models/big'))))\n"
        "try:\n"
        "    read_config(Path('ckpt'), 'ckpt')\n"
        "except ExportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        preexec_fn=_capped(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "''",
        "ckpt/config.json is larger than 16 MiB, which no JSON file of a checkpoint is.",
    ]


def test_long_texts_are_tokenized_in_pieces_to_the_same_ids(gpt2_tokenizer_dir: Path) -> None:
    """gpt2-eval's texts are tokenized in pieces cut where GPT-2's pre-tokenizer cuts anyway:
    the same ids as one call, on text with long words, runs of spaces and special tokens."""
    tok = Tokenizer(gpt2_tokenizer_dir / "tokenizer.json")
    words = "The café  costs 3.50€\n\n  \tnext<|endoftext|> line 😀😀 done. " * 3000
    text = words + "x" * 70_000 + " tail\n" + "é" * 90_000 + words
    one = tok.backend.encode(text, add_special_tokens=False).ids
    assert len(text) > 4 * (1 << 16)
    assert one == tok.encode(text, add_special_tokens=False).tolist() == tok.encode(text).tolist()
