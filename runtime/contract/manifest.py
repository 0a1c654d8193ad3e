"""The manifest, ``bundle.json``: its format name and versions, the file names of a bundle, the
parsed :class:`Manifest` and :class:`Architecture`, and reading and writing it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EdgeError
from .files import read_json
from .schema import check_manifest, is_int, shown

FORMAT_NAME = "gpt2-edge-bundle"
# 2: the fused graph takes ``logits_index`` (a runtime that knows only 1 would fail on it).
FORMAT_VERSION = 2
KNOWN_VERSIONS = (1, 2)
MANIFEST = "bundle.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
# What a plain Optimum folder assumes when its config.json does not say.
DEFAULT_CONTEXT_LENGTH = 1024
DEFAULT_EOS = 50256  # GPT-2's <|endoftext|>
# How config.json names the manifest's fields, for messages about an Optimum folder.
CONFIG_NAMES = {
    "architecture.layers": "n_layer",
    "architecture.heads": "n_head",
    "architecture.head_size": "n_embd / n_head",
    "architecture.vocab_size": "vocab_size",
    "architecture.context_length": "n_positions",
}

# Tensor names of Optimum's text-generation-with-past export; "%d" is the layer index.
DEFAULT_IO = {
    "input_ids": "input_ids",
    "attention_mask": "attention_mask",
    "position_ids": "position_ids",
    "logits_index": "logits_index",  # fused graphs only (exporter/graphs/fused.py)
    "past_key": "past_key_values.%d.key",
    "past_value": "past_key_values.%d.value",
    "logits": "logits",
    "present_key": "present.%d.key",
    "present_value": "present.%d.value",
}


@dataclass(frozen=True)
class Architecture:
    """Shape facts the decode loop needs; ``kv_dtype`` is the past/present element type."""

    layers: int
    heads: int
    head_size: int
    hidden_size: int
    context_length: int
    vocab_size: int
    model_type: str = "gpt2"
    kv_dtype: str = "float32"


@dataclass
class Manifest:
    """The parsed ``bundle.json``; unknown keys stay in ``extra``, so a rewrite loses nothing."""

    name: str
    architecture: Architecture
    io: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_IO))
    precision: dict[str, Any] = field(default_factory=lambda: {"dtype": "float32"})
    special_tokens: dict[str, int | None] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    # How the graph wants to be driven: {"kind": "fused-gqa", "kv_cache": "shared-buffer",
    # "padding": "right"} for the fused decoder; empty (or kind "optimum") for Optimum's graph.
    graph: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
        data.update({k: v for k, v in asdict(self).items() if k != "extra"})
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: Any, where: Path) -> Manifest:
        """The manifest of the bundle folder ``where`` from its parsed ``bundle.json``.

        Raises:
            EdgeError: not a gpt2-edge manifest, an unknown version, or a field of the wrong type
                or out of its range (named).
        """
        _check_format(data, where)
        check_manifest(data, where / MANIFEST)
        known = {"format", "format_version", *cls.__dataclass_fields__}
        return cls(
            name=data.get("name", where.name),
            architecture=Architecture(**data["architecture"]),
            io={**DEFAULT_IO, **data.get("io", {})},
            precision=dict(data.get("precision", {"dtype": "float32"})),
            special_tokens=dict(data.get("special_tokens", {})),
            generation=dict(data.get("generation", {})),
            files=dict(data.get("files", {})),
            source=dict(data.get("source", {})),
            verification=dict(data.get("verification", {})),
            graph=dict(data.get("graph", {})),
            extra={k: v for k, v in data.items() if k not in known},
        )


def _check_format(data: Any, where: Path) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise EdgeError(
            f"{where / MANIFEST} is not a gpt2-edge manifest (no format '{FORMAT_NAME}')."
        )
    version = data.get("format_version")
    if not is_int(version) or version not in KNOWN_VERSIONS:  # True == 1 in Python
        known = ", ".join(str(v) for v in KNOWN_VERSIONS)
        raise EdgeError(
            f"{where / MANIFEST} has format version {shown(version)}; "
            f"this runtime knows version {known}."
        )


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``bundle.json`` atomically (temp file + rename) so a reader never sees half of it."""
    target = folder / MANIFEST
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(
        json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n", encoding="utf-8"
    )
    os.replace(tmp, target)
    return target


def read_manifest(folder: Path) -> Manifest:
    """The validated manifest of a bundle folder."""
    try:
        data = read_json(folder / MANIFEST)
    except FileNotFoundError:
        raise EdgeError(f"{folder} has no {MANIFEST}; it is not a gpt2-edge bundle.") from None
    return Manifest.from_json(data, folder)
