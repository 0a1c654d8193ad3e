"""gpt2_edge.runtime: torch-free GPT-2 generation from a bundle (onnxruntime, tokenizers, numpy).

Its public names (``__all__``) are all that the project's other halves (``serve``, ``pack``,
``batch``) import from it:

- loading: :func:`load`, :func:`pick_model`, :func:`load_bundle`, :class:`Bundle`,
  :class:`Manifest`, :class:`Tokenizer`, :class:`Precision`, the bundle's file names, its
  file checks (:func:`verify_files`, :func:`sha256_of`);
- generating: :class:`Generator`, :class:`Engine` (the running batch), the settings
  (:class:`SamplingSettings`, :class:`GenerationOptions` and their bounds), the results
  (:class:`GenerationResult`, :class:`StreamEvent`, :class:`TokenLogprob`, :class:`ScoreResult`,
  :class:`Timings`), :func:`sequence_rng`;
- errors: :class:`EdgeError` (with its ``field``), :class:`SettingError`, :class:`PromptTooLong`;
- commands: what every command of the project shares (:class:`EdgeCommand`, :func:`user_errors`,
  :func:`show_version`, :func:`guarded_imports`, :func:`run_app`, :func:`signals_as_interrupts`,
  :func:`signals_ignored`, and :func:`make_parents` / :func:`remove_made` for the folders an
  output needs).

The names are imported on first use (PEP 562), so that importing a submodule, as the
``gpt2-generate`` entry point does, does not load onnxruntime and numpy before the command can
catch a Ctrl-C.
"""

from __future__ import annotations

from importlib import import_module

# typing.TYPE_CHECKING, without importing typing (100 ms at a cold start, before a command's
# Ctrl-C guard is in place: runtime/cli/startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .api import DEFAULT_PROVIDER, check_runtime_arguments, load, pick_model
    from .cli.errors import VERSION_HELP, EdgeCommand, run_app, show_version, user_errors
    from .cli.folders import make_parents, remove_made
    from .cli.interrupts import signals_as_interrupts, signals_ignored
    from .cli.startup import guarded_imports
    from .contract.bundle import Bundle, load_bundle, verify_files
    from .contract.files import sha256_of
    from .contract.manifest import MANIFEST, MODEL_FILE, TOKENIZER_FILE, Manifest
    from .contract.models_dir import MODELS_DIR, bundles_in
    from .contract.precision import Precision
    from .contract.tokenizer import Tokenizer
    from .contract.verified import cache_dir
    from .errors import EdgeError, PromptTooLong, SettingError, Terminated
    from .generation.engine import Engine
    from .generation.generator import Generator
    from .generation.results import (
        FinishReason,
        GenerationResult,
        ScoreResult,
        StreamEvent,
        Timings,
        TokenLogprob,
    )
    from .sampling.sampler import Sampler, sequence_rng
    from .settings.options import GENERATOR_NAMES, GenerationOptions
    from .settings.sampling import SAMPLING_NAMES, SamplingSettings
    from .settings.values import MAX_LOGPROBS, MAX_SEQUENCES

_WHERE = {
    "Bundle": "contract.bundle",
    "DEFAULT_PROVIDER": "api",
    "EdgeCommand": "cli.errors",
    "EdgeError": "errors",
    "Engine": "generation.engine",
    "FinishReason": "generation.results",
    "GENERATOR_NAMES": "settings.options",
    "GenerationOptions": "settings.options",
    "GenerationResult": "generation.results",
    "Generator": "generation.generator",
    "MANIFEST": "contract.manifest",
    "MAX_LOGPROBS": "settings.values",
    "MAX_SEQUENCES": "settings.values",
    "MODELS_DIR": "contract.models_dir",
    "MODEL_FILE": "contract.manifest",
    "Manifest": "contract.manifest",
    "Precision": "contract.precision",
    "PromptTooLong": "errors",
    "SAMPLING_NAMES": "settings.sampling",
    "Sampler": "sampling.sampler",
    "SamplingSettings": "settings.sampling",
    "ScoreResult": "generation.results",
    "SettingError": "errors",
    "StreamEvent": "generation.results",
    "TOKENIZER_FILE": "contract.manifest",
    "Terminated": "errors",
    "Timings": "generation.results",
    "TokenLogprob": "generation.results",
    "Tokenizer": "contract.tokenizer",
    "VERSION_HELP": "cli.errors",
    "bundles_in": "contract.models_dir",
    "cache_dir": "contract.verified",
    "guarded_imports": "cli.startup",
    "check_runtime_arguments": "api",
    "load": "api",
    "load_bundle": "contract.bundle",
    "make_parents": "cli.folders",
    "pick_model": "api",
    "remove_made": "cli.folders",
    "run_app": "cli.errors",
    "sequence_rng": "sampling.sampler",
    "sha256_of": "contract.files",
    "show_version": "cli.errors",
    "signals_as_interrupts": "cli.interrupts",
    "signals_ignored": "cli.interrupts",
    "user_errors": "cli.errors",
    "verify_files": "contract.bundle",
}

__all__ = [
    "Bundle",
    "DEFAULT_PROVIDER",
    "EdgeCommand",
    "EdgeError",
    "Engine",
    "FinishReason",
    "GENERATOR_NAMES",
    "GenerationOptions",
    "GenerationResult",
    "Generator",
    "MANIFEST",
    "MAX_LOGPROBS",
    "MAX_SEQUENCES",
    "MODELS_DIR",
    "MODEL_FILE",
    "Manifest",
    "Precision",
    "PromptTooLong",
    "SAMPLING_NAMES",
    "Sampler",
    "SamplingSettings",
    "ScoreResult",
    "SettingError",
    "StreamEvent",
    "TOKENIZER_FILE",
    "Terminated",
    "Timings",
    "TokenLogprob",
    "Tokenizer",
    "VERSION_HELP",
    "bundles_in",
    "cache_dir",
    "check_runtime_arguments",
    "guarded_imports",
    "load",
    "load_bundle",
    "make_parents",
    "pick_model",
    "remove_made",
    "run_app",
    "sequence_rng",
    "sha256_of",
    "show_version",
    "signals_as_interrupts",
    "signals_ignored",
    "user_errors",
    "verify_files",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
