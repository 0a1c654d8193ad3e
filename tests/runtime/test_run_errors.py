"""A manifest that lies about its graph, caught at load or, failing that, when the graph runs.

- The context length against the graph's position table, read from model.onnx without onnx.
- Any onnxruntime error in a run (each runner, the shared-buffer decoder, the one-shot forward)
  is one sentence that names the likely cause, never a traceback.
- ``architecture.kv_dtype``: a value the runtime knows, and the graph's.
- ``files``: a bundle.json that lists nothing cannot be checked, so it is refused.

Torch-free: the fused bundle is built from random weights (``support/fused_bundle.py``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime import EdgeError, load
from gpt2_edge.runtime.cli import generate as cli
from gpt2_edge.runtime.decoders.runners import BindingRunner, NumpyRunner
from gpt2_edge.runtime.graph import check as graph_check
from gpt2_edge.runtime.graph.check import onnxruntime_reason
from gpt2_edge.runtime.graph.names import GraphNames
from gpt2_edge.runtime.graph.wire import position_table
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from support.fused_bundle import CONTEXT, build_fused_bundle
from support.sentences import assert_one_line
from typer.testing import CliRunner

LONG_PROMPT = "word " * (CONTEXT + 40)  # more tokens than the graph has positions
NAMES = GraphNames("ids", "mask", "pos", ("k", "v"), ("logits", "pk", "pv"))


@pytest.fixture(scope="module")
def tokenizer_json(gpt2_tokenizer_dir: Path) -> Path:
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("building the fused graph needs onnx")
    return gpt2_tokenizer_dir / "tokenizer.json"


@pytest.fixture(scope="module")
def bundle(tokenizer_json: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fused_bundle(tmp_path_factory.mktemp("run-errors") / "tiny", tokenizer_json)


@pytest.fixture(scope="module")
def half_kv_bundle(tokenizer_json: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run-errors") / "half"
    return build_fused_bundle(folder, tokenizer_json, half_kv=True)


def edited(bundle: Path, target: Path, change: Any) -> Path:
    """A copy of ``bundle`` (big files hard-linked) whose bundle.json ``change`` edited in place."""
    target.mkdir()
    for item in bundle.iterdir():
        if item.name == "bundle.json":
            shutil.copy(item, target / item.name)
        else:
            os.link(item, target / item.name)
    data = json.loads((target / "bundle.json").read_text())
    change(data)
    (target / "bundle.json").write_text(json.dumps(data))
    return target


def context(length: int) -> Any:
    return lambda data: data["architecture"].update(context_length=length)


def run_cli(folder: Path, prompt: str = "Hello") -> Any:
    args = [prompt, "--model", str(folder), "--provider", "cpu", "--max-new-tokens", "2"]
    return CliRunner().invoke(cli.app, args)


# --- The context length against the position table -----------------------------------------------


def test_the_position_table_is_read_from_the_file(bundle: Path, tmp_path: Path) -> None:
    assert position_table(bundle / "model.onnx", "position_ids") == CONTEXT
    assert position_table(bundle / "model.onnx", "no_such_input") is None
    assert position_table(bundle / "tokenizer.json", "position_ids") is None  # not protobuf
    assert position_table(tmp_path / "absent.onnx", "position_ids") is None
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert position_table(tmp_path / "empty.onnx", "position_ids") is None


def test_a_context_longer_than_the_graph_is_refused_at_load(bundle: Path, tmp_path: Path) -> None:
    folder = edited(bundle, tmp_path / "b", context(2 * CONTEXT))
    fragment = (
        f"architecture.context_length is {2 * CONTEXT} but model.onnx's position table holds "
        f"{CONTEXT} positions"
    )
    with pytest.raises(EdgeError, match=fragment):
        load(folder, provider="cpu")
    assert_one_line(run_cli(folder), 1, fragment)
    # A shorter context than the table is the manifest's choice.
    shorter = edited(bundle, tmp_path / "c", context(CONTEXT // 2))
    assert load(shorter, provider="cpu").generate("Hello", max_new_tokens=2).tokens


@pytest.fixture()
def table_unseen(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load cannot find the position table (a graph laid out otherwise)."""
    monkeypatch.setattr(graph_check, "position_table", lambda *args: None)


@pytest.mark.usefixtures("table_unseen")
def test_a_run_past_the_position_table_is_one_sentence(bundle: Path, tmp_path: Path) -> None:
    folder = edited(bundle, tmp_path / "b", context(2 * CONTEXT))
    gen = load(folder, provider="cpu")
    cause = f"architecture.context_length ({2 * CONTEXT}) may be larger than the graph supports"
    with pytest.raises(EdgeError, match="onnxruntime failed to run model.onnx") as caught:
        gen.generate(LONG_PROMPT, max_new_tokens=2)  # the shared-buffer decoder
    message = str(caught.value)
    assert cause in message and "idx=" in message and "\n" not in message, message
    ids = np.arange(CONTEXT + 8)[None] % 1000  # (1, T) past the table: the one-shot forward
    with pytest.raises(EdgeError, match=re.escape(cause)):
        gen.session.logits(ids)
    assert_one_line(run_cli(folder, LONG_PROMPT), 1, cause)


def test_a_failure_within_the_table_does_not_blame_the_context(bundle: Path) -> None:
    session = load(bundle, provider="cpu").session
    error = session.run_failed(ort_state.Fail("Failed to allocate memory"), np.array([[5]]))
    assert str(error) == (
        "onnxruntime failed to run model.onnx on positions up to 5: Failed to allocate memory."
    )


# --- Every runner turns onnxruntime's errors into a sentence -------------------------------------


class FailingSession:
    """An onnxruntime session whose every run fails as onnxruntime fails."""

    def __init__(self, exc: Exception):
        self.exc = exc

    def run(self, outputs: Any, feeds: Any) -> Any:
        raise self.exc

    def io_binding(self) -> Any:
        return FakeBinding()

    def run_with_iobinding(self, binding: Any) -> None:
        raise self.exc


class FakeBinding:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


@pytest.mark.parametrize(
    "exc",
    [ort_state.InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : bad feed"),
     RuntimeError("Error in execution: bad feed")],  # run_with_iobinding's form
)  # fmt: skip
@pytest.mark.parametrize("kind", ["numpy", "binding"])
def test_runners_raise_a_sentence(kind: str, exc: Exception) -> None:
    ort_session = FailingSession(exc)
    runner = (
        NumpyRunner(ort_session, NAMES)
        if kind == "numpy"
        else BindingRunner(ort_session, NAMES, device="cpu")
    )
    past = [np.zeros((1, 1, 0, 2), np.float32)] * 2
    ids = np.array([[1]])
    with pytest.raises(EdgeError) as caught:
        runner.run(ids, np.ones((1, 1), np.int64), np.array([[0]]), past)
    assert str(caught.value) == "onnxruntime failed to run the graph: bad feed."


def test_a_bug_keeps_its_traceback() -> None:
    """Only onnxruntime's errors become sentences; a Python error in the call stays one."""
    runner = NumpyRunner(FailingSession(TypeError("a bug")), NAMES)
    with pytest.raises(TypeError):
        runner.run(np.array([[1]]), np.ones((1, 1)), np.array([[0]]), [None, None])


def test_onnxruntime_reason_names_the_failing_node() -> None:
    raw = (
        "Error in execution: Non-zero status code returned while running Gather node. "
        "Name:'Gather_7' Status Message: indices element out of data bounds, idx=1024 must be "
        "within the inclusive range [-1024,1023]"
    )
    assert onnxruntime_reason(RuntimeError(raw)) == (
        "Gather node 'Gather_7': indices element out of data bounds, idx=1024 must be within the "
        "inclusive range [-1024,1023]"
    )


# --- architecture.kv_dtype -----------------------------------------------------------------------


def kv_dtype(value: str) -> Any:
    return lambda data: data["architecture"].update(kv_dtype=value)


def test_an_unknown_kv_dtype_is_refused(bundle: Path, tmp_path: Path) -> None:
    folder = edited(bundle, tmp_path / "b", kv_dtype("bfloat16"))
    fragment = "architecture.kv_dtype must be one of 'float32', 'float16', got 'bfloat16'"
    with pytest.raises(EdgeError, match=fragment):
        load(folder, provider="cpu")
    assert_one_line(run_cli(folder), 1, fragment)


@pytest.mark.parametrize(("claimed", "real"), [("float16", "float32"), ("float32", "float16")])
def test_a_kv_dtype_that_is_not_the_graphs_is_refused(
    claimed: str, real: str, bundle: Path, half_kv_bundle: Path, tmp_path: Path
) -> None:
    source = half_kv_bundle if real == "float16" else bundle
    folder = edited(source, tmp_path / "b", kv_dtype(claimed))
    fragment = (
        f"architecture.kv_dtype is '{claimed}' but model.onnx's past and present tensors are {real}"
    )
    with pytest.raises(EdgeError, match=fragment):
        load(folder, provider="cpu")
    assert_one_line(run_cli(folder), 1, fragment)
    assert load(source, provider="cpu").generate("Hello", max_new_tokens=2).tokens


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("files", [None, {}], ids=["absent", "empty"])
def test_a_manifest_that_lists_no_files_is_refused(
    files: dict | None, bundle: Path, tmp_path: Path
) -> None:
    def change(data: dict) -> None:
        if files is None:
            del data["files"]
        else:
            data["files"] = files

    folder = edited(bundle, tmp_path / "b", change)
    fragment = "bundle.json lists no files, so the bundle's integrity cannot be checked"
    with pytest.raises(EdgeError, match=fragment):
        load(folder, provider="cpu")
    assert_one_line(run_cli(folder), 1, fragment)
