"""A manifest derived from a transformers GPT-2 checkpoint's config: one place, one set of defaults.

Both an exported bundle (the exporter calls :func:`derive_manifest` with the graph's tensor names)
and a plain Optimum folder opened by the runtime get their architecture, special ids and generation
defaults here, so the same checkpoint decodes the same way whichever way it arrives. Without a
``generation_config.json`` the default is greedy (transformers' default, ``do_sample=False``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EdgeError
from .files import read_json_object
from .manifest import (
    CONFIG_FILE,
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_EOS,
    DEFAULT_IO,
    GENERATION_CONFIG_FILE,
    Architecture,
    Manifest,
)
from .schema import MAX_CONTEXT_LENGTH, check_generation, check_token_ids, positive_int, shown

# Keys of transformers' generation_config.json that map onto our sampling settings.
_GENERATION_KEYS = {
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
}
_CONFIG_IDS = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "pad_token_id"}


def derive_manifest(
    checkpoint: Path,
    *,
    name: str,
    source: dict[str, Any],
    io: dict[str, str] | None = None,
    kv_dtype: str = "float32",
    eos_fallback: int | None = None,
    precision: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of a GPT-2 whose ``config.json`` (and maybe ``generation_config.json``)
    lie in ``checkpoint``.

    Args:
        checkpoint: the folder with the configs (a checkpoint or an Optimum export).
        name: the bundle's name.
        source: where it came from, for ``bundle.json``.
        io: the graph's tensor names (default: Optimum's).
        kv_dtype: the graph's past/present element type.
        eos_fallback: the end-of-text id when config.json has none (default: the tokenizer's
            ``<|endoftext|>`` as the exporter passes it, else GPT-2's 50256 if in the vocabulary).
        precision: bundle.json ``precision`` (default float32).

    Raises:
        EdgeError: a config cannot be read, is not GPT-2's, or has a bad field (named).
    """
    where = checkpoint / CONFIG_FILE
    config = read_json_object(where)
    if config.get("model_type") != "gpt2":
        raise EdgeError(
            f"{checkpoint} holds a {shown(config.get('model_type'))} model; "
            "gpt2-edge runs GPT-2 models only."
        )
    arch = architecture_from_config(config, where, kv_dtype)
    return Manifest(
        name=name,
        architecture=arch,
        io=dict(io or DEFAULT_IO),
        precision=dict(precision or {"dtype": "float32"}),
        special_tokens=special_tokens_from_config(config, arch.vocab_size, where, eos_fallback),
        generation=read_generation_config(checkpoint / GENERATION_CONFIG_FILE),
        source=source,
    )


def architecture_from_config(
    config: dict[str, Any], where: Path, kv_dtype: str = "float32"
) -> Architecture:
    """The architecture of a transformers GPT-2 ``config.json``, each field checked.

    ``n_positions`` (else ``n_ctx``) defaults to 1024, as in GPT2Config.
    """
    heads = positive_int(config, "n_head", where)
    width = positive_int(config, "n_embd", where)
    if width % heads:
        raise EdgeError(f"{where}: n_embd ({width}) must be a multiple of n_head ({heads}).")
    context_key = "n_positions" if "n_positions" in config else "n_ctx"
    context = positive_int(
        config, context_key, where, limit=MAX_CONTEXT_LENGTH, default=DEFAULT_CONTEXT_LENGTH
    )
    return Architecture(
        layers=positive_int(config, "n_layer", where),
        heads=heads,
        head_size=width // heads,
        hidden_size=width,
        context_length=context,
        vocab_size=positive_int(config, "vocab_size", where),
        model_type="gpt2",
        kv_dtype=kv_dtype,
    )


def special_tokens_from_config(
    config: dict[str, Any], vocab: int, where: Path, eos_fallback: int | None = None
) -> dict[str, int | None]:
    """bos/eos/pad ids: config.json's, else the end-of-text id; pad defaults to eos."""
    if eos_fallback is None:
        eos_fallback = DEFAULT_EOS if DEFAULT_EOS < vocab else None
    eos = config.get("eos_token_id", eos_fallback)
    pad = config.get("pad_token_id")
    special = {
        "bos": config.get("bos_token_id", eos),
        "eos": eos,
        "pad": eos if pad is None else pad,
    }
    label: Callable[[str], str] = lambda key: _CONFIG_IDS[key]  # noqa: E731
    check_token_ids(special, vocab, where, label)
    return special


def read_generation_config(path: Path) -> dict[str, Any]:
    """Our generation defaults from a transformers ``generation_config.json``, checked; greedy
    (``temperature`` 0) when there is none, as transformers decodes without one."""
    if not path.is_file():
        return {"temperature": 0.0}
    defaults = generation_defaults(read_json_object(path))
    check_generation(defaults, path, "")
    return defaults


def generation_defaults(gen_config: dict[str, Any]) -> dict[str, Any]:
    """Our sampling defaults from a transformers ``generation_config.json``.

    transformers samples only when ``do_sample`` is true, so without it the default is greedy.
    """
    out = {
        ours: gen_config[theirs]
        for theirs, ours in _GENERATION_KEYS.items()
        if theirs in gen_config
    }
    if not gen_config.get("do_sample", False):
        out["temperature"] = 0.0
    return out
