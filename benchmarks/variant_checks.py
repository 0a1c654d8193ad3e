"""Invariance and fidelity of a fused-graph bundle, on the bare graph (numpy feeds, growing past).

- batch: 4 different 32-token prompts in one batch, the prompt and 8 greedy steps, against each
  row run alone on the same tokens; and a right-padded batch of lengths 32/23/17/9 against each
  prompt alone (real positions only). Max |logit difference|: 0 means a row's result does not
  depend on the rest of its batch.
- cache: a 128-token prompt in one call against the same tokens fed one at a time with the
  growing cache; max |difference| and top-1 agreement over the 128 positions.
- against the fp32 graph and the shipped int8 graph on that prompt: max and mean |difference|,
  top-1 agreement over positions; on the trained fixture also the perplexity of 512 WikiText-2
  tokens (fp32 and the variant).
- greedy (``greedy=True``), the criterion of ``tests/test_precision_invariance.py``: 8 prompts of
  1 to 60 tokens, 32 greedy tokens each through the runtime alone and in one batch of 8 (rows
  that differ), and with the cache against recomputing the whole sequence each step (prompts whose
  tokens differ).

Tokens are WikiText-2 text through the real tokenizer (``../shared``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
PAD = 50256


class Graph:
    """One bundle's decoder graph, run with numpy: present tensors are fed back as the past."""

    def __init__(self, bundle: Path, threads: int = 2):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(bundle / "model.onnx"), opts)
        pasts = [i for i in self.sess.get_inputs() if i.name.startswith("past_key_values.")]
        self.past_names = [i.name for i in pasts]
        self.present_names = [n.replace("past_key_values", "present") for n in self.past_names]
        self.kv = np.float16 if pasts[0].type == "tensor(float16)" else np.float32
        self.heads, self.head_size = int(pasts[0].shape[1]), int(pasts[0].shape[3])

    def forward(
        self,
        ids: np.ndarray,
        past: list[np.ndarray] | None = None,
        lengths: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits (B, S, V) of every position, and the present. ``lengths``: right padding."""
        b, s = ids.shape
        if past is None:
            past = [np.zeros((b, self.heads, 0, self.head_size), self.kv)] * len(self.past_names)
        p = past[0].shape[2]
        totals = np.full(b, p + s) if lengths is None else np.asarray(lengths) + p
        width = p + s  # the mask's row sums are what GroupQueryAttention reads
        mask = (np.arange(width) >= (width - totals)[:, None]).astype(np.int64)
        feeds = {
            "input_ids": ids.astype(np.int64),
            "attention_mask": mask,
            "position_ids": np.broadcast_to(np.arange(p, p + s), (b, s)).astype(np.int64),
            **dict(zip(self.past_names, past, strict=True)),
        }
        logits, *present = self.sess.run(["logits", *self.present_names], feeds)
        return logits.astype(np.float32), present


@cache
def text_ids(n: int, offset: int = 0) -> np.ndarray:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(SHARED / "gpt2-tokenizer" / "tokenizer.json"))
    text = (SHARED / "data" / "wikitext-2" / "valid.txt").read_text(encoding="utf-8")[:200_000]
    ids = tok.encode(text).ids
    return np.array(ids[offset : offset + n], dtype=np.int64)


def batch_invariance(g: Graph) -> float:
    prompts = np.stack([text_ids(32, 1000 * (i + 1)) for i in range(4)])  # (4, 32)
    worst = 0.0
    logits, past = g.forward(prompts)
    alone = [g.forward(prompts[i : i + 1]) for i in range(4)]
    for i in range(4):
        worst = max(worst, float(np.abs(logits[i] - alone[i][0][0]).max()))
    tokens = logits[:, -1].argmax(-1)[:, None]  # (4, 1)
    alone_past = [a[1] for a in alone]
    for _ in range(8):
        logits, past = g.forward(tokens, past)
        for i in range(4):
            one, alone_past[i] = g.forward(tokens[i : i + 1], alone_past[i])
            worst = max(worst, float(np.abs(logits[i] - one[0]).max()))
        tokens = logits[:, -1].argmax(-1)[:, None]
    # right-padded prompts of different lengths
    lengths = np.array([32, 23, 17, 9])
    padded = np.full((4, 32), PAD, dtype=np.int64)
    for i, n in enumerate(lengths):
        padded[i, :n] = prompts[i, :n]
    logits, _ = g.forward(padded, lengths=lengths)
    for i, n in enumerate(lengths):
        one, _ = g.forward(prompts[i : i + 1, :n])
        worst = max(worst, float(np.abs(logits[i, :n] - one[0]).max()))
    return worst


def cache_invariance(g: Graph, ids: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(max |diff|, top-1 agreement) of one call against token by token; and the one-call logits."""
    whole, _ = g.forward(ids[None])
    past, steps = None, []
    for t in range(len(ids)):
        logits, past = g.forward(ids[None, t : t + 1], past)
        steps.append(logits[0, 0])
    stepped = np.stack(steps)
    agree = float((stepped.argmax(-1) == whole[0].argmax(-1)).mean())
    return float(np.abs(whole[0] - stepped).max()), agree, whole[0]


@cache
def reference_logits(bundle: Path, n: int) -> np.ndarray:
    return Graph(bundle).forward(text_ids(n)[None])[0][0]


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    return {
        "max_diff": float(np.abs(a - b).max()),
        "mean_diff": float(np.abs(a - b).mean()),
        "top1": float((a.argmax(-1) == b.argmax(-1)).mean()),
    }


def perplexity(logits: np.ndarray, ids: np.ndarray) -> float:
    x = logits[:-1].astype(np.float64)
    logz = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
    nll = logz - x[np.arange(len(x)), ids[1:]]
    return float(np.exp(nll.mean()))


GREEDY_LENGTHS = (1, 3, 7, 12, 20, 31, 45, 60)


def greedy_invariance(bundle: Path, g: Graph, new: int = 32) -> dict[str, int]:
    """Prompts (of 8) whose greedy tokens change in a batch of 8, and with the cache against
    recomputation; through the runtime's public API for the batch."""
    from gpt2_edge.runtime import load

    gen = load(str(bundle), provider="cpu", threads=2)
    prompts = [text_ids(n, 3000 + 97 * i).tolist() for i, n in enumerate(GREEDY_LENGTHS)]
    texts = [gen.tokenizer.decode(p) for p in prompts]
    opts = dict(max_new_tokens=new, temperature=0.0, ignore_eos=True)
    alone = [list(gen.generate(t, **opts).tokens) for t in texts]
    batch = [list(r.tokens) for r in gen.generate_batch(texts, **opts)]
    cache_differs = 0
    for ids in prompts:
        seq = np.array(ids, dtype=np.int64)
        logits, past = g.forward(seq[None])
        cached, recomputed = [int(logits[0, -1].argmax())], [int(logits[0, -1].argmax())]
        for _ in range(new - 1):
            logits, past = g.forward(np.array([[cached[-1]]]), past)
            cached.append(int(logits[0, -1].argmax()))
        for _ in range(new - 1):
            full = np.array(ids + recomputed, dtype=np.int64)[None]
            recomputed.append(int(g.forward(full)[0][0, -1].argmax()))
        cache_differs += cached != recomputed
    return {
        "greedy_batch_rows_changed": sum(a != b for a, b in zip(alone, batch, strict=True)),
        "greedy_cache_prompts_changed": cache_differs,
    }


def check(
    bundle: Path, fp32: Path, int8: Path, fixture: bool = False, greedy: bool = False
) -> dict[str, Any]:
    g = Graph(bundle)
    out: dict[str, Any] = {"batch_max_diff": batch_invariance(g)}
    if greedy:
        out.update(greedy_invariance(bundle, g))
    ids = text_ids(128)
    out["cache_max_diff"], out["cache_top1"], whole = cache_invariance(g, ids)
    for name, ref in (("fp32", fp32), ("int8", int8)):
        for k, v in compare(whole, reference_logits(ref, 128)).items():
            out[f"vs_{name}_{k}"] = v
    if fixture:  # trained weights: the perplexity means something
        long = text_ids(512, 5000)
        mine = g.forward(long[None])[0][0]
        out["ppl"] = perplexity(mine, long)
        out["ppl_fp32"] = perplexity(Graph(fp32).forward(long[None])[0][0], long)
        out["ppl_change"] = out["ppl"] / out["ppl_fp32"] - 1
        out["fixture_top1_vs_fp32"] = compare(mine, Graph(fp32).forward(long[None])[0][0])["top1"]
    return out
