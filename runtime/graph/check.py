"""The manifest against the graph it describes, once onnxruntime has opened it; and onnxruntime's
load errors as one sentence.

A manifest can be well-formed and still wrong about its graph (three layers for a two-layer
graph, 8 heads for 4): onnxruntime would then fail at the first step with a traceback, or worse,
run on nonsense. Everything the decode loop relies on is compared here, by name, before a token is
computed: the tensor names of every layer, the element types, the head count and head size of the
KV tensors, the width of the logits, and that a shared-buffer KV cache is asked of a graph built
for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.schema import LAYER_ROLES, shown
from ..errors import EdgeError
from .wire import position_table

if TYPE_CHECKING:
    from ..contract.manifest import Manifest

# The fused GQA graph says what it is in its metadata (the exporter's FUSED_GRAPH_TAG).
GRAPH_TAG_KEY = "gpt2_edge_graph"
FUSED_TAG_PREFIX = "gpt2-edge-fused-gqa"
# Inputs the runtime feeds as int64 arrays, by io role.
INT64_ROLES = ("input_ids", "attention_mask", "position_ids", "logits_index")
OPTIONAL_ROLES = INT64_ROLES[1:]  # fed only when the graph has them
FLOAT_TYPES = ("tensor(float)", "tensor(float16)")
KV_DTYPE_OF = {"tensor(float)": "float32", "tensor(float16)": "float16"}  # manifest's kv_dtype
_LISTED = 6  # graph names quoted in a message
_REASON_CHARS = 300


@dataclass(frozen=True)
class Tensor:
    """One graph input or output as onnxruntime describes it; a dim is an int, a name or None."""

    shape: tuple[Any, ...]
    type: str


@dataclass(frozen=True)
class GraphFacts:
    """What the runtime needs to know of a graph: its inputs and outputs by name, and its tag."""

    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]
    tag: str = ""  # metadata GRAPH_TAG_KEY; "" when absent
    positions: int | None = None  # rows of the position table; None when not found


def graph_facts(
    session: Any, model: Path | None = None, position_ids: str = "position_ids"
) -> GraphFacts:
    """The facts of an ``onnxruntime.InferenceSession``, and the size of the position table of
    the graph file ``model`` (read when given) that the input ``position_ids`` indexes."""

    def table(args: Any) -> dict[str, Tensor]:
        return {a.name: Tensor(tuple(a.shape or ()), str(a.type)) for a in args}

    metadata = session.get_modelmeta().custom_metadata_map
    return GraphFacts(
        table(session.get_inputs()),
        table(session.get_outputs()),
        metadata.get(GRAPH_TAG_KEY, ""),
        None if model is None else position_table(model, position_ids),
    )


class _Checker:
    """Raises sentences about one manifest and one graph: ``<where>: <field> ... <model> ...``."""

    def __init__(self, where: Path, model: str, names: Mapping[str, str]):
        self.where, self.model, self.names = where, model, names

    def label(self, name: str) -> str:
        """A manifest field as the source file calls it (an Optimum folder's config.json)."""
        return self.names.get(name, name)

    def fail(self, message: str) -> EdgeError:
        return EdgeError(f"{self.where}: {message}")

    def listing(self, table: Mapping[str, Tensor]) -> str:
        names = list(table)
        more = f", and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        return ", ".join(names[:_LISTED]) + more


def check_graph(
    manifest: Manifest,
    graph: GraphFacts,
    where: Path,
    model: str = "model.onnx",
    names: Mapping[str, str] | None = None,
) -> None:
    """Check that ``manifest`` describes ``graph``; raise a sentence naming the field otherwise.

    Args:
        manifest: the bundle's manifest (already valid on its own).
        graph: the graph's inputs, outputs and tag.
        where: the file the manifest came from, for messages.
        model: the graph file's name, for messages.
        names: how that file names the manifest's fields (default: as ``bundle.json`` does).
    """
    check = _Checker(where, model, names or {})
    past, present = _layer_names(manifest, graph, check)
    _check_fed(manifest, graph, past, check)
    _check_types(manifest, graph, past, present, check)
    _check_shapes(manifest, graph, past + present, check)
    _check_kv_cache(manifest, graph, check)
    _check_context(manifest, graph, check)


def _check_context(manifest: Manifest, graph: GraphFacts, check: _Checker) -> None:
    """The context fits the graph's position table: a position past its end would fail in the
    middle of a generation (onnxruntime's Gather: "indices element out of data bounds")."""
    context = manifest.architecture.context_length
    if graph.positions is not None and context > graph.positions:
        raise check.fail(
            f"{check.label('architecture.context_length')} is {context} but {check.model}'s "
            f"position table holds {graph.positions} positions; it can be at most that."
        )


def _check_kv_cache(manifest: Manifest, graph: GraphFacts, check: _Checker) -> None:
    """A shared KV buffer is asked of the fused GQA graph and of no other.

    The fused graph's attention reads each row's length from its mask and so needs the
    right-padded batches of the shared buffer; driven like Optimum's graph (left-padded, a growing
    past) it would run without an error and return nonsense for padded rows.
    """
    kv_cache = manifest.graph.get("kv_cache")
    fused = graph.tag.startswith(FUSED_TAG_PREFIX)
    if kv_cache == "shared-buffer" and not fused:
        raise check.fail(
            f"graph.kv_cache is 'shared-buffer' but {check.model} is not a gpt2-edge fused GQA "
            "graph, which is the only kind that can share its KV buffers."
        )
    if fused and kv_cache != "shared-buffer":
        raise check.fail(
            f"{check.model} is a gpt2-edge fused GQA graph, which runs on a shared KV buffer, but "
            f"graph.kv_cache is {shown(kv_cache)} instead of 'shared-buffer'."
        )


def _layer_names(
    manifest: Manifest, graph: GraphFacts, check: _Checker
) -> tuple[list[str], list[str]]:
    """The flat past input and present output names of every layer, each checked to exist."""
    io, layers, model = manifest.io, manifest.architecture.layers, check.model
    for role, table, kind in (
        ("input_ids", graph.inputs, "input"),
        ("logits", graph.outputs, "output"),
    ):
        if io[role] not in table:
            raise check.fail(
                f"{check.label('io.' + role)} is {shown(io[role])} but {model} has no {kind} of "
                f"that name ({kind}s: {check.listing(table)})."
            )
    found = 0
    while io["past_key"] % found in graph.inputs:
        found += 1
    if found == 0:
        raise check.fail(
            f"{check.label('io.past_key')} is {shown(io['past_key'])} but {model} has no input "
            f"{shown(io['past_key'] % 0)} (inputs: {check.listing(graph.inputs)})."
        )
    if found != layers:
        raise check.fail(
            f"{check.label('architecture.layers')} is {layers} but {model} has past inputs for "
            f"{found} layers."
        )
    past: list[str] = []
    present: list[str] = []
    for i in range(layers):
        for role in LAYER_ROLES:
            name = io[role] % i
            table, kind = (
                (graph.inputs, "input") if role.startswith("past") else (graph.outputs, "output")
            )
            if name not in table:
                raise check.fail(
                    f"{check.label('io.' + role)} names {shown(name)} for layer {i}, but {model} "
                    f"has no {kind} of that name."
                )
            (past if kind == "input" else present).append(name)
    return past, present


def _check_fed(manifest: Manifest, graph: GraphFacts, past: list[str], check: _Checker) -> None:
    """Every graph input is fed exactly once, and every output asked for once."""
    io = manifest.io
    fed = [io["input_ids"], *(io[r] for r in OPTIONAL_ROLES if io.get(r) in graph.inputs), *past]
    outputs = [io["logits"]] + [
        io[r] % i for i in range(manifest.architecture.layers) for r in LAYER_ROLES[2:]
    ]
    for names, what in ((fed, "input"), (outputs, "output")):
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise check.fail(f"io names the {what} {shown(twice)} for two roles.")
    unfed = [name for name in graph.inputs if name not in fed]
    if unfed:
        raise check.fail(
            f"{check.model} takes the input {shown(unfed[0])}, which {check.label('io')} does not "
            "name."
        )


def _check_types(
    manifest: Manifest, graph: GraphFacts, past: list[str], present: list[str], check: _Checker
) -> None:
    """int64 ids, mask, positions and index; one float type for every KV tensor; float logits."""
    io = manifest.io
    for role in INT64_ROLES:
        tensor = graph.inputs.get(io.get(role, ""))
        if tensor is not None and tensor.type != "tensor(int64)":
            raise check.fail(
                f"{check.label('io.' + role)} names the input {shown(io[role])}, which is a "
                f"{tensor.type} in {check.model}; the runtime feeds tensor(int64)."
            )
    kv_types = {graph.inputs[n].type for n in past} | {graph.outputs[n].type for n in present}
    if len(kv_types) != 1 or not kv_types <= set(FLOAT_TYPES):
        raise check.fail(
            f"the past and present tensors that io names are {', '.join(sorted(kv_types))} in "
            f"{check.model}; they must all be one of {', '.join(FLOAT_TYPES)}."
        )
    graph_kv = KV_DTYPE_OF[kv_types.pop()]
    # Only bundle.json states a KV type; a plain Optimum folder's config.json does not (its
    # derived manifest assumes float32), so there is nothing of the user's to contradict.
    if not check.names and manifest.architecture.kv_dtype != graph_kv:
        raise check.fail(
            f"architecture.kv_dtype is {shown(manifest.architecture.kv_dtype)} but "
            f"{check.model}'s past and present tensors are {graph_kv}."
        )
    logits = graph.outputs[io["logits"]].type
    if logits not in FLOAT_TYPES:
        raise check.fail(
            f"{check.label('io.logits')} names an output of type {logits} in {check.model}; "
            f"logits must be {' or '.join(FLOAT_TYPES)}."
        )


def _check_shapes(manifest: Manifest, graph: GraphFacts, kv: list[str], check: _Checker) -> None:
    """KV tensors are (batch, heads, length, head_size) and logits (batch, length, vocab_size),
    wherever the graph states a dimension as a number."""
    arch, model = manifest.architecture, check.model
    tensors = {**graph.inputs, **graph.outputs}
    for name in kv:
        shape = tensors[name].shape
        if len(shape) != 4:
            raise check.fail(
                f"{model}'s KV tensor {shown(name)} has {len(shape)} dimensions, not 4."
            )
        for axis, key in ((1, "heads"), (3, "head_size")):
            value = getattr(arch, key)
            if isinstance(shape[axis], int) and shape[axis] != value:
                raise check.fail(
                    f"{check.label('architecture.' + key)} is {value} but {model}'s KV tensors "
                    f"have {shape[axis]} (tensor {shown(name)})."
                )
    shape = graph.outputs[manifest.io["logits"]].shape
    if len(shape) != 3:
        raise check.fail(f"{model}'s logits have {len(shape)} dimensions, not 3.")
    if isinstance(shape[2], int) and shape[2] != arch.vocab_size:
        raise check.fail(
            f"{check.label('architecture.vocab_size')} is {arch.vocab_size} but {model}'s logits "
            f"have {shape[2]} entries per token."
        )


def onnxruntime_reason(exc: BaseException) -> str:
    """onnxruntime's error text cut to its reason: no status codes, C++ signatures, source
    locations or line breaks.

    ``[ONNXRuntimeError] : 1 : FAIL : Exception during initialization: /onnxruntime_src/...cc:74
    onnxruntime::Info::Info(const std::vector<...>&, ...) [ONNXRuntimeError] : 1 : FAIL :
    tensorprotoutils.cc:2201 GetExtDataFromTensorProto External initializer: wte ...`` becomes
    ``External initializer: wte ...``.
    """
    text = str(exc).split("[ONNXRuntimeError]")[-1]
    text = re.sub(r"^\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)  # " : 1 : FAIL : "
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+\s+\w+\s+", "", text)  # "file.cc:123 Function "
    text = re.sub(r"Load model from .*? failed:\s*", "", text)  # the caller names the file
    text = re.sub(r"^\s*Error in execution:\s*", "", text)  # run_with_iobinding's prefix
    # "Non-zero status code returned while running Gather node. Name:'G' Status Message: x"
    text = re.sub(
        r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' "
        r"Status Message:\s*",
        r"\1 node '\2': ",
        text,
    )
    # A failed open of the model file is "SystemError : 13": the errno, without its meaning.
    text = re.sub(r"SystemError\s*:\s*(\d+)", lambda m: _strerror(int(m.group(1))), text)
    text = " ".join(text.split()).rstrip(".") or type(exc).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _strerror(number: int) -> str:
    """An errno's meaning ("Permission denied"), or the number where the C library has none."""
    try:
        return os.strerror(number)
    except ValueError:
        return f"error {number}"
