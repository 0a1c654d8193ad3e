"""``bundle.json`` as a schema: each field's type and range, checked when the manifest is read.

A manifest is data from disk, so nothing in it is trusted: a wrong type or range is one sentence
naming the field (``.../bundle.json: architecture.heads must be a positive integer, got 'four'.``)
instead of a traceback from onnxruntime or numpy later, or a model that silently never stops. The
same checks serve a plain Optimum folder's ``config.json`` and ``generation_config.json``, with
their own field names. Checks against the graph live in :mod:`.graph_check`.

Plain functions rather than jsonschema, which is not in the base install.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..errors import EdgeError
from ..settings.options import GENERATOR_NAMES
from ..settings.resolve import resolve_settings
from ..settings.sampling import SAMPLING_NAMES

# Every size in a manifest is at most this: far above any GPT-2 (48 layers, 25 heads, 1600 wide,
# vocabulary 50257), and a bound because buffers are allocated from these numbers before the model
# runs.
MAX_SIZE = 1 << 20
# The attention mask and the fused graph's KV buffers are sized from the context length before a
# token is computed (on GPT-2 124M each 1,024 positions of KV buffers take 72 MiB), and the size of
# the graph's position table is known only where model.onnx shows it plainly
# (graph_check.position_table), so a manifest cannot claim more than 64 times GPT-2's 1,024.
MAX_CONTEXT_LENGTH = 1 << 16
ARCHITECTURE_SIZES = ("layers", "heads", "head_size", "hidden_size", "context_length", "vocab_size")
MODEL_TYPES = ("gpt2",)
# The KV element types the runtime feeds (session.kv_dtype); graph_check.py holds the manifest's
# to its graph's.
KV_DTYPES = ("float32", "float16")
# io roles whose names hold "%d" for the layer index.
LAYER_ROLES = ("past_key", "past_value", "present_key", "present_value")
# The values the runtime knows for each key of ``graph`` (exporter/graphs/fused.py writes them).
GRAPH_VALUES = {
    "kind": ("optimum", "fused-gqa"),
    "kv_cache": ("concat", "shared-buffer"),
    "padding": ("left", "right"),
}
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SETTING_NAMES = (*GENERATOR_NAMES, *SAMPLING_NAMES)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SHOWN_CHARS = 60


class _Missing:
    """A field that is not there (distinct from JSON null)."""


MISSING: Any = _Missing()


def shown(value: Any) -> str:
    """A value as a message quotes it: short, on one line, JSON spelling except for strings."""
    try:
        text = repr(value) if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError):  # not JSON, or an int too long to print
        text = type(value).__name__
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def field(prefix: str, key: Any) -> str:
    """``prefix`` + ``key`` for a message; a key that is not a plain name is quoted."""
    return prefix + (key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else shown(key))


def invalid(where: Path, name: str, rule: str, value: Any) -> EdgeError:
    """The error for field ``name`` of the file ``where`` that breaks ``rule``."""
    if value is MISSING:
        return EdgeError(f"{where} has no {name}; it must be {rule}.")
    return EdgeError(f"{where}: {name} must be {rule}, got {shown(value)}.")


def is_int(value: Any) -> bool:
    """A JSON integer: ``int`` but not ``bool`` (True is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(
    data: Mapping[str, Any],
    key: str,
    where: Path,
    name: str | None = None,
    limit: int = MAX_SIZE,
    default: Any = MISSING,
) -> int:
    """``data[key]`` as an integer in [1, limit], or ``default`` when absent and one is given."""
    value = data.get(key, default)
    if not is_int(value) or not 1 <= value <= limit:
        raise invalid(where, name or key, f"a positive integer (at most {limit})", value)
    return value


def mapping(data: Mapping[str, Any], key: str, where: Path, required: bool = False) -> dict:
    """``data[key]``, which must be a JSON object; ``{}`` when absent and not required."""
    value = data.get(key, MISSING)
    if value is MISSING and not required:
        return {}
    if not isinstance(value, dict):
        raise invalid(where, key, "an object", value)
    return value


def check_manifest(data: dict[str, Any], where: Path) -> None:
    """Check every field of a parsed ``bundle.json`` (format and version already checked).

    Args:
        data: the parsed JSON object.
        where: the file, for messages.

    Raises:
        EdgeError: the first field of the wrong type or out of its range, named.
    """
    if not isinstance(data.get("name", ""), str):
        raise invalid(where, "name", "a string", data["name"])
    arch = check_architecture(mapping(data, "architecture", where, required=True), where)
    check_io(mapping(data, "io", where), where)
    precision = mapping(data, "precision", where)
    if not isinstance(precision.get("dtype", ""), str):
        raise invalid(where, "precision.dtype", "a string", precision["dtype"])
    for key in ("source", "verification"):
        mapping(data, key, where)
    check_graph_kind(mapping(data, "graph", where), where)
    tokens = mapping(data, "special_tokens", where)
    check_token_ids(tokens, arch["vocab_size"], where, lambda key: field("special_tokens.", key))
    check_generation(mapping(data, "generation", where), where, "generation.")
    files = mapping(data, "files", where)
    if not files:  # the exporter always lists its files; nothing listed would check nothing
        raise EdgeError(
            f"{where} lists no files, so the bundle's integrity cannot be checked; export it again."
        )
    check_files(files, where)


def check_architecture(arch: dict[str, Any], where: Path) -> dict[str, Any]:
    """Positive sizes that agree (hidden = heads x head size), a known model type and KV type."""
    unknown = sorted(str(k) for k in set(arch) - {*ARCHITECTURE_SIZES, "model_type", "kv_dtype"})
    if unknown:
        known = ", ".join((*ARCHITECTURE_SIZES, "model_type", "kv_dtype"))
        name = field("architecture.", unknown[0])
        raise EdgeError(f"{where}: {name} is not an architecture field (they are {known}).")
    for key in ARCHITECTURE_SIZES:
        limit = MAX_CONTEXT_LENGTH if key == "context_length" else MAX_SIZE
        positive_int(arch, key, where, f"architecture.{key}", limit)
    heads, size = arch["heads"], arch["head_size"]
    if arch["hidden_size"] != heads * size:
        raise EdgeError(
            f"{where}: architecture.hidden_size is {arch['hidden_size']} but heads x head_size "
            f"is {heads} x {size} = {heads * size}; they must be equal."
        )
    if arch.get("model_type", MODEL_TYPES[0]) not in MODEL_TYPES:
        raise invalid(where, "architecture.model_type", "'gpt2'", arch["model_type"])
    if arch.get("kv_dtype", KV_DTYPES[0]) not in KV_DTYPES:
        rule = "one of " + ", ".join(repr(t) for t in KV_DTYPES)
        raise invalid(where, "architecture.kv_dtype", rule, arch["kv_dtype"])
    return arch


def is_layer_pattern(name: str) -> bool:
    """A tensor name with exactly one ``%d`` and no other ``%`` directive."""
    return name.count("%d") == 1 and "%" not in name.replace("%d", "")


def check_io(io: dict[str, Any], where: Path) -> None:
    """Tensor names are non-empty strings; the per-layer ones hold one ``%d``."""
    for role, name in io.items():
        label = field("io.", role)
        if not isinstance(name, str) or not name:
            raise invalid(where, label, "a non-empty tensor name", name)
        if role in LAYER_ROLES and not is_layer_pattern(name):
            rule = "a tensor name with one '%d' for the layer index (and no other '%')"
            raise invalid(where, label, rule, name)


def check_graph_kind(graph: dict[str, Any], where: Path) -> None:
    """``graph.kind``, ``graph.kv_cache`` and ``graph.padding`` hold values the runtime knows."""
    for key, known in GRAPH_VALUES.items():
        if key in graph and graph[key] not in known:
            rule = "one of " + ", ".join(repr(v) for v in known)
            raise invalid(where, f"graph.{key}", rule, graph[key])


def check_token_ids(
    ids: Mapping[str, Any], vocab: int, where: Path, label: Callable[[str], str]
) -> None:
    """Each value is null or a token id in [0, vocab); ``label(key)`` names it in messages."""
    for key, value in ids.items():
        if value is not None and not (is_int(value) and 0 <= value < vocab):
            raise invalid(where, label(key), f"null or a token id in [0, {vocab})", value)


def check_generation(defaults: Mapping[str, Any], where: Path, prefix: str) -> None:
    """Generation defaults pass the same validation as a caller's settings.

    Keys that name no setting are ignored, as the generator ignores them.

    Args:
        defaults: setting name to value.
        where: the file, for messages.
        prefix: how the file names the map's keys (``"generation."`` in ``bundle.json``).
    """
    for key, value in defaults.items():
        if key not in SETTING_NAMES:
            continue
        try:
            resolve_settings(None, **{key: value})
        except EdgeError as exc:
            # The settings' messages start with the setting's name: "top_p must be ...".
            message = str(exc)
            detail = message if message.startswith(key) else f"{key} is invalid: {message}"
            raise EdgeError(f"{where}: {prefix}{detail}") from None
        except OverflowError:  # an integer too large for a float, where a number is expected
            raise invalid(where, prefix + key, "a finite number", value) from None
    resolve_settings(defaults)  # together, too (each one alone passed)


def is_inside_name(name: Any) -> bool:
    """A relative path that stays in the folder: no absolute path, drive, ``..`` or NUL."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    try:
        os.fsencode(name)  # a lone surrogate has no bytes on disk
    except UnicodeEncodeError:
        return False
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        return False
    parts = [p for p in posix.parts if p != "."]
    return bool(parts) and ".." not in parts and ".." not in windows.parts


def check_files(files: dict[str, Any], where: Path) -> None:
    """Each entry is a path inside the bundle with an integer ``size`` and, if given, ``sha256``."""
    for name, entry in files.items():
        label = field("files.", name)
        if not is_inside_name(name):
            raise EdgeError(
                f"{where}: {label} must be a relative path inside the bundle folder "
                "(no absolute path, no '..')."
            )
        if not isinstance(entry, dict):
            raise invalid(where, label, "an object with size and sha256", entry)
        size = entry.get("size", MISSING)
        if not is_int(size) or size < 0:
            raise invalid(where, f"{label}.size", "an integer >= 0 (bytes)", size)
        digest = entry.get("sha256", "0" * 64)
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
            raise invalid(where, f"{label}.sha256", "64 lowercase hexadecimal digits", digest)
