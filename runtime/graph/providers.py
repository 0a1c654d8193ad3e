"""Which onnxruntime execution provider runs a bundle: ``cpu``, ``cuda`` or ``auto`` (CUDA when
this onnxruntime build has it, else the CPU, with a notice where a GPU build was expected),
and the session options every session is opened with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from ..errors import EdgeError

PROVIDERS = ("auto", "cpu", "cuda")
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


CUDA_MISSING = (
    "onnxruntime-gpu is installed but the onnxruntime Python loaded has no CUDA provider (is the "
    "CPU package onnxruntime installed beside it?); running on CPU."
)
FP32_ATTENTION_ON_CUDA = (
    "onnxruntime has no float32 CUDA kernel for this bundle's fused attention, so attention runs "
    "on the CPU; export with --dtype fp16 for a GPU."
)


@dataclass(frozen=True)
class ProviderChoice:
    name: str  # "cpu" or "cuda"
    notice: str | None  # a one-line message for the user when "auto" fell back


# Distributions that ship onnxruntime with CUDA; with one of them installed, a user expects CUDA.
GPU_DISTRIBUTIONS = ("onnxruntime-gpu",)


@functools.cache
def gpu_build_installed() -> bool:
    """Whether a GPU build of onnxruntime is installed (whichever onnxruntime Python imported).

    Asked once per process; ``importlib.metadata`` is imported here because it costs 15-30 ms
    at start-up and only ``--provider auto`` on a machine without CUDA needs it.
    """
    from importlib import metadata

    for name in GPU_DISTRIBUTIONS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return True
    return False


def resolve_provider(requested: object) -> ProviderChoice:
    """Map ``cpu|cuda|auto`` to what this onnxruntime build offers, or raise a sentence.

    ``auto`` falls back to the CPU silently on a CPU build of onnxruntime, where nobody could
    have expected CUDA, and with a notice where a GPU build is installed but CUDA is missing.
    """
    if not isinstance(requested, str) or requested not in PROVIDERS:
        raise EdgeError(
            f"Unknown provider {requested!r}; choose one of {', '.join(PROVIDERS)}.", "provider"
        )
    available = ort.get_available_providers()
    has_cuda = _ORT_NAMES["cuda"] in available
    if requested == "cuda" and not has_cuda:
        raise EdgeError(
            "The CUDA provider is not available in this onnxruntime build "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or use --provider cpu."
        )
    if requested == "auto":
        if has_cuda:
            return ProviderChoice("cuda", None)
        notice = CUDA_MISSING if gpu_build_installed() else None
        return ProviderChoice("cpu", notice)
    return ProviderChoice(requested, None)


def session_options(threads: int | None) -> ort.SessionOptions:
    """onnxruntime's options: full graph optimization, ``threads`` intra-op threads.

    ``threads`` was checked when the model was loaded (:func:`..api.load`).
    """
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # onnxruntime's own warnings are not the user's business
    return opts


def ort_providers(provider: str) -> list[Any]:
    """onnxruntime's provider list; CUDA keeps CPU behind it for the few ops it does not run.

    TF32 is off: onnxruntime's CUDA provider enables it by default, which moved fp32 logits by
    1e-2 against the CPU on an H100 (6.7e-6 with it off); an fp32 bundle should compute in fp32.
    fp16 bundles are unaffected.
    """
    if provider == "cuda":
        return [(_ORT_NAMES["cuda"], {"use_tf32": "0"}), _ORT_NAMES["cpu"]]
    return [_ORT_NAMES[provider]]
