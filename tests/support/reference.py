"""transformers' own greedy continuation: the reference the runtime's parity tests compare with
(needs the export extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Prompts of the parity tests: words, a number, one token, single letters.
PROMPTS = ["The history of the city", "In 1998, the band released", "Hello", "A B C D E F G"]
NEW = 64

_MODELS: dict[Path, Any] = {}


def transformers_model(checkpoint: Path) -> Any:
    """``GPT2LMHeadModel`` of ``checkpoint`` in eval mode, loaded once per session."""
    if checkpoint not in _MODELS:
        from transformers import GPT2LMHeadModel

        _MODELS[checkpoint] = GPT2LMHeadModel.from_pretrained(checkpoint).eval()
    return _MODELS[checkpoint]


def transformers_greedy(checkpoint: Path, prompt_ids: np.ndarray, new: int) -> list[int]:
    """transformers' greedy continuation (stops at EOS, which it includes)."""
    import torch

    model = transformers_model(checkpoint)
    ids = torch.tensor(prompt_ids[None])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only fight over 2 shared cores
    try:
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                do_sample=False,
                pad_token_id=model.config.eos_token_id,
            )
    finally:
        torch.set_num_threads(threads)
    return out[0, ids.shape[1] :].tolist()
