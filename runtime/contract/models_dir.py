"""Which bundle a command opens: a folder, a bundle's name under ``models/``, or, when none is
named, the bundle under ``models/`` that suits the device best.

``gpt2-export`` writes its bundles to ``models/<name>``, so after several exports (say
``gpt2-int8``, ``distilgpt2-int4`` and ``gpt2-fp16``) ``gpt2-generate`` without ``--model`` still
runs: it takes the bundle whose precision runs fastest on the execution provider it will use (int8
on a CPU, fp16 on CUDA; then by name), and says which on stderr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeError
from .files import read_json
from .manifest import MANIFEST, MODEL_FILE

MODELS_DIR = Path("models")
# Precisions in order of preference per device: on a CPU int8 decodes fastest (README,
# Performance), int4 is smaller but loses more; on CUDA fp16 runs the fused attention kernels.
CPU_PREFERENCE = ("int8", "int4", "float32", "float16")
CUDA_PREFERENCE = ("float16", "float32", "int8", "int4")


def is_bundle(folder: Path) -> bool:
    """A bundle or a plain Optimum export; hidden folders (exports in progress) are not."""
    return (
        not folder.name.startswith(".")
        and folder.is_dir()
        and (
            (folder / MANIFEST).is_file()
            or ((folder / "config.json").is_file() and (folder / MODEL_FILE).is_file())
        )
    )


def bundles_in(models: Path) -> list[Path]:
    """The bundles directly under ``models``, by name (none when it is not a folder)."""
    return sorted(p for p in models.iterdir() if is_bundle(p)) if models.is_dir() else []


def named_model(model: Path, models: Path = MODELS_DIR) -> Path:
    """``model`` itself, or ``models/<model>`` when ``model`` is a bare name that is not a folder
    here but is a bundle there (``--model gpt2-int8``).

    Raises:
        EdgeError: a bare name that is neither; the sentence names the bundles there are.
    """
    if model.exists() or len(model.parts) != 1:
        return model
    candidate = models / model
    if is_bundle(candidate):
        return candidate
    found = bundles_in(models)
    there = ", ".join(p.name for p in found) if found else "none"
    raise EdgeError(
        f"There is no bundle {str(model)!r}: no such folder here, and {models}/ holds {there} "
        "(gpt2-generate --list shows them).",
        field="model",
    )


@dataclass(frozen=True)
class Listed:
    """One bundle of ``models/`` as ``gpt2-generate --list`` shows it."""

    name: str
    precision: str
    size: int  # bytes of its files
    context: int | None  # tokens; None when the manifest cannot be read


def listing(models: Path = MODELS_DIR) -> list[Listed]:
    """The bundles in ``models``: name, precision, size on disk and context length."""
    return [
        Listed(p.name, precision_of(p) or "unknown", _size(p), _context(p))
        for p in bundles_in(models)
    ]


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _context(folder: Path) -> int | None:
    """The context length from bundle.json (or an Optimum folder's config.json)."""
    try:  # bounded reads, as precision_of
        if (folder / MANIFEST).is_file():
            return int(read_json(folder / MANIFEST)["architecture"]["context_length"])
        return int(read_json(folder / "config.json").get("n_positions", 1024))
    except (OSError, EdgeError, KeyError, TypeError, ValueError, AttributeError):
        return None


def precision_of(folder: Path) -> str:
    """The manifest's ``precision.dtype`` ("float32" for an Optimum export; "" if unreadable)."""
    if not (folder / MANIFEST).is_file():
        return "float32"
    try:  # bounded: a link to /dev/zero in models/ must not fill the memory
        data = read_json(folder / MANIFEST)
        return str(data["precision"]["dtype"])
    except (OSError, EdgeError, KeyError, TypeError):
        return ""  # loading it will say what is wrong, if it is chosen


def default_model(models: Path = MODELS_DIR, cuda: bool = False) -> Path:
    """The bundle under ``models`` to open when no ``--model`` is given.

    The only one; among several, the first by precision preference for the device
    (:data:`CPU_PREFERENCE` or :data:`CUDA_PREFERENCE`), then by name.

    Raises:
        EdgeError: ``models`` holds no bundle.
    """
    found = bundles_in(models)
    if not found:
        raise EdgeError(
            f"No --model given and {models}/ holds no bundle; export one with gpt2-export "
            "or pass --model DIR."
        )
    preference = CUDA_PREFERENCE if cuda else CPU_PREFERENCE

    def rank(folder: Path) -> tuple[int, str]:
        dtype = precision_of(folder)
        return (preference.index(dtype) if dtype in preference else len(preference), folder.name)

    return min(found, key=rank)


def choice_notice(chosen: Path, models: Path = MODELS_DIR) -> str | None:
    """One line saying which bundle was taken, when ``models`` holds more than one."""
    found = bundles_in(models)
    if len(found) < 2:
        return None
    names = ", ".join(p.name for p in found)
    return (
        f"Using {chosen} ({precision_of(chosen) or 'unknown precision'}), one of the "
        f"{len(found)} bundles in {models}/ ({names}); choose with --model NAME."
    )
