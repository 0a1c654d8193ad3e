"""Exporter pieces that need no torch: target detection, IO names, tokenizer, output names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gpt2_edge.exporter import ExportError
from gpt2_edge.exporter.graphs.describe import io_names
from gpt2_edge.exporter.pipeline import default_output
from gpt2_edge.exporter.recipes.targets import cpu_flags, detect_target, resolve_target
from gpt2_edge.exporter.source import model_name
from gpt2_edge.exporter.writing.tokenizer_files import build_tokenizer, write_tokenizer
from gpt2_edge.runtime.errors import EdgeError


@pytest.mark.parametrize(
    "machine, flags, want",
    [
        ("x86_64", {"avx", "avx2", "fma"}, "avx2"),
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, "avx512"),
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "avx512_vnni"),
        ("aarch64", {"asimd"}, "arm64"),
        ("arm64", set(), "arm64"),
        ("x86_64", set(), "avx2"),
    ],
)
def test_detect_target(machine: str, flags: set[str], want: str) -> None:
    assert detect_target(machine, flags) == want


def test_cpu_flags_reads_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx avx2 fma\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_resolve_target() -> None:
    assert resolve_target("avx512").name == "avx512"
    assert resolve_target("auto").name in ("avx2", "avx512", "avx512_vnni", "arm64")
    portable = resolve_target("portable")  # the default: right on AVX2-only x86 and on ARM64
    assert portable.reduce_range and "AVX2" in portable.cpus and "ARM64" in portable.cpus
    assert not resolve_target("avx512_vnni").reduce_range
    with pytest.raises(ExportError, match="Unknown target 'sse'"):
        resolve_target("sse")
    assert issubclass(ExportError, EdgeError)


def test_io_names_from_graph_names() -> None:
    inputs = ["input_ids", "attention_mask", "position_ids"]
    inputs += [f"past_key_values.{i}.{k}" for i in range(3) for k in ("key", "value")]
    outputs = ["logits"] + [f"present.{i}.{k}" for i in range(3) for k in ("key", "value")]
    assert io_names(inputs, outputs, 3) == {
        "input_ids": "input_ids",
        "attention_mask": "attention_mask",
        "position_ids": "position_ids",
        "logits": "logits",
        "past_key": "past_key_values.%d.key",
        "past_value": "past_key_values.%d.value",
        "present_key": "present.%d.key",
        "present_value": "present.%d.value",
    }


def test_io_names_other_style_and_missing_layer() -> None:
    inputs = ["input_ids"] + [f"past_{i}_{k}" for i in range(2) for k in ("key", "value")]
    outputs = ["logits"] + [f"present_{i}_{k}" for i in range(2) for k in ("key", "value")]
    io = io_names(inputs, outputs, 2)
    assert io["past_key"] == "past_%d_key" and io["present_value"] == "present_%d_value"
    assert "attention_mask" not in io
    with pytest.raises(ExportError, match="for all 3 layers"):
        io_names(inputs, outputs, 3)


def test_default_output_names() -> None:
    assert default_output("gpt2", False) == Path("models/gpt2")
    assert default_output("openai-community/gpt2-medium", True) == Path("models/gpt2-medium-int8")
    assert default_output("/data/ckpts/my-gpt2/", False) == Path("models/my-gpt2")
    assert model_name("distilgpt2") == "distilgpt2"


def test_tokenizer_built_from_vocab_and_merges(gpt2_tokenizer_dir: Path, tmp_path: Path) -> None:
    """Built from vocab.json + merges.txt, it encodes and decodes like the real tokenizer.json."""
    from tokenizers import Tokenizer

    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(gpt2_tokenizer_dir / name, tmp_path / name)
    built = Tokenizer.from_file(str(write_tokenizer(tmp_path, tmp_path / "tokenizer.json")))
    real = Tokenizer.from_file(str(gpt2_tokenizer_dir / "tokenizer.json"))
    text = "Hello world!  Ünïcödé 🙂 and\n\tcode: x = 3.14<|endoftext|>It's  done."
    assert built.encode(text).ids == real.encode(text).ids
    assert built.decode(built.encode(text).ids, skip_special_tokens=False) == text
    assert built.token_to_id("<|endoftext|>") == 50256


def test_tokenizer_json_is_copied(gpt2_tokenizer_dir: Path, tmp_path: Path) -> None:
    target = write_tokenizer(gpt2_tokenizer_dir, tmp_path / "tokenizer.json")
    assert target.read_bytes() == (gpt2_tokenizer_dir / "tokenizer.json").read_bytes()


def test_no_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="has no tokenizer"):
        write_tokenizer(tmp_path, tmp_path / "tokenizer.json")


def test_build_tokenizer_small_vocab(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    tok = build_tokenizer(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tok.encode("ab<|endoftext|>").ids == [2, 3]


def test_bits_implies_quantize() -> None:
    """export_bundle(bits=4) means int4, as --bits 4 does on the command line."""
    from gpt2_edge.exporter.plan import make_plan

    assert make_plan("gpt2", bits=4).precision.kind == "int4"
    assert make_plan("gpt2").precision.kind == "fp32"
    with pytest.raises(ExportError, match="--bits 3"):
        make_plan("gpt2", bits=3)
