"""gpt2_edge.runtime: torch-free GPT-2 generation from a bundle (onnxruntime, tokenizers, numpy)."""

from .api import load
from .bundle import Bundle, Manifest, load_bundle
from .errors import EdgeError
from .generate import Generator
from .results import GenerationResult, StreamEvent, Timings
from .sampling import Sampler, SamplingSettings
from .settings import GenerationOptions
from .tokenizer import Tokenizer

__all__ = [
    "Bundle",
    "EdgeError",
    "GenerationOptions",
    "GenerationResult",
    "Generator",
    "Manifest",
    "Sampler",
    "SamplingSettings",
    "StreamEvent",
    "Timings",
    "Tokenizer",
    "load",
    "load_bundle",
]
