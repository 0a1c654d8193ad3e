"""Graph builders: Optimum's export (``optimum.py``), the fused decoder (``fused.py``), and what a
built graph is (``describe.py``)."""

from .fused import FUSED_GRAPH, GRAPHS, OPTIMUM_GRAPH

__all__ = ["FUSED_GRAPH", "GRAPHS", "OPTIMUM_GRAPH"]
