"""The graph's tensor names resolved from the manifest, the host-side feeds of one step, and the
sentence for a failed run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from ..errors import EdgeError
from .check import onnxruntime_reason

# The KV cache as the decode loop holds it: flat [k0, v0, k1, v1, ...], each (B, nh, L, hs), as
# numpy arrays (CPU) or device OrtValues (CUDA); opaque to everything but the runner.
FlatPast = list[Any]
# What a failed run raises: onnxruntime's own exception types (session.run), and RuntimeError
# (run_with_iobinding re-raises the status as one). Caught around each call, which costs nothing
# in the decode loop until one is raised.
ORT_RUN_ERRORS: tuple[type[Exception], ...] = (
    RuntimeError,
    *(c for c in vars(ort_state).values() if isinstance(c, type) and issubclass(c, Exception)),
)
# Turns a failed run's exception and the position_ids it was fed into the sentence to raise.
RunFailed = Callable[[Exception, np.ndarray], EdgeError]


def run_failed(exc: Exception, position_ids: np.ndarray) -> EdgeError:
    """A failed run as a sentence, where nothing is known of the bundle (runners built alone)."""
    return EdgeError(f"onnxruntime failed to run the graph: {onnxruntime_reason(exc)}.")


@dataclass(frozen=True)
class GraphNames:
    """The graph's tensor names, resolved once from the manifest's ``io`` map."""

    input_ids: str
    attention_mask: str | None  # None when the graph has no such input
    position_ids: str | None
    past: tuple[str, ...]  # flat: key 0, value 0, key 1, ...
    outputs: tuple[str, ...]  # logits, then present in the same flat order
    logits_index: str | None = None  # fused graphs: which positions get logits (B, K)

    def host_inputs(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        logits_index: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """The step's host-side feeds by graph name, for the inputs this graph has.

        ``logits_index`` defaults to every position of ``input_ids``.
        """
        feeds = {self.input_ids: input_ids}
        if self.attention_mask:
            feeds[self.attention_mask] = attention_mask
        if self.position_ids:
            feeds[self.position_ids] = position_ids
        if self.logits_index:
            index = every_position(input_ids) if logits_index is None else logits_index
            feeds[self.logits_index] = index
        return feeds

    def bind_host_inputs(
        self,
        binding: Any,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        logits_index: np.ndarray | None = None,
    ) -> list[ort.OrtValue]:
        """Bind :meth:`host_inputs` to an IO ``binding``; keep what it returns until the run.

        ``bind_cpu_input`` finds only required inputs, and the fused graph gives
        ``logits_index`` a default (an overridable initializer) so that onnxruntime-genai may
        leave it unfed; it is bound as an OrtValue that wraps the array instead.
        """
        kept: list[ort.OrtValue] = []
        feeds = self.host_inputs(input_ids, attention_mask, position_ids, logits_index)
        for name, value in feeds.items():
            if name == self.logits_index:
                kept.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value)))
                binding.bind_ortvalue_input(name, kept[-1])
            else:
                binding.bind_cpu_input(name, value)  # copied (to the device) by onnxruntime
        return kept


def every_position(input_ids: np.ndarray) -> np.ndarray:
    """A ``logits_index`` that asks for the logits of every position of ``input_ids`` (B, T)."""
    batch, width = input_ids.shape
    return np.tile(np.arange(width, dtype=np.int64), (batch, 1))  # (B, T)


def graph_names(io: dict[str, str], layers: int, inputs: set[str]) -> GraphNames:
    """Resolve the manifest's name patterns against the inputs the graph really has."""
    past = tuple(io[kind] % i for i in range(layers) for kind in ("past_key", "past_value"))
    present = tuple(
        io[kind] % i for i in range(layers) for kind in ("present_key", "present_value")
    )
    return GraphNames(
        input_ids=io["input_ids"],
        attention_mask=io["attention_mask"] if io["attention_mask"] in inputs else None,
        position_ids=io["position_ids"] if io["position_ids"] in inputs else None,
        past=past,
        outputs=(io["logits"], *present),
        logits_index=io.get("logits_index") if io.get("logits_index") in inputs else None,
    )


def kv_dtype(input_types: dict[str, str], past: Sequence[str]) -> np.dtype:
    """The past/present element type from the graph's input types (float32 unless float16)."""
    kind = input_types.get(past[0], "tensor(float)") if past else ""
    return np.dtype(np.float16) if "float16" in kind else np.dtype(np.float32)
