"""The bundle described for onnxruntime-genai: ``genai_config.json`` and ``tokenizer_config.json``.

onnxruntime-genai (C++, with Python, C#, Java and mobile bindings) runs a folder that holds an
ONNX decoder, ``tokenizer.json`` and a ``genai_config.json`` mapping roles to tensor names; with
these two files beside our graph, the same bundle runs there unmodified. What its source
(``src/config.cpp``, ``src/models/*.cpp``, onnxruntime-extensions' tokenizer) asks for:

- Its config parser is strict: an unknown key inside ``model``, ``decoder`` or ``search`` is an
  error, so the file holds only keys it reads and our own metadata stays in ``bundle.json``.
- ``"type": "decoder"``, the generic decoder-only model with one past/present pair per layer
  (``"gpt2"`` is the old export with stacked ``past_%d`` tensors, reallocated every step).
- ``past_present_share_buffer``: it allocates ``(B, heads, max_length, head_size)`` buffers and
  binds each as both past and present, which is how the fused GroupQueryAttention graph works
  (``graphs/fused.py``); Optimum's graph concatenates and gets growing past tensors instead.
- It feeds no input it does not know (``num_logits_to_keep`` apart): the fused graph's
  ``logits_index`` has a default, every position, and it reads each row's last real token from
  the ``(B, new_tokens, V)`` logits.
- Its tokenizer (onnxruntime-extensions) reads ``tokenizer.json`` but does not load without a
  ``tokenizer_config.json`` beside it; ours names what transformers would (the class, the special
  tokens) and that no BOS/EOS is added, rather than leave it to the extension's guesses (with no
  class it assumes a SentencePiece tokenizer whose BOS is ``<s>``).

Every bundle gets both files: onnxruntime-genai 0.18 runs fp32, int8, int4 and fp16 fused graphs
and Optimum's fp32 graph on its CPU provider, with our runtime's greedy tokens
(``tests/exporter/test_genai_interop.py``). The config names no provider (the CPU); a user adds one
the way genai documents (``og.Config.append_provider``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpt2_edge.runtime.contract.manifest import MODEL_FILE, TOKENIZER_FILE, Manifest
from gpt2_edge.runtime.settings.values import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, DEFAULT_TOP_P

GENAI_CONFIG = "genai_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
GENAI_FILES = (GENAI_CONFIG, TOKENIZER_CONFIG)
MODEL_TYPE = "decoder"
TOKENIZER_CLASS = "GPT2Tokenizer"  # onnxruntime-extensions: byte-level BPE from tokenizer.json
SHARED_BUFFER_KINDS = ("fused-gqa",)  # graph kinds whose past and present share one buffer
# Generation defaults that mean the same in genai's "search" (min_p and max_new_tokens have none).
PENALTY_KEYS = ("repetition_penalty", "no_repeat_ngram_size")


def genai_config(manifest: Manifest) -> dict[str, Any]:
    """``genai_config.json`` for the bundle that ``manifest`` describes.

    Sizes, special ids and tensor names are the manifest's (read from the graph by the
    exporter); ``max_length`` is the context length; the search defaults are the generation
    defaults, with ``do_sample`` false for greedy (temperature 0).
    """
    arch, io, special = manifest.architecture, manifest.io, manifest.special_tokens
    model: dict[str, Any] = {"type": MODEL_TYPE}
    for ours, theirs in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "pad_token_id")):
        if special.get(ours) is not None:
            model[theirs] = special[ours]
    model["vocab_size"] = arch.vocab_size
    model["context_length"] = arch.context_length
    model["decoder"] = {
        "filename": MODEL_FILE,
        # onnxruntime warns that the defaulted logits_index prevents constant folding; it is meant.
        "session_options": {"log_id": "gpt2-edge", "log_severity_level": 3, "provider_options": []},
        "hidden_size": arch.hidden_size,
        "num_attention_heads": arch.heads,
        "num_key_value_heads": arch.heads,
        "head_size": arch.head_size,
        "num_hidden_layers": arch.layers,
        "inputs": _present(
            {
                "input_ids": io["input_ids"],
                "attention_mask": io.get("attention_mask"),
                "position_ids": io.get("position_ids"),
                "past_key_names": io["past_key"],
                "past_value_names": io["past_value"],
            }
        ),
        "outputs": {
            "logits": io["logits"],
            "present_key_names": io["present_key"],
            "present_value_names": io["present_value"],
        },
    }
    return {"model": model, "search": search_options(manifest)}


def search_options(manifest: Manifest) -> dict[str, Any]:
    """genai's ``search`` section: the bundle's generation defaults and how its KV cache works.

    When sampling, ``top_k`` and ``top_p`` are written even where the bundle leaves them to our
    runtime's defaults (off), since genai's own default ``top_k`` is 50.
    """
    generation = manifest.generation
    temperature = float(generation.get("temperature", DEFAULT_TEMPERATURE))
    search: dict[str, Any] = {
        "max_length": manifest.architecture.context_length,
        "past_present_share_buffer": manifest.graph.get("kind") in SHARED_BUFFER_KINDS,
        "do_sample": temperature > 0,
    }
    if temperature > 0:
        search["temperature"] = temperature
        search["top_k"] = int(generation.get("top_k", DEFAULT_TOP_K))
        search["top_p"] = float(generation.get("top_p", DEFAULT_TOP_P))
    for key in PENALTY_KEYS:  # applied in greedy search too, by both runtimes
        if generation.get(key) is not None:
            search[key] = generation[key]
    return search


def tokenizer_config(folder: Path, manifest: Manifest) -> dict[str, Any]:
    """``tokenizer_config.json`` for onnxruntime-genai's tokenizer: GPT-2's byte-level BPE read
    from ``tokenizer.json``, its special tokens by name, and no BOS/EOS added to prompts (GPT-2
    adds none, nor does our runtime)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    config: dict[str, Any] = {
        "tokenizer_class": TOKENIZER_CLASS,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": manifest.architecture.context_length,
    }
    for key in ("bos", "eos", "pad"):
        token = manifest.special_tokens.get(key)
        if token is not None:
            config[f"{key}_token"] = tokenizer.id_to_token(token)
    if "eos_token" in config:  # GPT-2's convention; byte-level BPE never needs an unknown token
        config["unk_token"] = config["eos_token"]
    return config


def write_genai_files(folder: Path, manifest: Manifest) -> list[Path]:
    """Write ``genai_config.json`` and ``tokenizer_config.json`` into the bundle ``folder``
    (``tokenizer.json`` already there); returns their paths."""
    written = []
    for name, content in (
        (GENAI_CONFIG, genai_config(manifest)),
        (TOKENIZER_CONFIG, tokenizer_config(folder, manifest)),
    ):
        path = folder / name
        path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _present(names: dict[str, str | None]) -> dict[str, str]:
    return {role: name for role, name in names.items() if name}
