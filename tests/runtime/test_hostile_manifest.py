"""Hostile bundles: a bad manifest, config or file is one sentence, never another exception.

Each case edits a copy of a real tiny bundle (or plain Optimum folder) and checks both doors: the
API raises :class:`EdgeError` naming what is wrong, and ``gpt2-generate`` exits 1 with exactly one
``Error:`` line on stderr and no traceback. A hypothesis fuzz then puts arbitrary JSON in any field
of ``bundle.json``: the bundle either works (loads and generates) or raises EdgeError.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpt2_edge.runtime import EdgeError, load
from gpt2_edge.runtime.cli.generate import app
from gpt2_edge.runtime.contract.bundle import manifest_from_optimum
from gpt2_edge.runtime.contract.files import file_entry
from gpt2_edge.runtime.contract.manifest import write_manifest
from gpt2_edge.runtime.graph.check import onnxruntime_reason
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

REWRITTEN = ("bundle.json", "config.json", "generation_config.json")  # copied, not linked
CLI_ARGS = ["Hello", "--provider", "cpu", "--max-new-tokens", "2"]


# --- Base bundles, built once --------------------------------------------------------------------


def link_tree(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose big files are hard links (the JSON files are real copies)."""
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name in REWRITTEN or item.is_dir():
            shutil.copy(item, dst / item.name)
            continue
        try:
            os.link(item, dst / item.name)
        except OSError:  # another file system
            shutil.copy(item, dst / item.name)
    return dst


@pytest.fixture(scope="module")
def bases(
    tiny_bundle: Path, tiny_optimum_export: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """``fused``: an exported bundle (the default fused graph); ``optimum_graph``: a bundle over
    Optimum's graph; ``optimum``: a plain Optimum folder; ``external``: that folder with its
    weights in model.onnx.data."""
    import onnx
    from gpt2_edge.exporter.onnx_files import save_model

    root = tmp_path_factory.mktemp("hostile")
    graph = link_tree(tiny_optimum_export, root / "optimum_graph")
    manifest = manifest_from_optimum(graph)
    manifest.files = {n: file_entry(graph / n) for n in ("model.onnx", "tokenizer.json")}
    manifest.graph = {"kind": "optimum", "kv_cache": "concat", "padding": "left"}
    write_manifest(graph, manifest)
    external = root / "external"
    shutil.copytree(tiny_optimum_export, external)
    save_model(onnx.load(str(external / "model.onnx")), external / "model.onnx", external=True)
    assert (external / "model.onnx.data").is_file()
    return {
        "fused": tiny_bundle,
        "optimum_graph": graph,
        "optimum": tiny_optimum_export,
        "external": external,
    }


# --- The cases -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    base: str  # a key of ``bases``
    prepare: Callable[[Path], Path]  # edits the copied folder, returns the path to load
    fragment: str  # the message must contain this


def edit_json(name: str, *path_and_value: Any) -> Callable[[Path], Path]:
    """Set ``path`` (keys) in the JSON file ``name`` to ``value``; ``DROP`` deletes it."""
    *path, value = path_and_value

    def prepare(folder: Path) -> Path:
        data = json.loads((folder / name).read_text())
        node = data
        for key in path[:-1]:
            node = node[key]
        if value is DROP:
            del node[path[-1]]
        elif path:
            node[path[-1]] = value
        else:
            data = value
        (folder / name).write_text(json.dumps(data))
        return folder

    return prepare


def edit_manifest(*path_and_value: Any) -> Callable[[Path], Path]:
    return edit_json("bundle.json", *path_and_value)


def edit_config(*path_and_value: Any) -> Callable[[Path], Path]:
    return edit_json("config.json", *path_and_value)


def write_text(name: str, text: str) -> Callable[[Path], Path]:
    def prepare(folder: Path) -> Path:
        (folder / name).write_text(text)
        return folder

    return prepare


def several(*steps: Callable[[Path], Path]) -> Callable[[Path], Path]:
    def prepare(folder: Path) -> Path:
        for step in steps:
            step(folder)
        return folder

    return prepare


def escaping_symlink(folder: Path) -> Path:
    """files lists a symbolic link that leads out of the bundle folder."""
    outside = folder.parent / "outside.txt"
    outside.write_text("secret")
    (folder / "notes.txt").symlink_to(outside)
    entry = {"size": outside.stat().st_size, "sha256": file_entry(outside)["sha256"]}
    return edit_manifest("files", "notes.txt", entry)(folder)


def symlink_loop(folder: Path) -> Path:
    """files lists a symbolic link that points at itself."""
    (folder / "loop.bin").symlink_to(folder / "loop.bin")
    return edit_manifest("files", "loop.bin", {"size": 1})(folder)


def bigger_tokenizer(folder: Path) -> Path:
    """A tokenizer with three more tokens than the model's vocabulary (hashes updated)."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.add_tokens(["<extra-1>", "<extra-2>", "<extra-3>"])
    path.unlink()  # a hard link to the base bundle's file: write a new file instead
    tokenizer.save(str(path))
    return edit_manifest("files", "tokenizer.json", file_entry(path))(folder)


def flip_kv_dtype(folder: Path) -> Path:
    """architecture.kv_dtype names the KV type the graph does not have."""
    data = json.loads((folder / "bundle.json").read_text())
    real = data["architecture"]["kv_dtype"]
    other = "float32" if real == "float16" else "float16"
    return edit_manifest("architecture", "kv_dtype", other)(folder)


def truncate_weights(folder: Path) -> Path:
    data = folder / "model.onnx.data"
    kept = data.read_bytes()[:100_000]
    data.unlink()  # a hard link: replace it rather than truncate the base folder's file
    data.write_bytes(kept)
    return folder


def model_file(folder: Path) -> Path:
    return folder / "model.onnx"


def manifest_is_a_folder(folder: Path) -> Path:
    (folder / "bundle.json").unlink()
    (folder / "bundle.json").mkdir()
    return folder


def replaced(name: str, kind: str) -> Callable[[Path], Path]:
    """``name`` replaced by a FIFO (a read would block for ever), a link to /dev/zero (a read
    would never end) or a folder."""

    def prepare(folder: Path) -> Path:
        path = folder / name
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "zero":
            path.symlink_to("/dev/zero")
        else:
            path.mkdir()
        return folder

    return prepare


DROP = object()
POSITIVE = "must be a positive integer"
TOKEN_ID = "must be null or a token id in [0, 50257)"
NESTED = "[" * 100_000 + "]" * 100_000
HUGE_INT = "1" + "0" * 5000  # over Python's 4300-digit limit for int()

# fmt: off
CASES = [
    # architecture: types, ranges, agreement among the fields
    Case("heads-string", "fused", edit_manifest("architecture", "heads", "four"),
         "architecture.heads must be a positive integer (at most 1048576), got 'four'"),
    Case("heads-zero", "fused", edit_manifest("architecture", "heads", 0),
         f"architecture.heads {POSITIVE}"),
    Case("heads-negative", "fused", edit_manifest("architecture", "heads", -4),
         f"architecture.heads {POSITIVE}"),
    Case("layers-bool", "fused", edit_manifest("architecture", "layers", True),
         f"architecture.layers {POSITIVE} (at most 1048576), got true"),
    Case("layers-float", "fused", edit_manifest("architecture", "layers", 2.0),
         f"architecture.layers {POSITIVE}"),
    Case("layers-missing", "fused", edit_manifest("architecture", "layers", DROP),
         "has no architecture.layers"),
    Case("context-zero", "fused", edit_manifest("architecture", "context_length", 0),
         f"architecture.context_length {POSITIVE}"),
    Case("context-huge", "fused", edit_manifest("architecture", "context_length", 10**9),
         "architecture.context_length must be a positive integer (at most 65536)"),
    Case("hidden-mismatch", "fused", edit_manifest("architecture", "hidden_size", 65),
         "hidden_size is 65 but heads x head_size is 4 x 16"),
    Case("kv-dtype", "fused", edit_manifest("architecture", "kv_dtype", "int3"),
         "architecture.kv_dtype must be one of"),
    Case("kv-dtype-bfloat16", "fused", edit_manifest("architecture", "kv_dtype", "bfloat16"),
         "architecture.kv_dtype must be one of 'float32', 'float16', got 'bfloat16'"),
    Case("model-type", "fused", edit_manifest("architecture", "model_type", "llama"),
         "architecture.model_type must be 'gpt2'"),
    Case("arch-unknown-field", "fused", edit_manifest("architecture", "n_experts", 8),
         "architecture.n_experts is not an architecture field"),
    Case("arch-list", "fused", edit_manifest("architecture", [2, 4]),
         "architecture must be an object, got [2, 4]"),
    Case("arch-missing", "fused", edit_manifest("architecture", DROP),
         "has no architecture"),
    # architecture against the graph and the tokenizer
    Case("layers-more-than-graph", "fused", edit_manifest("architecture", "layers", 3),
         "architecture.layers is 3 but model.onnx has past inputs for 2 layers"),
    Case("layers-fewer-than-graph", "optimum_graph", edit_manifest("architecture", "layers", 1),
         "architecture.layers is 1 but model.onnx has past inputs for 2 layers"),
    Case("heads-vs-graph", "fused",
         several(edit_manifest("architecture", "heads", 8),
                 edit_manifest("architecture", "head_size", 8)),
         "architecture.heads is 8 but model.onnx's KV tensors have 4"),
    Case("context-vs-graph", "fused", edit_manifest("architecture", "context_length", 4096),
         "architecture.context_length is 4096 but model.onnx's position table holds 128 "
         "positions"),
    Case("context-vs-optimum-graph", "optimum_graph",
         edit_manifest("architecture", "context_length", 2048),
         "architecture.context_length is 2048 but model.onnx's position table holds 128"),
    Case("kv-dtype-vs-graph", "fused", flip_kv_dtype,
         "but model.onnx's past and present tensors are"),
    Case("kv-dtype-vs-optimum-graph", "optimum_graph",
         edit_manifest("architecture", "kv_dtype", "float16"),
         "architecture.kv_dtype is 'float16' but model.onnx's past and present tensors are "
         "float32"),
    Case("vocab-vs-logits", "fused", edit_manifest("architecture", "vocab_size", 60000),
         "architecture.vocab_size is 60000 but model.onnx's logits have 50257"),
    Case("vocab-below-tokenizer", "fused",
         several(edit_manifest("architecture", "vocab_size", 1000),
                 edit_manifest("special_tokens", {"eos": 0})),
         "architecture.vocab_size is 1000 but tokenizer.json has 50257 tokens"),
    Case("tokenizer-bigger", "fused", bigger_tokenizer,
         "architecture.vocab_size is 50257 but tokenizer.json has 50260 tokens"),
    # io names
    Case("io-no-layer-index", "fused", edit_manifest("io", "past_key", "past_key_values.key"),
         "io.past_key must be a tensor name with one '%d'"),
    Case("io-two-directives", "fused", edit_manifest("io", "present_value", "present.%d.%s"),
         "io.present_value must be a tensor name with one '%d'"),
    Case("io-not-a-string", "fused", edit_manifest("io", "input_ids", 7),
         "io.input_ids must be a non-empty tensor name, got 7"),
    Case("io-unknown-output", "fused", edit_manifest("io", "logits", "scores"),
         "io.logits is 'scores' but model.onnx has no output of that name"),
    Case("io-unknown-past", "optimum_graph", edit_manifest("io", "past_key", "cache.%d.k"),
         "io.past_key is 'cache.%d.k' but model.onnx has no input 'cache.0.k'"),
    Case("io-same-past", "fused", edit_manifest("io", "past_value", "past_key_values.%d.key"),
         "io names the input 'past_key_values.0.key' for two roles"),
    Case("io-same-present", "fused", edit_manifest("io", "present_key", "present.%d.value"),
         "io names the output 'present.0.value' for two roles"),
    Case("io-ids-are-mask", "optimum_graph", edit_manifest("io", "input_ids", "attention_mask"),
         "io names the input 'attention_mask' for two roles"),
    Case("io-position-is-a-kv-tensor", "fused",
         edit_manifest("io", "position_ids", "present.0.key"),
         "takes the input 'position_ids', which io does not name"),
    Case("io-list", "fused", edit_manifest("io", ["input_ids"]),
         "io must be an object"),
    # special tokens: a string id never equals a token, so generation would never stop
    Case("eos-string", "fused", edit_manifest("special_tokens", "eos", "50256"),
         f"special_tokens.eos {TOKEN_ID}, got '50256'"),
    Case("eos-out-of-range", "fused", edit_manifest("special_tokens", "eos", 50257),
         f"special_tokens.eos {TOKEN_ID}, got 50257"),
    Case("pad-negative", "fused", edit_manifest("special_tokens", "pad", -1),
         f"special_tokens.pad {TOKEN_ID}"),
    Case("bos-bool", "fused", edit_manifest("special_tokens", "bos", False),
         f"special_tokens.bos {TOKEN_ID}, got false"),
    Case("special-list", "fused", edit_manifest("special_tokens", [50256]),
         "special_tokens must be an object"),
    # generation defaults pass the sampling validation
    Case("temperature-negative", "fused", edit_manifest("generation", "temperature", -1),
         "generation.temperature must be a number >= 0"),
    Case("temperature-huge-int", "fused", edit_manifest("generation", "temperature", 10**400),
         "generation.temperature must be a finite number"),
    Case("top-p-string", "fused", edit_manifest("generation", "top_p", "high"),
         "generation.top_p must be a number in (0, 1]"),
    Case("max-new-tokens-zero", "fused", edit_manifest("generation", "max_new_tokens", 0),
         "generation.max_new_tokens must be an integer >= 1"),
    Case("stop-numbers", "fused", edit_manifest("generation", "stop", [1, 2]),
         "generation.stop must be a non-empty string"),
    Case("generation-string", "fused", edit_manifest("generation", "greedy"),
         "generation must be an object, got 'greedy'"),
    # files: objects with a size and a hash, inside the bundle
    Case("files-entry-string", "fused", edit_manifest("files", "model.onnx", "abc"),
         "files.model.onnx must be an object with size and sha256"),
    Case("files-size-string", "fused", edit_manifest("files", "model.onnx", "size", "13 MB"),
         "files.model.onnx.size must be an integer >= 0"),
    Case("files-size-missing", "fused", edit_manifest("files", "model.onnx", "size", DROP),
         "has no files.model.onnx.size"),
    Case("files-sha-short", "fused", edit_manifest("files", "model.onnx", "sha256", "abc123"),
         "files.model.onnx.sha256 must be 64 lowercase hexadecimal digits"),
    Case("files-absolute", "fused", edit_manifest("files", "/etc/hostname", {"size": 1}),
         "files.'/etc/hostname' must be a relative path inside the bundle folder"),
    Case("files-dotdot", "fused", edit_manifest("files", "../fused/bundle.json", {"size": 1}),
         "files.'../fused/bundle.json' must be a relative path inside the bundle folder"),
    Case("files-symlink-out", "fused", escaping_symlink,
         "files.notes.txt leads outside the bundle folder"),
    Case("files-symlink-loop", "fused", symlink_loop,
         "loop.bin cannot be read (Too many levels of symbolic links)"),
    Case("files-list", "fused", edit_manifest("files", ["model.onnx"]),
         "files must be an object"),
    Case("files-missing", "fused", edit_manifest("files", DROP),
         "bundle.json lists no files, so the bundle's integrity cannot be checked"),
    Case("files-empty", "optimum_graph", edit_manifest("files", {}),
         "bundle.json lists no files, so the bundle's integrity cannot be checked"),
    Case("files-model-unlisted", "fused", edit_manifest("files", "model.onnx", DROP),
         "bundle.json does not list model.onnx under files, so its integrity cannot be checked"),
    Case("files-tokenizer-unlisted", "fused", edit_manifest("files", "tokenizer.json", DROP),
         "bundle.json does not list tokenizer.json under files"),
    # the rest of the manifest, and the file itself
    Case("version-bool", "fused", edit_manifest("format_version", True),
         "format version true; this runtime knows version 1, 2"),
    Case("version-string", "fused", edit_manifest("format_version", "2"),
         "format version '2'"),
    Case("format-missing", "fused", edit_manifest("format", DROP),
         "is not a gpt2-edge manifest"),
    Case("manifest-list", "fused", edit_manifest([1, 2]),
         "is not a gpt2-edge manifest"),
    Case("name-number", "fused", edit_manifest("name", 5),
         "name must be a string, got 5"),
    Case("precision-string", "fused", edit_manifest("precision", "int8"),
         "precision must be an object"),
    Case("graph-kind", "fused", edit_manifest("graph", "kind", "magic"),
         "graph.kind must be one of"),
    Case("shared-buffer-on-optimum-graph", "optimum_graph",
         edit_manifest("graph", "kv_cache", "shared-buffer"),
         "graph.kv_cache is 'shared-buffer' but model.onnx is not a gpt2-edge fused GQA graph"),
    Case("concat-on-fused-graph", "fused", edit_manifest("graph", "kv_cache", "concat"),
         "model.onnx is a gpt2-edge fused GQA graph, which runs on a shared KV buffer, but "
         "graph.kv_cache is 'concat'"),
    Case("no-graph-on-fused-graph", "fused", edit_manifest("graph", DROP),
         "graph.kv_cache is null instead of 'shared-buffer'"),
    Case("manifest-nested", "fused", write_text("bundle.json", NESTED),
         "bundle.json cannot be read as JSON"),
    Case("manifest-huge-int", "fused", write_text("bundle.json", '{"format": ' + HUGE_INT + "}"),
         "bundle.json cannot be read as JSON"),
    Case("manifest-folder", "fused", manifest_is_a_folder,
         "bundle.json is a folder, where a file is expected"),
    Case("manifest-fifo", "fused", replaced("bundle.json", "fifo"),
         "bundle.json is not a regular file (a FIFO, socket or device)"),
    Case("manifest-dev-zero", "fused", replaced("bundle.json", "zero"),
         "bundle.json is not a regular file"),
    Case("config-fifo", "optimum", replaced("config.json", "fifo"),
         "config.json is not a regular file"),
    Case("tokenizer-fifo", "fused", replaced("tokenizer.json", "fifo"),
         "tokenizer.json is not a regular file"),
    Case("model-folder", "fused", replaced("model.onnx", "folder"),
         "model.onnx is a folder, where a file is expected"),
    Case("weights-dev-zero", "external", replaced("model.onnx.data", "zero"),
         'External data path: "model.onnx.data" resolved path: "/dev/zero"'),
    Case("path-is-a-file", "fused", model_file,
         "model.onnx is a file, not a bundle folder"),
    # a plain Optimum folder: config.json and generation_config.json
    Case("config-no-n-head", "optimum", edit_config("n_head", DROP),
         "config.json has no n_head; it must be a positive integer"),
    Case("config-n-head-zero", "optimum", edit_config("n_head", 0),
         f"config.json: n_head {POSITIVE}"),
    Case("config-n-head-string", "optimum", edit_config("n_head", "four"),
         f"config.json: n_head {POSITIVE} (at most 1048576), got 'four'"),
    Case("config-n-embd-indivisible", "optimum", edit_config("n_embd", 66),
         "config.json: n_embd (66) must be a multiple of n_head (4)"),
    Case("config-vocab-null", "optimum", edit_config("vocab_size", None),
         f"config.json: vocab_size {POSITIVE}"),
    Case("config-positions-negative", "optimum", edit_config("n_positions", -1),
         f"config.json: n_positions {POSITIVE}"),
    Case("config-list", "optimum", edit_config([1, 2]),
         "config.json must hold a JSON object, got [1, 2]"),
    Case("config-not-json", "optimum", write_text("config.json", "{'n_head': 4}"),
         "config.json cannot be read as JSON"),
    Case("config-eos-string", "optimum", edit_config("eos_token_id", "eos"),
         f"config.json: eos_token_id {TOKEN_ID}, got 'eos'"),
    Case("config-layers-vs-graph", "optimum", edit_config("n_layer", 3),
         "config.json: n_layer is 3 but model.onnx has past inputs for 2 layers"),
    Case("config-heads-vs-graph", "optimum", edit_config("n_head", 8),
         "config.json: n_head is 8 but model.onnx's KV tensors have 4"),
    Case("config-positions-vs-graph", "optimum", edit_config("n_positions", 2048),
         "is 2048 but model.onnx's position table holds 128 positions"),
    Case("config-model-type", "optimum", edit_config("model_type", "llama"),
         "holds a 'llama' model; gpt2-edge runs GPT-2 models only"),
    Case("generation-config-corrupt", "optimum",
         write_text("generation_config.json", '{"do_sample": tru'),
         "generation_config.json cannot be read as JSON"),
    Case("generation-config-list", "optimum", edit_json("generation_config.json", ["greedy"]),
         "generation_config.json must hold a JSON object"),
    Case("generation-config-top-k", "optimum", edit_json("generation_config.json", "top_k", -5),
         "generation_config.json: top_k must be an integer >= 0"),
    Case("generation-config-temperature", "optimum",
         several(edit_json("generation_config.json", "do_sample", True),
                 edit_json("generation_config.json", "temperature", "hot")),
         "generation_config.json: temperature must be a number >= 0"),
    # a broken weights file
    Case("external-data-truncated", "external", truncate_weights,
         "onnxruntime cannot load"),
]
# fmt: on


def assert_one_error_line(result: Any, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    assert "Traceback" not in result.output
    assert fragment in message, message


@pytest.mark.export
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_one_sentence(
    case: Case, bases: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "50257" in case.fragment:  # the message names GPT-2's vocabulary size
        request.getfixturevalue("gpt2_vocabulary")
    target = case.prepare(link_tree(bases[case.base], tmp_path / "bundle"))
    with pytest.raises(EdgeError) as caught:
        load(target, provider="cpu").generate("Hello", max_new_tokens=2)
    message = str(caught.value)
    assert case.fragment in message and "\n" not in message, message
    assert_one_error_line(
        CliRunner().invoke(app, [*CLI_ARGS, "--model", str(target)]), case.fragment
    )


@pytest.mark.export
@pytest.mark.parametrize("base", ["fused", "optimum_graph", "optimum", "external"])
def test_the_bases_work(base: str, bases: dict[str, Path], tmp_path: Path) -> None:
    """The cases fail because of their edit: the unedited copies load and generate, and a fused
    bundle rewritten as format 1 still loads."""
    folder = link_tree(bases[base], tmp_path / "bundle")
    assert len(load(folder, provider="cpu").generate("Hello", max_new_tokens=2).tokens) == 2
    if base == "fused":
        edit_manifest("format_version", 1)(folder)
        assert load(folder, provider="cpu").generate("Hello", max_new_tokens=2).tokens


@pytest.mark.export
@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id in ("external-data-truncated", "heads-string")],
    ids=lambda c: c.id,
)
def test_nothing_leaks_onto_stderr(case: Case, bases: dict[str, Path], tmp_path: Path) -> None:
    """onnxruntime's own log (ANSI colours, C++ signatures) stays out of a real process's stderr."""
    target = case.prepare(link_tree(bases[case.base], tmp_path / "bundle"))
    command = [sys.executable, "-m", "gpt2_edge.runtime", *CLI_ARGS, "--model", str(target)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert case.fragment in lines[0] and "\x1b" not in done.stderr and "::" not in done.stderr


def test_onnxruntime_reason_keeps_only_the_reason() -> None:
    raw = (
        "[ONNXRuntimeError] : 1 : FAIL : Exception during initialization: /onnxruntime_src/"
        "onnxruntime/core/optimizer/optimizer_execution_frame.cc:74 onnxruntime::Info::Info("
        "const std::vector<const onnxruntime::Node*>&, const onnxruntime::logging::Logger&) "
        "[ONNXRuntimeError] : 1 : FAIL : tensorprotoutils.cc:2201 GetExtDataFromTensorProto "
        "External initializer: wte offset: 0 size to read: 128 given file_length: 100 are out "
        "of bounds or can not be read in full.\n"
    )
    assert onnxruntime_reason(RuntimeError(raw)) == (
        "External initializer: wte offset: 0 size to read: 128 given file_length: 100 are out "
        "of bounds or can not be read in full"
    )
    unreadable = (
        "[ONNXRuntimeError] : 1 : FAIL : Load model from /x/model.onnx failed:SystemError : 13"
    )
    assert onnxruntime_reason(RuntimeError(unreadable)) == "Permission denied"
    protobuf = (
        "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from /a b/model.onnx "
        "failed:Protobuf parsing failed."
    )
    assert onnxruntime_reason(RuntimeError(protobuf)) == "Protobuf parsing failed"
    assert onnxruntime_reason(RuntimeError("")) == "RuntimeError"


def test_a_path_with_a_nul_is_a_sentence() -> None:
    with pytest.raises(EdgeError, match="holds a NUL character"):
        load("models/a\0b", provider="cpu")


# --- Fuzz: any JSON in any field -----------------------------------------------------------------

# Values near the valid ones find the cross-checks; arbitrary JSON finds the type checks.
PLAUSIBLE = [
    None, True, False, 0, 1, -1, 2, 3, 4, 8, 16, 64, 128, 1024, 50256, 50257, 2**31, 2**64, 0.5,
    1.0, -0.0, float("nan"), float("inf"), "", "0" * 64, "a" * 64, "float16", "bfloat16", "gpt2",
    "input_ids", "attention_mask", "position_ids", "logits_index", "logits", "present.0.key",
    "past_key_values.%d.key", "past_key_values.%d.value", "present.%d.key", "present.%d.value",
    "fused-gqa", "optimum", "shared-buffer", "concat", "left", "right", "model.onnx",
    "tokenizer.json", "../x", "/x", "%d", "\x00", "\ud800", [], {}, ["stop"], {"size": 1},
]  # fmt: skip
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(PLAUSIBLE),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
# Keys a mutation may add where the base has none.
NEW_KEYS = [
    ("generation", "top_k"), ("generation", "seed"), ("generation", "stop"),
    ("generation", "truncate"), ("generation", "ignore_eos"),
    ("generation", "no_repeat_ngram_size"), ("special_tokens", "unk"), ("io", "extra"),
    ("architecture", "extra"),
    ("files", "model.onnx.data"), ("files", "extra.bin"), ("graph", "kv_cache"), ("extra",),
]  # fmt: skip
DELETE = object()


def key_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path in nested objects, the objects' own paths included."""
    if not isinstance(node, dict):
        return []
    paths = []
    for key, value in node.items():
        paths.append((*prefix, key))
        paths.extend(key_paths(value, (*prefix, key)))
    return paths


def mutate(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            return  # an earlier mutation replaced the parent
        node = node[key]
    if value is DELETE:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value


@pytest.fixture(scope="module")
def fuzz_base(bases: dict[str, Path]) -> tuple[Path, dict[str, Any], list[tuple[str, ...]]]:
    folder = bases["fused"]
    manifest = json.loads((folder / "bundle.json").read_text())
    return folder, manifest, sorted(set(key_paths(manifest)) | set(NEW_KEYS))


@pytest.mark.export
def test_any_json_in_any_field_loads_or_is_an_edge_error(
    fuzz_base: tuple[Path, dict[str, Any], list[tuple[str, ...]]],
) -> None:
    folder, manifest, paths = fuzz_base
    generated: list[bool] = []  # how many examples went all the way to a generation

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        st.lists(
            st.tuples(st.sampled_from(paths), st.one_of(st.just(DELETE), JSON)),
            min_size=1,
            max_size=3,
        )
    )
    def loads_or_edge_error(mutations: list[tuple[tuple[str, ...], Any]]) -> None:
        data = json.loads(json.dumps(manifest))
        for path, value in mutations:
            mutate(data, path, value)
        with tempfile.TemporaryDirectory() as tmp:
            target = link_tree(folder, Path(tmp) / "bundle")
            (target / "bundle.json").write_text(json.dumps(data))
            try:
                result = load(target, provider="cpu").generate("Hello", max_new_tokens=3)
            except EdgeError as exc:
                assert "\n" not in str(exc), str(exc)
                return
            assert 1 <= len(result.tokens) <= 3
            generated.append(True)

    loads_or_edge_error()
    assert generated, "no mutated bundle loaded: the fuzz only ever saw errors"
