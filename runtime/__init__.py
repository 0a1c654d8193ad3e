"""gpt2_edge.runtime: torch-free GPT-2 generation from a bundle (onnxruntime, tokenizers, numpy)."""

from .bundle import Bundle, Manifest, load_bundle
from .errors import EdgeError

__all__ = ["Bundle", "EdgeError", "Manifest", "load_bundle"]
