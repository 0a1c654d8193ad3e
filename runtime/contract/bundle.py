"""The bundle: a folder with ``model.onnx``, ``tokenizer.json`` and the ``bundle.json`` manifest.

The runtime owns this format; the exporter writes it through :func:`.manifest.write_manifest`
and :func:`.files.file_entry`. A plain Optimum ``text-generation-with-past`` export (config.json
+ model.onnx + tokenizer files) is read too, by deriving the same description from its config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import EdgeError
from .files import matches_sha256, not_a_regular_file
from .manifest import (
    CONFIG_FILE,
    CONFIG_NAMES,
    MANIFEST,
    MODEL_FILE,
    TOKENIZER_FILE,
    Manifest,
    read_manifest,
)
from .schema import field as field_name
from .schema import shown
from .tokenizer import Tokenizer


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


def load_bundle(path: str | os.PathLike[str], check_hashes: bool = True) -> Bundle:
    """Open a bundle folder, or a plain Optimum export folder, and validate it.

    The manifest is checked field by field, the files against it, and the tokenizer against the
    vocabulary; the graph is checked when a session opens it (``graph/session.py``).

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
