"""``load()``: open a bundle folder (or a plain Optimum export) as a ready :class:`Generator`; and
``pick_model()``: which bundle a command opens."""

from __future__ import annotations

import os
from pathlib import Path

from .contract.bundle import Bundle, load_bundle
from .contract.models_dir import MODELS_DIR, choice_notice, default_model, named_model
from .errors import EdgeError
from .generation.generator import Generator
from .graph.providers import ProviderChoice, resolve_provider
from .graph.session import Session
from .settings.threads import check_threads

DEFAULT_PROVIDER = "auto"


def load(
    path: str | os.PathLike[str] | Bundle,
    provider: str | ProviderChoice = DEFAULT_PROVIDER,
    threads: int | None = None,
    check_hashes: bool = True,
) -> Generator:
    """Open a bundle and return a generator for it (a context manager that closes it:
    ``with load(path) as gen:``).

    Threads and the provider are checked here, once, before anything is read.

    Args:
        path: a bundle folder, or a plain Optimum ``text-generation-with-past`` export of GPT-2,
            or a bundle already opened with :func:`load_bundle`.
        provider: ``cpu``, ``cuda`` or ``auto`` (default ``auto``: CUDA if onnxruntime has it,
            else CPU; a notice in ``Generator.notices`` says so when a GPU build of onnxruntime
            is installed but cannot run CUDA), or a choice already made by
            :func:`resolve_provider`.
        threads: onnxruntime intra-op threads, 1 to the CPUs this process may use (default None:
            onnxruntime decides).
        check_hashes: verify every file's SHA-256 against the manifest (default True); a file
            this user verified before and has not changed since is not read again
            (``contract/verified.py``).

    Raises:
        EdgeError: an argument of the wrong type or out of range, or the folder, manifest, files
            or model cannot be used, or the provider is unavailable; the cheap checks come first.
    """
    choice = check_load_arguments(path, provider, threads, check_hashes)
    bundle = path if isinstance(path, Bundle) else load_bundle(path, check_hashes=check_hashes)
    return Generator(Session(bundle, choice, threads), bundle.tokenizer)


def check_load_arguments(
    path: object, provider: object, threads: object, check_hashes: object
) -> ProviderChoice:
    """Raise a sentence for an argument of :func:`load` that cannot be right, before any I/O;
    returns the provider resolved (:func:`resolve_provider`)."""
    if not isinstance(path, (str, os.PathLike, Bundle)):
        raise EdgeError(
            f"path must be a folder path (str or os.PathLike), got {_kind(path)}.", "path"
        )
    choice = check_runtime_arguments(provider, threads)
    if not isinstance(check_hashes, bool):
        raise EdgeError(
            f"check_hashes must be True or False, got {_kind(check_hashes)}.", "check_hashes"
        )
    return choice


def check_runtime_arguments(provider: object, threads: object) -> ProviderChoice:
    """The provider resolved (:func:`resolve_provider`; a choice made already passes) and the
    thread count checked: what :func:`load` checks, for a command that checks them before it
    reads its input."""
    choice = provider if isinstance(provider, ProviderChoice) else resolve_provider(provider)
    check_threads(threads)
    return choice


def pick_model(
    model: str | os.PathLike[str] | None, provider: str | ProviderChoice = DEFAULT_PROVIDER
) -> tuple[Path, ProviderChoice, str | None]:
    """The bundle a command opens, as every command picks it: a folder, the name of a bundle in
    ``models/``, or (``model`` None) the bundle in ``models/`` that suits the provider's device
    best.

    Returns:
        The bundle's folder, the provider resolved, and a notice naming the bundle chosen when
        none was named (None otherwise).

    Raises:
        EdgeError: an unknown provider, or no such bundle (the sentence lists those in
            ``models/``).
    """
    choice = provider if isinstance(provider, ProviderChoice) else resolve_provider(provider)
    if model is not None:
        return named_model(Path(model), MODELS_DIR), choice, None
    path = default_model(MODELS_DIR, choice.name == "cuda")
    return path, choice, choice_notice(path, MODELS_DIR)


def _kind(value: object) -> str:
    return type(value).__name__
