"""Checkpoint folders without torch: a GPT-2 ``model.safetensors`` whose header holds every tensor
GPT2LMHeadModel loads, in the shapes a config gives (zeros), so that the exporter's checks of the
config against the weights pass (or fail where a test changes one)."""

from __future__ import annotations

import json
import struct
from typing import Any

# GPT-2's tensors: name -> shape in the config's sizes (E width, I inner, V vocabulary, P context).
_OUTER = {"wte.weight": ("V", "E"), "wpe.weight": ("P", "E"), "ln_f.weight": ("E",)}
_OUTER["ln_f.bias"] = ("E",)
_BLOCK = {
    "ln_1.weight": ("E",),
    "ln_1.bias": ("E",),
    "attn.c_attn.weight": ("E", "3E"),
    "attn.c_attn.bias": ("3E",),
    "attn.c_proj.weight": ("E", "E"),
    "attn.c_proj.bias": ("E",),
    "ln_2.weight": ("E",),
    "ln_2.bias": ("E",),
    "mlp.c_fc.weight": ("E", "I"),
    "mlp.c_fc.bias": ("I",),
    "mlp.c_proj.weight": ("I", "E"),
    "mlp.c_proj.bias": ("E",),
}


def gpt2_shapes(config: dict[str, Any], layers: int | None = None) -> dict[str, list[int]]:
    """Each tensor's shape for ``config`` (``layers`` blocks, default its ``n_layer``)."""
    width = config.get("n_embd", 768)
    sizes = {
        "E": width,
        "3E": 3 * width,
        "I": config.get("n_inner") or 4 * width,
        "V": config.get("vocab_size", 50257),
        "P": config.get("n_positions", 1024),
    }
    names = dict(_OUTER)
    for i in range(config.get("n_layer", 12) if layers is None else layers):
        names.update({f"h.{i}.{name}": dims for name, dims in _BLOCK.items()})
    return {f"transformer.{n}": [sizes[d] for d in dims] for n, dims in names.items()}


def gpt2_safetensors(config: dict[str, Any], **changes: list[int]) -> bytes:
    """A float16 safetensors file of zeros with GPT-2's tensors for ``config``; ``changes``
    replace a tensor's shape (its name without ``transformer.`` and with ``__`` for dots)."""
    shapes = gpt2_shapes(config)
    for key, shape in changes.items():
        shapes[f"transformer.{key.replace('__', '.')}"] = shape
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format pads its header to 8 bytes
    return struct.pack("<Q", len(text)) + text + bytes(offset)
