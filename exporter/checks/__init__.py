"""Checks run on what the exporter built: parity between graphs, verification against
transformers, and the quality gate against the fp32 graph."""
