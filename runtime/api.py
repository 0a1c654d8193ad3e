"""``load()``: open a bundle folder (or a plain Optimum export) as a ready :class:`Generator`."""

from __future__ import annotations

import os

from .bundle import load_bundle
from .generate import Generator
from .session import Session
from .tokenizer import Tokenizer

DEFAULT_PROVIDER = "auto"


def load(
    path: str | os.PathLike[str],
    provider: str = DEFAULT_PROVIDER,
    threads: int | None = None,
    check_hashes: bool = True,
) -> Generator:
    """Open a bundle and return a generator for it.

    Args:
        path: a bundle folder, or a plain Optimum ``text-generation-with-past`` export of GPT-2.
        provider: ``cpu``, ``cuda`` or ``auto`` (default ``auto``: CUDA if onnxruntime has it,
            else CPU with a notice in ``Generator.notices``).
        threads: onnxruntime intra-op threads (default None: onnxruntime decides).
        check_hashes: verify every file's SHA-256 against the manifest (default True).

    Raises:
        EdgeError: the folder, manifest, files or model cannot be used, or the provider is
            unknown or unavailable.
    """
    bundle = load_bundle(path, check_hashes=check_hashes)
    tokenizer = Tokenizer(bundle.tokenizer_path)
    return Generator(Session(bundle, provider=provider, threads=threads), tokenizer)
