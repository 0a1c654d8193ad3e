"""How one step of a graph with a growing past runs on each kind of device.

- :class:`NumpyRunner` (CPU): ``InferenceSession.run`` with numpy feeds; present arrays come
  back as numpy and are fed as-is.
- :class:`BindingRunner` (CUDA): IO binding; present tensors stay on the device as
  ``OrtValue`` s and are bound as the next past, so only the small ids/mask/positions go up and
  only the logits come down each step.

Both turn onnxruntime's failure in a run into one sentence (:data:`.graph.names.RunFailed`);
the decoder that drives them (``past.py``) chooses between them by provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from ..graph.names import ORT_RUN_ERRORS, FlatPast, GraphNames, RunFailed, run_failed
from ..graph.session import Session


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


def runner_for(session: Session) -> Runner:
    """The runner for ``session``'s provider: IO binding on CUDA (or when asked), numpy feeds on
    the CPU, each turning a failed run into the session's sentence."""
    if session.io_binding:
        return BindingRunner(
            session.ort, session.names, device=session.provider, failed=session.run_failed
        )
    return NumpyRunner(session.ort, session.names, session.run_failed)
