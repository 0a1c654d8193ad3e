"""Export one ONNX decoder graph with past-key-value inputs through Optimum.

Optimum's ``text-generation-with-past`` task writes a single ``model.onnx`` whose first call takes
past tensors of length 0, so one graph serves prefill and decode.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ExportError

TASK = "text-generation-with-past"
# GPT-2's attention exports as scaled_dot_product_attention, which ONNX has from opset 14 on
# (torch: "Support for this operator was added in version 14"); --opset 13 fails after ~1 s.
MIN_OPSET = 14
FALLBACK_MAX_OPSET = 23  # torch 2.13's ONNX_MAX_OPSET, for when torch cannot be asked
# What torch and transformers raise when the weights cannot be loaded (a damaged file that the
# source checks could not see), and when the opset is out of the exporter's reach.
_UNREADABLE_WEIGHTS = re.compile(
    r"SafetensorError|PytorchStreamReader|Unable to load weights|invalid load key|"
    r"deserializ|unpickl",
    re.IGNORECASE,
)
_BAD_OPSET = re.compile(r"opset", re.IGNORECASE)


def max_opset() -> int:
    """The newest opset torch's ONNX exporter writes (asking torch costs its import, ~2 s)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # private, but it is the limit itself
    except ImportError:
        return FALLBACK_MAX_OPSET
    return int(ONNX_MAX_OPSET)


def check_opset(opset: int | None) -> None:
    """Refuse an opset the ONNX exporter cannot write, before any work."""
    if opset is None:
        return
    if opset < MIN_OPSET:
        raise ExportError(
            f"--opset {opset} is too old for GPT-2 (its attention needs opset {MIN_OPSET} or "
            "newer); choose a newer one or leave --opset out."
        )
    newest = max_opset()
    if opset > newest:
        raise ExportError(
            f"--opset {opset} is newer than this torch can export (at most {newest}); "
            "choose an older one or leave --opset out."
        )


def export_onnx(checkpoint: Path, work_dir: Path, opset: int | None = None) -> Path:
    """Export ``checkpoint`` into ``work_dir``; return the path of the exported ``model.onnx``.

    Raises:
        ExportError: the weights cannot be loaded, or torch cannot export at ``opset``.
    """
    from optimum.exporters.onnx import main_export

    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_libraries():
            main_export(
                str(checkpoint),
                output=work_dir,
                task=TASK,
                opset=opset,
                library_name="transformers",
                local_files_only=True,  # the source step already fetched everything
                do_validation=False,  # verify.py compares the finished bundle instead
            )
    except Exception as exc:
        sentence = export_error_sentence(exc, checkpoint, opset)
        if sentence is None:
            raise
        raise ExportError(sentence) from exc
    return work_dir / "model.onnx"


def export_error_sentence(exc: Exception, checkpoint: Path, opset: int | None) -> str | None:
    """The user's sentence for an export failure they can fix; None for a bug."""
    text = f"{type(exc).__name__}: {exc}"
    first = text.strip().splitlines()[0].rstrip(".")
    if _UNREADABLE_WEIGHTS.search(text):
        return (
            f"The weights of {checkpoint} cannot be loaded ({first}); the file is corrupt or "
            "truncated, so download or save the checkpoint again."
        )
    if opset is not None and _BAD_OPSET.search(text):
        return f"torch cannot export GPT-2 at --opset {opset} ({first}); leave --opset out."
    return None


_LOGGERS = ("transformers", "optimum", "torch.onnx", "onnx", "onnxruntime", "root")


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the tracer warnings and info logs of torch/transformers/optimum for one block.

    They describe tracing internals, nothing the user can act on; errors still raise.
    """
    from transformers.utils import logging as hf_logging

    hf_level = hf_logging.get_verbosity()
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_logging.set_verbosity_error()
        for name in _LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            hf_logging.set_verbosity(hf_level)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
