"""bundle.json ``precision``: one typed record for every precision, owned by the runtime.

The exporter's recipes (``exporter/recipes/``) each produce one :class:`Precision`; the runtime
reads it back with :meth:`Precision.from_json` and needs only ``dtype`` and :attr:`is_integer`.
Keys written by older exporters, or by newer ones that this runtime does not know, stay in
``extra`` so a rewrite loses nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# What each dtype means for the weights; the runtime reads nothing else to decide how to run.
DTYPES = ("float32", "float16", "int8", "int4")


@dataclass(frozen=True)
class Precision:
    """How the bundle's weights (and activations) are stored and computed.

    Attributes:
        dtype: ``float32``, ``float16``, ``int8`` or ``int4``: the projections' weights.
        method: ``None`` (as exported), ``dynamic`` (int8 weights, activations quantized at run
            time), ``weight-only`` (MatMulNBits) or ``cast`` (float16).
        operators: the ONNX ops that carry the precision, e.g. ``["MatMulInteger",
            "MatMulNBits"]``.
        weights: how the weights are quantized: bits, granularity, symmetric, reduce_range...
        activations: how activations are quantized at run time (empty when they stay float).
        lm_head: how the (tied) LM head is stored, when it differs from the projections.
        embedding: how the token embedding is stored.
        kv_dtype: the KV cache's element type.
        target: the CPUs the recipe was tuned for (``portable``, ``avx512_vnni``, ``arm64``).
        cpus: the same in words, for people.
        tool: who quantized or converted, with versions.
        choice: why this recipe, with the measurement behind it.
        extra: any other key found in bundle.json.
    """

    dtype: str = "float32"
    method: str | None = None
    operators: list[str] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    activations: dict[str, Any] = field(default_factory=dict)
    lm_head: dict[str, Any] = field(default_factory=dict)
    embedding: str = "float32"
    kv_dtype: str = "float32"
    target: str | None = None
    cpus: str | None = None
    tool: dict[str, str] = field(default_factory=dict)
    choice: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_integer(self) -> bool:
        """Whether the weights are integer-quantized (int8 or int4)."""
        return self.dtype.lower().startswith(("int", "uint"))

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "extra"}
        data.update(self.extra)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Precision:
        """Read a manifest's ``precision`` (any layout an exporter wrote: unknown keys -> extra)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["dtype"] = str(values.get("dtype", "float32"))
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def describe(self) -> str:
        """One line for a summary table."""
        if self.dtype == "int8":
            rows = self.activations.get("granularity", "")
            head = self.lm_head.get("summary", "")
            text = f"int8 {self.method or ''} ({', '.join(self.operators)}), activations {rows}"
            text += (f"; LM head {head}" if head else "") + f"; for {self.cpus or 'any CPU'}"
            return text + self._kv_note()
        if self.method == "weight-only":
            w = self.weights
            return (
                f"{self.dtype} weight-only MatMulNBits, block {w.get('block_size')}, "
                f"accuracy level {w.get('accuracy_level')}"
            ) + self._kv_note()
        if self.dtype == "float16":
            return f"float16 (KV cache {self.kv_dtype}, logits float32)"
        return self.dtype

    def _kv_note(self) -> str:
        return f"; KV cache {self.kv_dtype}" if self.kv_dtype != "float32" else ""


FLOAT32 = Precision()
