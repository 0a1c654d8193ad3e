"""Facts read from an ONNX file's protobuf wire format, without the onnx package.

onnxruntime does not tell the size of an initializer, and the base install has no onnx. The
protobuf package that onnxruntime brings would need onnx's compiled schema, and parsing a message
reads all of it: a 500 MB ``model.onnx`` with its weights inside would be read whole (and copied)
to learn one dimension. So the few fields needed (onnx/onnx.proto3) are read here directly from a
memory map: the Gather node that indexes an initializer with the position_ids input, and that
initializer's first dimension. Large fields (weights) are skipped by their length, so a 500 MB
file costs a few page reads (0.3-0.7 ms on our 124M bundles, 2-4 ms on Optimum's fp32 one).
Anything unexpected gives None: the check is then left to the run.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5  # GraphProto.node, .initializer
_NODE_INPUT, _NODE_OP_TYPE = 1, 4  # NodeProto.input, .op_type
_TENSOR_DIMS, _TENSOR_NAME = 1, 8  # TensorProto.dims, .name
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5  # wire types


def position_table(model: Path, position_ids: str) -> int | None:
    """Rows of the table that ``model``'s input ``position_ids`` indexes (GPT-2's ``wpe``), or
    None when the file does not show one plainly (a Gather on an initializer)."""
    try:
        with open(model, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _position_rows(data, position_ids.encode())
    except (OSError, ValueError, IndexError, UnicodeDecodeError):  # unreadable or not protobuf
        return None


def _position_rows(data: mmap.mmap, position_ids: bytes) -> int | None:
    fields = _fields(data, 0, len(data))
    graph = next((v for n, w, v in fields if (n, w) == (_MODEL_GRAPH, _BYTES)), None)
    if graph is None:
        return None
    # A node names its inputs as (tag, length, name); nodes without that byte string are skipped
    # without being decoded.
    wanted = _string_field(_NODE_INPUT, position_ids)
    table, initializers = None, []
    for number, wire, span in _fields(data, *graph):
        if wire != _BYTES:
            continue
        if number == _GRAPH_INITIALIZER:
            initializers.append(span)
        elif number == _GRAPH_NODE and table is None and data.find(wanted, *span) >= 0:
            inputs, op_type = _node(data, span)
            if op_type == b"Gather" and inputs[1:2] == [position_ids]:
                table = inputs[0]
    if table is None:
        return None
    for span in initializers:  # decoded, not searched: a search would read the weights
        name, dims = _tensor(data, span)
        if name == table:
            return dims[0] if len(dims) == 2 else None
    return None


def _node(data: mmap.mmap, span: tuple[int, int]) -> tuple[list[bytes], bytes]:
    """A NodeProto's input names and op type."""
    inputs, op_type = [], b""
    for number, wire, value in _fields(data, *span):
        if wire == _BYTES and number == _NODE_INPUT:
            inputs.append(data[value[0] : value[1]])
        elif wire == _BYTES and number == _NODE_OP_TYPE:
            op_type = data[value[0] : value[1]]
    return inputs, op_type


def _tensor(data: mmap.mmap, span: tuple[int, int]) -> tuple[bytes, list[int]]:
    """A TensorProto's name and dims (packed or not)."""
    name, dims = b"", []
    for number, wire, value in _fields(data, *span):
        if number == _TENSOR_NAME and wire == _BYTES:
            name = data[value[0] : value[1]]
        elif number == _TENSOR_DIMS and wire == _VARINT:
            dims.append(value)
        elif number == _TENSOR_DIMS and wire == _BYTES:
            start, end = value
            dims.extend(v for _, _, v in _fields(data, start, end, packed=True))
    return name, dims


def _string_field(number: int, text: bytes) -> bytes:
    """A length-delimited field as it is written: tag, length, bytes."""
    return _encode_varint(number << 3 | _BYTES) + _encode_varint(len(text)) + text


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint(data: mmap.mmap, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def _fields(
    data: mmap.mmap, start: int, end: int, packed: bool = False
) -> Iterator[tuple[int, int, Any]]:
    """The fields of the message in ``data[start:end]`` as (number, wire type, value): an int for
    a varint, a (start, end) span for bytes, None for fixed-size numbers. ``packed``: the span is
    a packed repeated varint field (values only, no tags)."""
    value: int | tuple[int, int] | None
    pos = start
    while pos < end:
        if packed:
            value, pos = _varint(data, pos)
            yield 0, _VARINT, value
            continue
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _BYTES:
            length, pos = _varint(data, pos)
            value, pos = (pos, pos + length), pos + length
        elif wire in (_FIXED64, _FIXED32):
            value, pos = None, pos + (8 if wire == _FIXED64 else 4)
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise ValueError("field past the end of its message")
        yield number, wire, value
