"""The onnxruntime session around a bundle's decoder graph: provider choice, threads, one forward.

One graph serves prefill and decode: the first call passes past tensors of length 0.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .bundle import Architecture, Bundle
from .errors import EdgeError

PROVIDERS = ("auto", "cpu", "cuda")
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

KV = list[tuple[np.ndarray, np.ndarray]]  # per layer (key, value), each (B, heads, past_len, head_size)


@dataclass(frozen=True)
class ProviderChoice:
    name: str  # "cpu" or "cuda"
    notice: str | None  # a one-line message for the user when "auto" fell back


def resolve_provider(requested: str) -> ProviderChoice:
    """Map ``cpu|cuda|auto`` to what this onnxruntime build offers, or raise a sentence."""
    if requested not in PROVIDERS:
        raise EdgeError(f"Unknown provider '{requested}'; choose one of {', '.join(PROVIDERS)}.")
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
        return ProviderChoice("cpu", "No CUDA provider in this onnxruntime build; running on CPU.")
    return ProviderChoice(requested, None)


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # onnxruntime's own warnings are not the user's business
    return opts


def create_inference_session(
    model_path: Path, provider: str, threads: int | None
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(model_path), sess_options=session_options(threads), providers=[_ORT_NAMES[provider]]
        )
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeError(f"onnxruntime cannot load {model_path}: {first_line}") from None


class Session:
    """The decoder graph of one bundle, with the manifest's tensor names resolved.

    Args:
        bundle: an opened bundle.
        provider: ``cpu``, ``cuda`` or ``auto`` (default ``auto``: CUDA when available, else CPU).
        threads: intra-op threads; ``None`` lets onnxruntime choose.
    """

    def __init__(self, bundle: Bundle, provider: str = "auto", threads: int | None = None):
        if threads is not None and threads < 1:
            raise EdgeError(f"threads must be a positive integer, got {threads}.")
        self.bundle = bundle
        self.arch: Architecture = bundle.manifest.architecture
        choice = resolve_provider(provider)
        self.provider, self.notice = choice.name, choice.notice
        self.ort = create_inference_session(bundle.model_path, self.provider, threads)
        io = bundle.manifest.io
        n = self.arch.layers
        self.past_names = [(io["past_key"] % i, io["past_value"] % i) for i in range(n)]
        self.present_names = [(io["present_key"] % i, io["present_value"] % i) for i in range(n)]
        self.input_names = {i.name for i in self.ort.get_inputs()}
        self.output_names = [io["logits"]] + [name for pair in self.present_names for name in pair]
        self._io = io
        self.kv_dtype = self._detect_kv_dtype()

    def _detect_kv_dtype(self) -> np.dtype:
        by_name = {i.name: i.type for i in self.ort.get_inputs()}
        kind = by_name.get(self.past_names[0][0], "tensor(float)") if self.past_names else ""
        return np.dtype(np.float16) if "float16" in kind else np.dtype(np.float32)

    def empty_past(self, batch: int) -> KV:
        shape = (batch, self.arch.heads, 0, self.arch.head_size)  # (B, nh, 0, hs)
        empty = np.zeros(shape, dtype=self.kv_dtype)
        return [(empty, empty) for _ in range(self.arch.layers)]

    def forward(
        self,
        input_ids: np.ndarray,  # (B, T) int64
        attention_mask: np.ndarray,  # (B, past_len + T) int64
        position_ids: np.ndarray,  # (B, T) int64
        past: KV,
    ) -> tuple[np.ndarray, KV]:
        """One call of the graph; returns logits (B, T, V) and the present KV (past_len + T long)."""
        feeds: dict[str, np.ndarray] = {self._io["input_ids"]: input_ids}
        if self._io["attention_mask"] in self.input_names:
            feeds[self._io["attention_mask"]] = attention_mask
        if self._io["position_ids"] in self.input_names:
            feeds[self._io["position_ids"]] = position_ids
        for (k_name, v_name), (k, v) in zip(self.past_names, past):
            feeds[k_name], feeds[v_name] = k, v
        outputs = self.ort.run(self.output_names, feeds)
        present = [(outputs[1 + 2 * i], outputs[2 + 2 * i]) for i in range(self.arch.layers)]
        return outputs[0], present


def print_notice(message: str | None) -> None:
    if message:
        print(message, file=sys.stderr)
