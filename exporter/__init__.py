"""gpt2_edge.exporter: turn a GPT-2 checkpoint into a verified ONNX bundle (needs torch).

The heavy libraries are imported lazily by each step, so ``import gpt2_edge.exporter`` is cheap.
"""

from .errors import ExportError
from .pipeline import export_bundle

__all__ = ["ExportError", "export_bundle"]
