"""gpt2_edge.runtime: torch-free GPT-2 generation from a bundle (onnxruntime, tokenizers, numpy).

The names below are imported on first use (PEP 562), so that importing a submodule, as the
``gpt2-generate`` entry point does, does not load onnxruntime and numpy before the command can
catch a Ctrl-C.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import load
    from .bundle import Bundle, Manifest, load_bundle
    from .errors import EdgeError
    from .generate import Generator
    from .results import GenerationResult, ScoreResult, StreamEvent, Timings, TokenLogprob
    from .sampling import Sampler
    from .settings import GenerationOptions, SamplingSettings
    from .tokenizer import Tokenizer

_WHERE = {
    "Bundle": "bundle",
    "EdgeError": "errors",
    "GenerationOptions": "settings",
    "GenerationResult": "results",
    "Generator": "generate",
    "Manifest": "bundle",
    "Sampler": "sampling",
    "SamplingSettings": "settings",
    "ScoreResult": "results",
    "StreamEvent": "results",
    "Timings": "results",
    "TokenLogprob": "results",
    "Tokenizer": "tokenizer",
    "load": "api",
    "load_bundle": "bundle",
}

__all__ = [
    "Bundle",
    "EdgeError",
    "GenerationOptions",
    "GenerationResult",
    "Generator",
    "Manifest",
    "Sampler",
    "SamplingSettings",
    "ScoreResult",
    "StreamEvent",
    "Timings",
    "TokenLogprob",
    "Tokenizer",
    "load",
    "load_bundle",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
