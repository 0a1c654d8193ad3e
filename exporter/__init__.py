"""gpt2_edge.exporter: turn a GPT-2 checkpoint into a verified ONNX bundle (needs torch).

The names below are imported on first use (PEP 562), so ``import gpt2_edge.exporter`` (which the
``gpt2-export`` entry point does first) is instant, and a Ctrl-C or a missing export extra meets
the command's own guard rather than a traceback. The heavy libraries are imported lazily by each
step.
"""

from __future__ import annotations

from importlib import import_module

# typing.TYPE_CHECKING without importing typing (100 ms at a cold start, before the command's
# Ctrl-C guard: runtime/cli/startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .errors import ExportError
    from .pipeline import export_bundle

_WHERE = {"ExportError": "errors", "export_bundle": "pipeline"}

__all__ = ["ExportError", "export_bundle"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:  # lets ``from gpt2_edge.exporter import onnx_files`` import the module
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
