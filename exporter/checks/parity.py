"""Parity: two graphs of the same model run on one random prompt plus decode steps, compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def parity(
    reference: str | Path,
    candidate: str | Path,
    n_layer: int,
    n_head: int,
    head_size: int,
    prompt_len: int = 16,
    steps: int = 4,
    vocab: int = 50257,
    seed: int = 0,
) -> dict[str, float]:
    """Run both graphs on the same random prompt + ``steps`` decode steps (growing past tensors).

    Returns the max |logit difference| over all positions and whether greedy picks agree.
    """
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = [
        ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        for p in (reference, candidate)
    ]
    ids = rng.integers(0, vocab, size=(1, prompt_len), dtype=np.int64)
    empty = np.zeros((1, n_head, 0, head_size), np.float32)
    pasts = [[empty] * (2 * n_layer) for _ in sessions]
    input_names = [{i.name for i in sess.get_inputs()} for sess in sessions]
    max_diff, agree, total = 0.0, 0, 0
    pos = 0
    for _ in range(steps + 1):
        s = ids.shape[1]
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones((1, pos + s), np.int64),
            "position_ids": np.arange(pos, pos + s, dtype=np.int64)[None],
        }
        logits = []
        for k, sess in enumerate(sessions):
            f = {n: v for n, v in feeds.items() if n in input_names[k]}
            if "logits_index" in input_names[k]:
                f["logits_index"] = np.arange(s, dtype=np.int64)[None]
            for i in range(n_layer):
                f[f"past_key_values.{i}.key"] = pasts[k][2 * i]
                f[f"past_key_values.{i}.value"] = pasts[k][2 * i + 1]
            out = sess.run(None, f)
            logits.append(out[0])
            pasts[k] = out[1:]
        max_diff = max(max_diff, float(np.abs(logits[0] - logits[1]).max()))
        a, b = logits[0][:, -1].argmax(-1), logits[1][:, -1].argmax(-1)
        agree += int((a == b).sum())
        total += a.size
        pos += s
        ids = a[:, None].astype(np.int64)
    return {"max_abs_logit_diff": max_diff, "greedy_agreement": agree / total}
