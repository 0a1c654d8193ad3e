"""How one step of a bundle's graph runs: the graph's tensor names, and a runner per device.

- :class:`NumpyRunner` (CPU): ``InferenceSession.run`` with numpy feeds; present arrays come
  back as numpy and are fed as-is.
- :class:`BindingRunner` (CUDA): IO binding; present tensors stay on the device as
  ``OrtValue`` s and are bound as the next past, so only the small ids/mask/positions go up and
  only the logits come down each step.

Both turn onnxruntime's failure in a run into one sentence (:data:`RunFailed`); ``session.py``
chooses between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from .errors import EdgeError
from .graph_check import onnxruntime_reason

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


class Runner(Protocol):
    """Runs one step of the graph on one kind of device."""

    def empty_past(self, shape: tuple[int, ...], dtype: np.dtype) -> FlatPast: ...

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: FlatPast,
    ) -> tuple[np.ndarray, FlatPast]: ...

    def to_host(self, past: FlatPast) -> list[np.ndarray]: ...

    def from_host(self, arrays: Sequence[np.ndarray]) -> FlatPast: ...


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


class NumpyRunner:
    """CPU: ``InferenceSession.run`` with one feeds dict that is updated in place each step.

    ``failed`` turns an onnxruntime error in a run into the sentence to raise (default
    :func:`run_failed`; :meth:`Session.run_failed` names the bundle).
    """

    def __init__(self, session: Any, names: GraphNames, failed: RunFailed = run_failed):
        self._session, self._names, self._failed = session, names, failed
        self._outputs = list(names.outputs)
        self._feeds: dict[str, np.ndarray] = {}

    def empty_past(self, shape: tuple[int, ...], dtype: np.dtype) -> FlatPast:
        empty = np.zeros(shape, dtype=dtype)
        return [empty] * len(self._names.past)

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: FlatPast,
    ) -> tuple[np.ndarray, FlatPast]:
        feeds, names = self._feeds, self._names
        feeds.update(names.host_inputs(input_ids, attention_mask, position_ids))
        for name, value in zip(names.past, past, strict=True):
            feeds[name] = value
        try:
            outputs = self._session.run(self._outputs, feeds)
        except ORT_RUN_ERRORS as exc:
            raise self._failed(exc, position_ids) from None
        return outputs[0], outputs[1:]

    def to_host(self, past: FlatPast) -> list[np.ndarray]:
        return list(past)

    def from_host(self, arrays: Sequence[np.ndarray]) -> FlatPast:
        return [np.ascontiguousarray(a) for a in arrays]


class BindingRunner:
    """IO binding: the KV cache stays on ``device`` as OrtValues; only logits come to the host.

    Args:
        session: the onnxruntime ``InferenceSession``.
        names: resolved tensor names.
        device: onnxruntime device type for past/present (default ``cuda``; ``cpu`` works too and
            is how the tests exercise this path on a machine without a GPU).
        device_id: device index (default 0).
        ortvalue: the ``OrtValue`` class (a seam for tests).
        failed: turns an onnxruntime error in a run into the sentence to raise (default
            :func:`run_failed`).
    """

    def __init__(
        self,
        session: Any,
        names: GraphNames,
        device: str = "cuda",
        device_id: int = 0,
        ortvalue: Any = ort.OrtValue,
        failed: RunFailed = run_failed,
    ):
        self._session, self._names, self._failed = session, names, failed
        self._device, self._device_id, self._ortvalue = device, device_id, ortvalue
        self._binding = session.io_binding()

    def empty_past(self, shape: tuple[int, ...], dtype: np.dtype) -> FlatPast:
        empty = self._ortvalue.ortvalue_from_numpy(
            np.zeros(shape, dtype=dtype), self._device, self._device_id
        )
        return [empty] * len(self._names.past)

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: FlatPast,
    ) -> tuple[np.ndarray, FlatPast]:
        binding, names = self._binding, self._names
        kept = names.bind_host_inputs(binding, input_ids, attention_mask, position_ids)
        for name, value in zip(names.past, past, strict=True):
            binding.bind_ortvalue_input(name, value)
        # Outputs grow by one position each step, so they are re-bound unallocated every time;
        # a bound, already allocated output would have last step's shape.
        binding.clear_binding_outputs()
        binding.bind_output(names.outputs[0], "cpu")
        for name in names.outputs[1:]:
            binding.bind_output(name, self._device, self._device_id)
        try:
            self._session.run_with_iobinding(binding)
        except ORT_RUN_ERRORS as exc:
            raise self._failed(exc, position_ids) from None
        del kept  # the arrays they wrap had to live until the run
        outputs = binding.get_outputs()
        return outputs[0].numpy(), list(outputs[1:])

    def to_host(self, past: FlatPast) -> list[np.ndarray]:
        return [value.numpy() for value in past]

    def from_host(self, arrays: Sequence[np.ndarray]) -> FlatPast:
        return [
            self._ortvalue.ortvalue_from_numpy(
                np.ascontiguousarray(a), self._device, self._device_id
            )
            for a in arrays
        ]


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
