"""Graph builders: Optimum's export (``onnx_export.py``) and the fused decoder (``fused.py``)."""

from .fused import FUSED_GRAPH, GRAPHS, OPTIMUM_GRAPH

__all__ = ["FUSED_GRAPH", "GRAPHS", "OPTIMUM_GRAPH"]
