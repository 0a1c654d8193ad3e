"""Export one ONNX decoder graph with past-key-value inputs through Optimum.

Optimum's ``text-generation-with-past`` task writes a single ``model.onnx`` whose first call takes
past tensors of length 0, so one graph serves prefill and decode.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TASK = "text-generation-with-past"


def export_onnx(checkpoint: Path, work_dir: Path, opset: int | None = None) -> Path:
    """Export ``checkpoint`` into ``work_dir``; return the path of the exported ``model.onnx``."""
    from optimum.exporters.onnx import main_export

    work_dir.mkdir(parents=True, exist_ok=True)
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
    return work_dir / "model.onnx"


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
