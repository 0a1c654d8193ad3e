"""The onnxruntime session around a bundle's decoder graph: the graph opened and checked against
its manifest, its tensor names resolved, and the one forward from scratch (:meth:`Session.logits`)
that scoring, evaluation and the exporter's checks share.

One graph serves prefill and decode: the first call passes past tensors of length 0. How a
step with a KV cache runs is the decoders' business (``decoders/``): each owns its runner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from ..contract.bundle import Bundle
from ..contract.manifest import Architecture
from ..contract.precision import Precision
from ..errors import EdgeError
from .check import GraphFacts, check_graph, graph_facts, onnxruntime_reason
from .names import ORT_RUN_ERRORS, every_position, graph_names, kv_dtype
from .pageout import release_file_pages
from .providers import ProviderChoice, ort_providers, resolve_provider, session_options

INT8_ON_CUDA = (
    "This bundle is quantized to int8 for CPUs; on CUDA it will be slower than an fp32 or fp16 "
    "bundle of the same model."
)
FP32_ATTENTION_ON_CUDA = (
    "onnxruntime has no float32 CUDA kernel for this bundle's fused attention, so attention runs "
    "on the CPU; export with --dtype fp16 for a GPU."
)


def is_int8(precision: dict[str, Any]) -> bool:
    """Whether a manifest's ``precision`` describes an integer-quantized graph."""
    return Precision.from_json(precision).is_integer or precision.get("quantized") is True


def create_inference_session(
    bundle: Bundle, provider: str, threads: int | None
) -> tuple[ort.InferenceSession, GraphFacts]:
    """Open the bundle's graph and check that its manifest describes it (``graph/check.py``);
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
        provider: a resolved :class:`.providers.ProviderChoice`, or ``cpu``, ``cuda`` or
            ``auto`` (default ``auto``: CUDA when available, else CPU).
        threads: intra-op threads, already checked (:func:`..api.load` checks them); ``None``
            lets onnxruntime choose.
        io_binding: decoders keep the KV cache in onnxruntime between steps (default ``None``:
            on CUDA only; CUDA always does).

    Attributes:
        ort: the onnxruntime ``InferenceSession`` (the graph the decoders run).
        names: the graph's tensor names by role (:class:`.names.GraphNames`).
        arch: the manifest's architecture.
        kv_dtype: the past/present element type the graph takes.
        shared_kv: whether the graph appends to preallocated KV buffers in place (fused graph).
        kv_device: where shared KV buffers live (``cpu`` or ``cuda``).
        notices: one-line messages for the user (CPU fallback, int8 on CUDA, fp32 attention on the
            CPU under CUDA); the library does not print them, the CLI does.
    """

    def __init__(
        self,
        bundle: Bundle,
        provider: str | ProviderChoice = "auto",
        threads: int | None = None,
        io_binding: bool | None = None,
    ):
        self.bundle = bundle
        self.arch: Architecture = bundle.manifest.architecture
        # load() checks threads and resolves the provider once; a Session built directly (the
        # exporter's checks, benchmarks) resolves a provider's name here.
        choice = provider if isinstance(provider, ProviderChoice) else resolve_provider(provider)
        self.provider = choice.name
        self.io_binding = self.provider == "cuda" or bool(io_binding)
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
        # Fused GQA graphs append to one preallocated buffer in place (``decoders/shared.py``);
        # Optimum's graphs grow their past each call (``decoders/past.py``).
        self.shared_kv = (
            bundle.manifest.graph.get("kv_cache") == "shared-buffer"
            and self.names.attention_mask is not None
            and self.names.position_ids is not None
        )
        self.kv_device = self._kv_device()
        if self.shared_kv and self.provider == "cuda" and self.kv_device == "cpu":
            self.notices.append(FP32_ATTENTION_ON_CUDA)

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
