"""The bundle: a folder with ``model.onnx``, ``tokenizer.json`` and the ``bundle.json`` manifest.

The runtime owns this format; the exporter writes it through :func:`write_manifest` and
:func:`file_entry`. A plain Optimum ``text-generation-with-past`` export (config.json + model.onnx +
tokenizer files) is read too, by deriving the same description from its config.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from . import verified
from .errors import EdgeError
from .manifest_schema import (
    check_manifest,
    is_int,
    shown,
)
from .manifest_schema import field as field_name
from .tokenizer import Tokenizer

FORMAT_NAME = "gpt2-edge-bundle"
# 2: the fused graph takes ``logits_index`` (a runtime that knows only 1 would fail on it).
FORMAT_VERSION = 2
KNOWN_VERSIONS = (1, 2)
MANIFEST = "bundle.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
# bundle.json, config.json and generation_config.json are a few kilobytes.
MAX_JSON_BYTES = 16 << 20
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

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The bundle's tokenizer, read once."""
        return Tokenizer(self.tokenizer_path)

    @property
    def origin(self) -> tuple[Path, dict[str, str]]:
        """The file the manifest came from, and how it names the manifest's fields (for
        messages): ``bundle.json``, or a plain Optimum folder's ``config.json``."""
        if (self.path / MANIFEST).is_file() or not (self.path / CONFIG_FILE).is_file():
            return self.path / MANIFEST, {}
        return self.path / CONFIG_FILE, CONFIG_NAMES


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


def read_json(path: Path) -> Any:
    """A JSON file's value, or a sentence saying why it cannot be read.

    Only a regular file of at most :data:`MAX_JSON_BYTES` is read: a FIFO in its place would
    block the load for ever, and a link to ``/dev/zero`` would fill the memory.
    """
    try:
        not_regular = not_a_regular_file(path)
        if not_regular:
            raise EdgeError(not_regular)
        with open(path, "rb") as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise EdgeError(
                f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB, which no JSON file of a bundle "
                "is."
            )
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise
    # ValueError: bad JSON, or an integer over Python's digit limit; RecursionError: nesting.
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise EdgeError(f"{path} cannot be read as JSON ({reason}).") from None


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` (which exists) cannot be read as a file, or None when it is a regular file.

    Raises:
        FileNotFoundError: nothing is there (a broken link included).
    """
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    what = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
    return f"{path} is {what}, where a file is expected."


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (a config, not a list or a number)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise EdgeError(f"{path} must hold a JSON object, got {shown(data)}.")
    return data


def read_manifest(folder: Path) -> Manifest:
    """The validated manifest of a bundle folder."""
    try:
        data = read_json(folder / MANIFEST)
    except FileNotFoundError:
        raise EdgeError(f"{folder} has no {MANIFEST}; it is not a gpt2-edge bundle.") from None
    return Manifest.from_json(data, folder)


def verify_files(folder: Path, manifest: Manifest, check_hashes: bool = True) -> None:
    """Raise if a listed file is missing or lies outside the folder (through a symbolic link),
    or (with ``check_hashes``) its size or SHA-256 differs.

    All sizes are checked before any hash, and a file this user already hashed and has not
    changed since is not read again (``verified.py``).
    """
    _check_listed(folder, manifest)
    _check_unlisted(folder, manifest)
    if check_hashes:
        check_hashes_of(folder, manifest)


def _check_unlisted(folder: Path, manifest: Manifest) -> None:
    """The graph, its weights and the tokenizer are listed when present: an entry deleted from
    ``files`` would silently switch off that file's size and SHA-256 check."""
    present = {MODEL_FILE, TOKENIZER_FILE, *(p.name for p in folder.glob("model.onnx[._]data"))}
    for name in sorted(present - set(manifest.files)):
        if (folder / name).is_file():
            raise EdgeError(
                f"{folder / MANIFEST} does not list {name} under files, so its integrity cannot "
                "be checked; export the bundle again."
            )


def _check_listed(folder: Path, manifest: Manifest) -> None:
    """Every listed file exists inside the folder with its listed size."""
    root = Path(os.path.realpath(folder))
    for name, entry in manifest.files.items():
        path = folder / name
        try:
            # strict: a link loop raises the same OSError on every Python version
            real = Path(os.path.realpath(path, strict=True))
            not_regular = not_a_regular_file(path)
            if not_regular:
                raise EdgeError(not_regular)
            size = real.stat().st_size
        except FileNotFoundError:
            size = None
        except OSError as exc:
            raise EdgeError(f"{path} cannot be read ({exc.strerror or exc}).") from None
        if size is None:
            raise EdgeError(f"Bundle {folder} is missing {name}, which its manifest lists.")
        if not real.is_relative_to(root):
            label = field_name("files.", name)
            raise EdgeError(
                f"{folder / MANIFEST}: {label} leads outside the bundle folder through a "
                "symbolic link."
            )
        if size != entry.get("size", size):
            raise EdgeError(f"{path} has the wrong size; the bundle is corrupt, export it again.")


def check_hashes_of(folder: Path, manifest: Manifest) -> None:
    """Raise if a listed file's content does not have the SHA-256 the manifest gives it."""
    for name, entry in manifest.files.items():
        path = folder / name
        try:
            matches = "sha256" not in entry or matches_sha256(path, entry["sha256"])
        except OSError as exc:  # permissions, an I/O error: name the file, not its folder
            raise EdgeError(f"{path} cannot be read ({exc.strerror or exc}).") from None
        if not matches:
            raise EdgeError(f"{path} does not match its SHA-256 in the manifest; export it again.")


def matches_sha256(path: Path, expected: str) -> bool:
    """Whether ``path`` hashes to ``expected``: read in full, unless this user already hashed
    this unchanged file version (then it is remembered, see ``verified.py``)."""
    if verified.is_verified(path, expected):
        return True
    before, started = verified.signature(path), time.time()
    if sha256_of(path) != expected:
        return False
    verified.remember(path, expected, before, started)
    return True


def load_bundle(path: str | os.PathLike[str], check_hashes: bool = True) -> Bundle:
    """Open a bundle folder, or a plain Optimum export folder, and validate it.

    The manifest is checked field by field, the files against it, and the tokenizer against the
    vocabulary; the graph is checked when a session opens it (``session.py``).

    Raises:
        EdgeError: the folder, its manifest, a file or the tokenizer cannot be used.
    """
    folder = Path(path)
    if "\0" in str(folder):
        raise EdgeError(f"The bundle path {shown(str(folder))} holds a NUL character.")
    try:
        manifest = _folder_manifest(folder, check_hashes)
        for required in (MODEL_FILE, TOKENIZER_FILE):
            try:
                not_regular = not_a_regular_file(folder / required)
            except FileNotFoundError:
                raise EdgeError(f"Bundle {folder} is missing {required}.") from None
            if not_regular:
                raise EdgeError(not_regular)
    except OSError as exc:  # permissions and the like
        raise EdgeError(f"{folder} cannot be read ({exc.strerror or exc}).") from None
    bundle = Bundle(folder, manifest)
    _check_tokenizer(bundle)
    return bundle


def _check_tokenizer(bundle: Bundle) -> None:
    """A tokenizer with more tokens than the model's embedding would feed ids the model lacks."""
    vocab = bundle.manifest.architecture.vocab_size
    size = bundle.tokenizer.token_count  # added tokens included
    if size > vocab:
        where, names = bundle.origin
        label = names.get("architecture.vocab_size", "architecture.vocab_size")
        raise EdgeError(
            f"{where}: {label} is {vocab} but {TOKENIZER_FILE} has {size} tokens; the tokenizer "
            "does not belong to this model."
        )


def _folder_manifest(folder: Path, check_hashes: bool) -> Manifest:
    if not folder.exists():
        raise EdgeError(f"Bundle folder {folder} does not exist.")
    if not folder.is_dir():
        raise EdgeError(f"{folder} is a file, not a bundle folder; pass the folder that holds it.")
    if (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        verify_files(folder, manifest, check_hashes)
        return manifest
    # exists(), not is_file(): a config.json that is not a file gets read_json's sentence
    if (folder / CONFIG_FILE).exists() and (folder / MODEL_FILE).exists():
        return manifest_from_optimum(folder)
    raise EdgeError(
        f"{folder} is neither a gpt2-edge bundle (no {MANIFEST}) nor an Optimum export "
        f"({CONFIG_FILE} + {MODEL_FILE})."
    )


def manifest_from_optimum(folder: Path) -> Manifest:
    """Derive a manifest from a plain Optimum text-generation-with-past export of GPT-2.

    Raises:
        EdgeError: ``config.json`` or ``generation_config.json`` cannot be read, is not a GPT-2
            config, or has a field of the wrong type or out of its range (named).
    """
    from .derive import derive_manifest

    return derive_manifest(
        folder,
        name=folder.name,
        source={"model": str(folder), "derived_from": "optimum export"},
    )
