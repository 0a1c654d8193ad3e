"""The onnxruntime session around a bundle's decoder graph: provider choice, threads, one forward.

One graph serves prefill and decode: the first call passes past tensors of length 0.

Two ways to run a step, chosen by provider:

- CPU: ``InferenceSession.run`` with numpy feeds; present arrays come back as numpy and are fed
  as-is. On GPT-2 124M (random weights, 256-token past, median step, a 2-core machine shared with
  other jobs) it measured 19 tok/s against 14-15 for OrtValue feeds and IO binding in one run, and
  16 against 16-18 in another: within the noise, so the plainer path is the CPU default and
  ``io_binding=True`` selects the other for benchmarks to settle it.
- CUDA: IO binding. Present tensors stay on the device as ``OrtValue`` s and are bound as the next
  past, so only the small ids/mask/positions go up and only the logits come down each step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from .bundle import Architecture, Bundle
from .errors import EdgeError
from .graph_check import GraphFacts, check_graph, graph_facts, onnxruntime_reason
from .pageout import release_file_pages
from .precision import Precision
from .runners import (
    ORT_RUN_ERRORS,
    BindingRunner,
    FlatPast,
    NumpyRunner,
    Runner,
    every_position,
    graph_names,
    kv_dtype,
)
from .settings import check_threads

PROVIDERS = ("auto", "cpu", "cuda")
_ORT_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}

# Per layer (key, value), each (B, heads, past_len, head_size): what forward() takes and returns.
KV = list[tuple[np.ndarray, np.ndarray]]
INT8_ON_CUDA = (
    "This bundle is quantized to int8 for CPUs; on CUDA it will be slower than an fp32 or fp16 "
    "bundle of the same model."
)
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


def resolve_provider(requested: str) -> ProviderChoice:
    """Map ``cpu|cuda|auto`` to what this onnxruntime build offers, or raise a sentence.

    ``auto`` falls back to the CPU silently on a CPU build of onnxruntime, where nobody could
    have expected CUDA, and with a notice where a GPU build is installed but CUDA is missing.
    """
    if not isinstance(requested, str) or requested not in PROVIDERS:
        raise EdgeError(f"Unknown provider {requested!r}; choose one of {', '.join(PROVIDERS)}.")
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

    Raises:
        EdgeError: ``threads`` is not None or an integer from 1 to the CPUs available.
    """
    threads = check_threads(threads)
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


def is_int8(precision: dict[str, Any]) -> bool:
    """Whether a manifest's ``precision`` describes an integer-quantized graph."""
    return Precision.from_json(precision).is_integer or precision.get("quantized") is True


def create_inference_session(
    bundle: Bundle, provider: str, threads: int | None
) -> tuple[ort.InferenceSession, GraphFacts]:
    """Open the bundle's graph and check that its manifest describes it (``graph_check.py``);
    returns the session and the facts it was checked against.

    Raises:
        EdgeError: onnxruntime cannot load the file, or the graph is not the one the manifest
            describes (names, layers, heads, head size, vocabulary, KV cache kind).
    """
    options = session_options(threads)
    # Errors too: onnxruntime logs a failed load to stderr (ANSI colours, C++ signatures) before
    # it raises the same text, which the user gets as one sentence instead.
    options.log_severity_level = 4  # fatal only
    try:
        session = ort.InferenceSession(
            str(bundle.model_path), sess_options=options, providers=ort_providers(provider)
        )
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        raise EdgeError(
            f"onnxruntime cannot load {bundle.model_path}: {onnxruntime_reason(exc)}."
        ) from None
    where, names = bundle.origin
    facts = graph_facts(session, bundle.model_path, bundle.manifest.io["position_ids"])
    check_graph(bundle.manifest, facts, where, bundle.model_path.name, names)
    return session, facts


class Session:
    """The decoder graph of one bundle, with the manifest's tensor names resolved.

    Args:
        bundle: an opened bundle.
        provider: ``cpu``, ``cuda`` or ``auto`` (default ``auto``: CUDA when available, else CPU).
        threads: intra-op threads; ``None`` lets onnxruntime choose.
        io_binding: keep the KV cache in onnxruntime between steps (default ``None``: on CUDA
            only; CUDA always uses it).

    Attributes:
        notices: one-line messages for the user (CPU fallback, int8 on CUDA, fp32 attention on the
            CPU under CUDA); the library does not print them, the CLI does.
    """

    def __init__(
        self,
        bundle: Bundle,
        provider: str = "auto",
        threads: int | None = None,
        io_binding: bool | None = None,
    ):
        if threads is not None and threads < 1:
            raise EdgeError(f"threads must be a positive integer, got {threads}.")
        self.bundle = bundle
        self.arch: Architecture = bundle.manifest.architecture
        choice = resolve_provider(provider)
        self.provider = choice.name
        self.notices: list[str] = [choice.notice] if choice.notice else []
        if self.provider == "cuda" and is_int8(bundle.manifest.precision):
            self.notices.append(INT8_ON_CUDA)
        self.ort, facts = create_inference_session(bundle, self.provider, threads)
        self._positions = facts.positions  # the position table's rows; None when not read
        # The weights onnxruntime copied into its own buffers need not stay resident twice.
        release_file_pages(p for p in bundle.path.iterdir() if p.is_file())
        input_types = {i.name: i.type for i in self.ort.get_inputs()}
        # An input with a default (the fused graph's logits_index, so that onnxruntime-genai can
        # leave it unfed) is an overridable initializer, which get_inputs() does not list.
        defaults = {i.name for i in self.ort.get_overridable_initializers()}
        self.names = graph_names(bundle.manifest.io, self.arch.layers, set(input_types) | defaults)
        self.kv_dtype = kv_dtype(input_types, self.names.past)
        # Fused GQA graphs append to one preallocated buffer in place (``shared_cache.py``); the
        # generation loop then drives them through SharedKVDecoder instead of the runner.
        self.shared_kv = (
            bundle.manifest.graph.get("kv_cache") == "shared-buffer"
            and self.names.attention_mask is not None
            and self.names.position_ids is not None
        )
        self.kv_device = self._kv_device()
        if self.shared_kv and self.provider == "cuda" and self.kv_device == "cpu":
            self.notices.append(FP32_ATTENTION_ON_CUDA)
        self.runner: Runner = NumpyRunner(self.ort, self.names, self.run_failed)
        if self.provider == "cuda" or io_binding:
            self.runner = BindingRunner(
                self.ort, self.names, device=self.provider, failed=self.run_failed
            )

    def _kv_device(self) -> str:
        """Where the shared KV buffers live: on the device that runs GroupQueryAttention.

        onnxruntime's CUDA GroupQueryAttention takes float16 (and bfloat16) only; a float32 one
        falls back to the CPU kernel. Buffers bound on the GPU while the kernel runs on the CPU
        are copied across each step and the in-place append breaks (measured on an H100 with
        onnxruntime-gpu 1.31: logits off by up to 2.4 from the second token on), so float32
        buffers stay on the CPU, where the kernel that writes them runs.
        """
        if self.provider == "cuda" and self.kv_dtype == np.dtype(np.float16):
            return "cuda"
        return "cpu"

    def run_failed(self, exc: Exception, position_ids: np.ndarray) -> EdgeError:
        """onnxruntime's error in a run, as one sentence naming its likely cause.

        A manifest that passed every check against the graph can still claim a longer context
        than the graph's position table where the table's size could not be read from the file
        (``onnx_wire.position_table``): onnxruntime then fails at the first position past it.
        The sentence blames the context only when that may be the cause.
        """
        last = int(np.max(position_ids)) if np.size(position_ids) else 0
        where, names = self.bundle.origin
        model = self.bundle.model_path
        message = f"onnxruntime failed to run {model.name} on positions up to {last}: "
        message += onnxruntime_reason(exc)
        if self._positions is None or last >= self._positions:
            label = names.get("architecture.context_length", "architecture.context_length")
            message += (
                f"; {where}: {label} ({self.arch.context_length}) may be larger than the graph "
                "supports"
            )
        return EdgeError(message + ".")

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
        """One call of the graph with numpy in and out; returns logits (B, T, V) and present KV.

        Generation drives a :class:`.decoder.Decoder` instead, and a forward from scratch is
        :meth:`logits`.
        """
        flat = [tensor for pair in past for tensor in pair]
        # numpy in and out whatever the provider
        runner = NumpyRunner(self.ort, self.names, self.run_failed)
        logits, present = runner.run(input_ids, attention_mask, position_ids, flat)
        return logits, list(zip(present[0::2], present[1::2], strict=True))

    def logits(
        self,
        input_ids: np.ndarray,  # (B, T) int64, right-padded
        lengths: np.ndarray | None = None,  # (B,) real tokens per row; default T
        positions: np.ndarray | None = None,  # (B, K) positions wanted; default every one
    ) -> np.ndarray:
        """float32 logits (B, K, V) at ``positions`` of a forward from scratch (no past).

        The one forward that evaluation, scoring and the exporter's checks share. Rows are
        right-padded, which both graph kinds take here: the causal mask keeps every real token
        from seeing the padding after it. A fused graph computes the LM head only at
        ``positions`` (its ``logits_index`` input); an Optimum graph computes every position and
        the rest are dropped.
        """
        batch, width = input_ids.shape
        full = np.full(batch, width, dtype=np.int64)
        lengths = full if lengths is None else np.asarray(lengths, dtype=np.int64)
        mask = (np.arange(width) < lengths[:, None]).astype(np.int64)  # (B, T)
        position_ids = np.ascontiguousarray(np.broadcast_to(np.arange(width), (batch, width)))
        want = every_position(input_ids) if positions is None else np.asarray(positions)
        feeds = self.names.host_inputs(input_ids.astype(np.int64), mask, position_ids, want)
        shape = (batch, self.arch.heads, 0, self.arch.head_size)  # (B, nh, 0, hs)
        empty = np.zeros(shape, dtype=self.kv_dtype)
        feeds.update({name: empty for name in self.names.past})
        try:
            out = self.ort.run([self.names.outputs[0]], feeds)[0]
        except ORT_RUN_ERRORS as exc:
            raise self.run_failed(exc, position_ids) from None
        if not self.names.logits_index:  # every position came back
            out = out[np.arange(batch)[:, None], want]
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def new_past(self, batch: int) -> FlatPast:
        """An empty flat KV cache (length 0) in the runner's form, for the first :meth:`step`."""
        shape = (batch, self.arch.heads, 0, self.arch.head_size)  # (B, nh, 0, hs)
        return self.runner.empty_past(shape, self.kv_dtype)

    def step(
        self,
        input_ids: np.ndarray,  # (B, T) int64
        attention_mask: np.ndarray,  # (B, past_len + T) int64
        position_ids: np.ndarray,  # (B, T) int64
        past: FlatPast,
    ) -> tuple[np.ndarray, FlatPast]:
        """One call of the graph; returns logits (B, T, V) on the host and the flat present."""
        return self.runner.run(input_ids, attention_mask, position_ids, past)
