"""A checkpoint's ``config.json`` against itself and against its weights, before any slow step.

transformers builds the model from the config and then loads the weights into it: a config that
contradicts itself (heads that do not divide the width, a negative context, a string for a
number) or its weights (another vocabulary size, more layers than the weights hold) ends 10-30 s
into the export in a 60-80-line traceback, or worse, loads: missing layers are initialised at
random and extra ones dropped, with a warning. Here each contradiction is one sentence naming
the field, from the config alone (:func:`check_config`, before a hub download) and from the
weight files' headers (:func:`check_weights_match`, milliseconds: no tensor data is read).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from .errors import ExportError

# GPT2Config's sizes, with the other names its attribute_map accepts for them and its defaults.
SIZES = {
    "vocab_size": ((), 50257),
    "n_positions": (("max_position_embeddings",), 1024),
    "n_embd": (("hidden_size",), 768),
    "n_layer": (("num_hidden_layers",), 12),
    "n_head": (("num_attention_heads",), 12),
}
FRACTIONS = ("resid_pdrop", "embd_pdrop", "attn_pdrop")  # dropout rates, 0 to 1
FLAGS = (
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "use_cache",
    "tie_word_embeddings",
)
TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
# transformers 4.57's activation names (ACT2FN); another name is looked up there.
KNOWN_ACTIVATIONS = frozenset(
    {"gelu", "gelu_10", "gelu_accurate", "gelu_fast", "gelu_new", "gelu_python"}
    | {"gelu_python_tanh", "gelu_pytorch_tanh", "laplace", "leaky_relu", "linear", "mish"}
    | {"prelu", "quick_gelu", "relu", "relu2", "relu6", "sigmoid", "silu", "swish", "tanh"}
)
# Each tensor of a GPT-2 block, and its shape in the config's sizes (Conv1D weights are in, out).
BLOCK = {
    "ln_1.weight": ("n_embd",),
    "ln_1.bias": ("n_embd",),
    "attn.c_attn.weight": ("n_embd", "3 * n_embd"),
    "attn.c_attn.bias": ("3 * n_embd",),
    "attn.c_proj.weight": ("n_embd", "n_embd"),
    "attn.c_proj.bias": ("n_embd",),
    "ln_2.weight": ("n_embd",),
    "ln_2.bias": ("n_embd",),
    "mlp.c_fc.weight": ("n_embd", "n_inner"),
    "mlp.c_fc.bias": ("n_inner",),
    "mlp.c_proj.weight": ("n_inner", "n_embd"),
    "mlp.c_proj.bias": ("n_embd",),
}
OUTER = {
    "wte.weight": ("vocab_size", "n_embd"),
    "wpe.weight": ("n_positions", "n_embd"),
    "ln_f.weight": ("n_embd",),
    "ln_f.bias": ("n_embd",),
}
_BLOCK_NAME = re.compile(r"^h\.(\d+)\.")


def check_config(config: dict[str, Any], model: str) -> dict[str, int]:
    """The config's sizes (``n_inner`` resolved), after refusing any field transformers would
    fail on or misread: sizes that are not positive integers, heads that do not divide the
    width, dropout rates outside 0-1, an epsilon that is not a positive number, flags that are
    not true or false, token ids outside the vocabulary."""
    where = f"The config.json of {model}"
    sizes = {}
    for name, (_, default) in SIZES.items():
        key = _key(config, name)
        value = config.get(key, default)
        if not _is_int(value) or value < 1:
            raise ExportError(
                f"{where} gives {key} = {_shown(value)}; it must be a positive integer."
            )
        sizes[name] = value
    n_inner = config.get("n_inner")
    if n_inner is not None and (not _is_int(n_inner) or n_inner < 1):
        raise ExportError(
            f"{where} gives n_inner = {_shown(n_inner)}; it must be a positive integer or null "
            "(4 * n_embd)."
        )
    sizes["n_inner"] = n_inner or 4 * sizes["n_embd"]
    if sizes["n_embd"] % sizes["n_head"]:
        raise ExportError(
            f"{where} gives n_head = {sizes['n_head']}, which does not divide n_embd = "
            f"{sizes['n_embd']} (each head takes n_embd / n_head of the width)."
        )
    for name in FRACTIONS:
        value = config.get(name, 0.1)
        if not _is_number(value) or not 0 <= value <= 1:
            raise ExportError(f"{where} gives {name} = {_shown(value)}; it must be from 0 to 1.")
    epsilon = config.get("layer_norm_epsilon", 1e-5)
    if not _is_number(epsilon) or not 0 < epsilon < 1:
        raise ExportError(
            f"{where} gives layer_norm_epsilon = {_shown(epsilon)}; it must be a small positive "
            "number (GPT-2's is 1e-05)."
        )
    for name in FLAGS:
        if not isinstance(config.get(name, True), bool):
            raise ExportError(
                f"{where} gives {name} = {_shown(config[name])}; it must be true or false."
            )
    for name in TOKEN_IDS:
        value = config.get(name)
        if value is not None and (not _is_int(value) or not 0 <= value < sizes["vocab_size"]):
            raise ExportError(
                f"{where} gives {name} = {_shown(value)}; it must be a token id from 0 to "
                f"{sizes['vocab_size'] - 1} (vocab_size - 1) or null."
            )
    activation = config.get("activation_function", "gelu_new")
    if not isinstance(activation, str) or not activation:
        raise ExportError(
            f"{where} gives activation_function = {_shown(activation)}; it must be the name of "
            "one (GPT-2's is gelu_new)."
        )
    return sizes


def check_weights_match(
    folder: Path, files: list[Path], config: dict[str, Any], model: str
) -> None:
    """Refuse weights whose tensors contradict ``config``: every GPT-2 tensor the config asks
    for must be there, floating point, of the shape its sizes give, and no more layers.

    Args:
        folder: the checkpoint folder.
        files: the weight files transformers will load (one, or an index's shards).
        config: the parsed ``config.json``.
        model: what the user passed, for the sentences.
    """
    sizes = check_config(config, model)
    shapes: dict[str, tuple[tuple[int, ...], str, str]] = {}  # name -> (shape, dtype, file)
    for path in files:
        for name, (shape, dtype) in _headers(path).items():
            shapes[name.removeprefix("transformer.")] = (shape, dtype, path.name)
    if "wte.weight" not in shapes and "lm_head.weight" in shapes:  # tied: loaded from the head
        shapes["wte.weight"] = shapes["lm_head.weight"]
    layers = sorted({int(m.group(1)) for n in shapes if (m := _BLOCK_NAME.match(n))})
    if layers and layers[-1] >= sizes["n_layer"]:
        raise ExportError(
            f"The config.json of {model} gives n_layer = {sizes['n_layer']}, but its weights "
            f"hold {layers[-1] + 1} layers (h.0 to h.{layers[-1]}); they must agree."
        )
    wanted = dict(OUTER)
    for i in range(sizes["n_layer"]):
        wanted.update({f"h.{i}.{name}": dims for name, dims in BLOCK.items()})
    for name, dims in wanted.items():
        if name not in shapes:
            held = f"{len(layers)} layers" if name.startswith("h.") else "no such tensor"
            raise ExportError(
                f"The weights of {model} lack {name}, which its config.json asks for "
                f"(n_layer = {sizes['n_layer']}; the weights hold {held}); they must agree."
            )
        shape, dtype, file = shapes[name]
        expected = tuple(_size(d, sizes) for d in dims)
        if shape != expected:
            field = next(d for d, s, e in zip(dims, shape, expected, strict=False) if s != e)
            field = field if field in sizes else "n_embd"  # "3 * n_embd"
            raise ExportError(
                f"The config.json of {model} gives {_key(config, field)} = {sizes[field]}, but "
                f"{name} in "
                f"{file} is {_dims(shape)}, not {_dims(expected)}; they must agree."
            )
        if dtype not in FLOAT_DTYPES:
            raise ExportError(
                f"{name} in {file} of {model} holds {dtype} values; a GPT-2 checkpoint's "
                "weights are floating point."
            )
    _check_activation(config, model)


def _check_activation(config: dict[str, Any], model: str) -> None:
    activation = config.get("activation_function", "gelu_new")
    if activation in KNOWN_ACTIVATIONS:
        return
    from transformers.activations import ACT2FN  # 7 s to import: only for another name

    if activation not in ACT2FN:
        raise ExportError(
            f"The config.json of {model} gives activation_function = {_shown(activation)}, which "
            "transformers does not know (GPT-2's is gelu_new)."
        )


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor's shape and dtype in one weight file, from its header alone."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:  # check_weights opened it already
            return {
                name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype())
                for name in f.keys()
            }
    import torch

    try:
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    except RuntimeError:  # a legacy pickle (torch < 1.6) cannot be mapped
        state = torch.load(path, map_location="meta", weights_only=True)
    except Exception as exc:  # weights_only refuses a pickle that runs code
        raise ExportError(f"{path} cannot be read as PyTorch weights ({exc}).") from None
    return {
        name: (tuple(t.shape), "F32" if t.dtype.is_floating_point else str(t.dtype))
        for name, t in state.items()
        if hasattr(t, "shape")
    }


def _key(config: dict[str, Any], name: str) -> str:
    """The name ``config`` gives a size under: its own, or another its attribute_map takes."""
    aliases = SIZES.get(name, ((), 0))[0]
    return next((k for k in (name, *aliases) if k in config), name)


def _size(dim: str, sizes: dict[str, int]) -> int:
    return 3 * sizes["n_embd"] if dim == "3 * n_embd" else sizes[dim]


def _dims(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) if shape else "a scalar"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _shown(value: Any) -> str:
    import json

    text = json.dumps(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"
