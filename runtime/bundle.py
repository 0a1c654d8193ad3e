"""The bundle: a folder with ``model.onnx``, ``tokenizer.json`` and the ``bundle.json`` manifest.

The runtime owns this format; the exporter writes it through :func:`write_manifest` and
:func:`file_entry`. A plain Optimum ``text-generation-with-past`` export (config.json + model.onnx +
tokenizer files) is read too, by deriving the same description from its config.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import EdgeError

FORMAT_NAME = "gpt2-edge-bundle"
# 2: the fused graph takes ``logits_index`` (a runtime that knows only 1 would fail on it).
FORMAT_VERSION = 2
KNOWN_VERSIONS = (1, 2)
MANIFEST = "bundle.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"

# Tensor names of Optimum's text-generation-with-past export; "%d" is the layer index.
DEFAULT_IO = {
    "input_ids": "input_ids",
    "attention_mask": "attention_mask",
    "position_ids": "position_ids",
    "logits_index": "logits_index",  # fused graphs only (exporter/optimize.py)
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
    def from_json(cls, data: dict[str, Any], where: Path) -> Manifest:
        _check_format(data, where)
        known = {"format", "format_version", *cls.__dataclass_fields__}
        try:
            arch = Architecture(**data["architecture"])
            return cls(
                name=str(data.get("name", where.name)),
                architecture=arch,
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
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeError(f"{where / MANIFEST} is not a valid manifest ({exc}).") from None


@dataclass
class Bundle:
    """A bundle folder on disk with its manifest."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_FILE


def _check_format(data: Any, where: Path) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise EdgeError(
            f"{where / MANIFEST} is not a gpt2-edge manifest (no format '{FORMAT_NAME}')."
        )
    version = data.get("format_version")
    if version not in KNOWN_VERSIONS:
        known = ", ".join(str(v) for v in KNOWN_VERSIONS)
        raise EdgeError(
            f"{where / MANIFEST} has format version {version!r}; "
            f"this runtime knows version {known}."
        )


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of one file, as stored under ``files`` in the manifest."""
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


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
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeError(f"{folder} has no {MANIFEST}; it is not a gpt2-edge bundle.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeError(f"{path} cannot be read as JSON ({exc}).") from None
    return Manifest.from_json(data, folder)


def verify_files(folder: Path, manifest: Manifest, check_hashes: bool = True) -> None:
    """Raise if a listed file is missing, or (with ``check_hashes``) its size or SHA-256 differs."""
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise EdgeError(f"Bundle {folder} is missing {name}, which its manifest lists.")
        if path.stat().st_size != entry.get("size", path.stat().st_size):
            raise EdgeError(f"{path} has the wrong size; the bundle is corrupt, export it again.")
        if check_hashes and "sha256" in entry and sha256_of(path) != entry["sha256"]:
            raise EdgeError(f"{path} does not match its SHA-256 in the manifest; export it again.")


def load_bundle(path: str | os.PathLike[str], check_hashes: bool = True) -> Bundle:
    """Open a bundle folder, or a plain Optimum export folder, and validate it."""
    folder = Path(path)
    if not folder.is_dir():
        raise EdgeError(f"Bundle folder {folder} does not exist.")
    if (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        verify_files(folder, manifest, check_hashes)
    elif (folder / "config.json").is_file() and (folder / MODEL_FILE).is_file():
        manifest = manifest_from_optimum(folder)
    else:
        raise EdgeError(
            f"{folder} is neither a gpt2-edge bundle (no {MANIFEST}) nor an Optimum export "
            f"(config.json + {MODEL_FILE})."
        )
    for required in (MODEL_FILE, TOKENIZER_FILE):
        if not (folder / required).is_file():
            raise EdgeError(f"Bundle {folder} is missing {required}.")
    return Bundle(folder, manifest)


def manifest_from_optimum(folder: Path) -> Manifest:
    """Derive a manifest from a plain Optimum text-generation-with-past export of GPT-2."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeError(f"{folder / 'config.json'} cannot be read as JSON ({exc}).") from None
    if config.get("model_type") != "gpt2":
        raise EdgeError(
            f"{folder} holds a '{config.get('model_type')}' model; "
            "gpt2-edge runs GPT-2 models only."
        )
    heads, width = int(config["n_head"]), int(config["n_embd"])
    arch = Architecture(
        layers=int(config["n_layer"]),
        heads=heads,
        head_size=width // heads,
        hidden_size=width,
        context_length=int(config.get("n_positions", 1024)),
        vocab_size=int(config["vocab_size"]),
    )
    generation: dict[str, Any] = {}
    gen_path = folder / "generation_config.json"
    if gen_path.is_file():
        generation = generation_defaults(json.loads(gen_path.read_text(encoding="utf-8")))
    eos = config.get("eos_token_id", 50256)
    return Manifest(
        name=folder.name,
        architecture=arch,
        special_tokens={
            "bos": config.get("bos_token_id", eos),
            "eos": eos,
            "pad": config.get("pad_token_id") if config.get("pad_token_id") is not None else eos,
        },
        generation=generation,
        source={"model": str(folder), "derived_from": "optimum export"},
    )


# Keys of transformers' generation_config.json that map onto our sampling settings.
_GENERATION_KEYS = {
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
}


def generation_defaults(gen_config: dict[str, Any]) -> dict[str, Any]:
    """Our sampling defaults from a transformers ``generation_config.json``.

    transformers samples only when ``do_sample`` is true, so without it the default is greedy.
    """
    out = {
        ours: gen_config[theirs]
        for theirs, ours in _GENERATION_KEYS.items()
        if theirs in gen_config
    }
    if not gen_config.get("do_sample", False):
        out["temperature"] = 0.0
    return out
