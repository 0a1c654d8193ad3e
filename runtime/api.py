"""``load()``: open a bundle folder (or a plain Optimum export) as a ready :class:`Generator`."""

from __future__ import annotations

import os

from .bundle import load_bundle
from .errors import EdgeError
from .generate import Generator
from .session import PROVIDERS, Session
from .settings import check_threads

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
            else CPU; a notice in ``Generator.notices`` says so when a GPU build of onnxruntime
            is installed but cannot run CUDA).
        threads: onnxruntime intra-op threads, 1 to the CPUs this process may use (default None:
            onnxruntime decides).
        check_hashes: verify every file's SHA-256 against the manifest (default True); a file
            this user verified before and has not changed since is not read again
            (``verified.py``).

    Raises:
        EdgeError: an argument of the wrong type or out of range, or the folder, manifest, files
            or model cannot be used, or the provider is unavailable; the cheap checks come first.
    """
    check_load_arguments(path, provider, threads, check_hashes)

    bundle = load_bundle(path, check_hashes=check_hashes)
    return Generator(Session(bundle, provider=provider, threads=threads), bundle.tokenizer)


def check_load_arguments(
    path: object, provider: object, threads: object, check_hashes: object
) -> None:
    """Raise a sentence for an argument of :func:`load` that cannot be right, before any I/O."""
    if not isinstance(path, (str, os.PathLike)):
        raise EdgeError(f"path must be a folder path (str or os.PathLike), got {_kind(path)}.")
    if not isinstance(provider, str) or provider not in PROVIDERS:
        raise EdgeError(f"Unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}.")
    check_threads(threads)
    if not isinstance(check_hashes, bool):
        raise EdgeError(f"check_hashes must be True or False, got {_kind(check_hashes)}.")


def _kind(value: object) -> str:
    return type(value).__name__
