"""A minimal greedy decode loop on a bare onnxruntime session, to compare graphs and KV feeding.

Independent of ``gpt2_edge.runtime`` on purpose: it isolates what the graph and the way the KV
cache is fed cost, from everything else. Modes:

- ``numpy``: ``InferenceSession.run`` with numpy feeds; present tensors come back as numpy and are
  fed as the next past (what Optimum and a naive loop do).
- ``ortvalue``: IO binding; present ``OrtValue`` s stay inside onnxruntime and are bound as the
  next past, so nothing goes through numpy except the logits.
- ``shared``: (fused GQA graph only) one preallocated ``(B, nh, max_len, hs)`` buffer per layer and
  kind, bound as both past and present, so GroupQueryAttention appends in place. Logits are bound
  to a preallocated buffer too.

Run: ``python benchmarks/decode_loop.py MODEL.onnx --mode shared --prompt 128 --new 128``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort


@dataclass
class Shape:
    layers: int
    heads: int
    head_size: int
    vocab: int


def graph_shape(sess: ort.InferenceSession) -> Shape:
    pasts = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
    heads, head_size = pasts[0].shape[1], pasts[0].shape[3]
    vocab = sess.get_outputs()[0].shape[-1]
    return Shape(
        len(pasts) // 2, int(heads), int(head_size), int(vocab) if isinstance(vocab, int) else 50257
    )


def make_options(
    threads: int = 2,
    spin: bool = True,
    arena: bool = True,
    level: str = "all",
    denormal_zero: bool = False,
    optimized_path: str | None = None,
) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    opts.enable_cpu_mem_arena = arena
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if denormal_zero:
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    opts.log_severity_level = 3
    return opts


class Loop:
    """Greedy generation of ``new`` tokens after a prompt, in one of the three feeding modes."""

    def __init__(self, sess: ort.InferenceSession, mode: str, max_len: int = 1024):
        self.sess, self.mode, self.max_len = sess, mode, max_len
        self.shape = graph_shape(sess)
        self.input_names = {i.name for i in sess.get_inputs()}
        n = self.shape.layers
        self.past_names = [f"past_key_values.{i}.{k}" for i in range(n) for k in ("key", "value")]
        self.present_names = [f"present.{i}.{k}" for i in range(n) for k in ("key", "value")]
        self.output_names = ["logits", *self.present_names]

    def _feeds(self, ids: np.ndarray, pos: int) -> dict[str, np.ndarray]:
        b, s = ids.shape
        feeds = {"input_ids": ids}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones((b, pos + s), np.int64)
        if "position_ids" in self.input_names:
            feeds["position_ids"] = np.broadcast_to(
                np.arange(pos, pos + s, dtype=np.int64), (b, s)
            ).copy()
        if "logits_index" in self.input_names:  # fused graph v2: the last position only
            feeds["logits_index"] = np.full((b, 1), s - 1, dtype=np.int64)
        return feeds

    def generate(self, prompt: np.ndarray, new: int) -> tuple[np.ndarray, float, list[float]]:
        """Returns (tokens (B, new), prefill seconds, per-step decode seconds)."""
        return getattr(self, f"_gen_{self.mode}")(prompt, new)

    def _timed(self, prompt: np.ndarray, new: int, forward) -> tuple[np.ndarray, float, list]:
        """The greedy loop of every mode; ``forward(ids, pos, step)`` returns (B, S, V) logits."""
        ids, pos, out, steps = prompt, 0, [], []
        t0 = time.perf_counter()
        prefill = 0.0
        for step in range(new):
            nxt = forward(ids, pos, step)[:, -1].argmax(-1)  # (B,)
            pos += ids.shape[1]
            ids = nxt[:, None].astype(np.int64)
            out.append(nxt)
            t1 = time.perf_counter()
            if step == 0:
                prefill = t1 - t0
            else:
                steps.append(t1 - t0)
            t0 = t1
        return np.stack(out, 1), prefill, steps

    def _gen_numpy(self, prompt: np.ndarray, new: int):
        b = prompt.shape[0]
        empty = np.zeros((b, self.shape.heads, 0, self.shape.head_size), np.float32)
        past = [empty] * len(self.past_names)

        def forward(ids: np.ndarray, pos: int, step: int) -> np.ndarray:
            nonlocal past
            feeds = self._feeds(ids, pos)
            feeds.update(zip(self.past_names, past, strict=True))
            logits, *past = self.sess.run(self.output_names, feeds)
            return logits

        return self._timed(prompt, new, forward)

    def _gen_ortvalue(self, prompt: np.ndarray, new: int):
        b = prompt.shape[0]
        empty = ort.OrtValue.ortvalue_from_numpy(
            np.zeros((b, self.shape.heads, 0, self.shape.head_size), np.float32)
        )
        past = [empty] * len(self.past_names)
        binding = self.sess.io_binding()

        def forward(ids: np.ndarray, pos: int, step: int) -> np.ndarray:
            nonlocal past
            binding.clear_binding_inputs()
            binding.clear_binding_outputs()
            for name, arr in self._feeds(ids, pos).items():
                binding.bind_cpu_input(name, arr)
            for name, val in zip(self.past_names, past, strict=True):
                binding.bind_ortvalue_input(name, val)
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self.sess.run_with_iobinding(binding)
            logits, *past = binding.get_outputs()
            return logits.numpy()

        return self._timed(prompt, new, forward)

    def _gen_shared(self, prompt: np.ndarray, new: int):
        b = prompt.shape[0]
        sh = self.shape
        # (B, nh, max_len, hs) per layer and kind, bound as both past and present: GQA appends
        # the step's key/values at position seqlens_k in place.
        cache = [
            ort.OrtValue.ortvalue_from_numpy(
                np.zeros((b, sh.heads, self.max_len, sh.head_size), np.float32)
            )
            for _ in self.past_names
        ]
        logits_step = np.empty((b, 1, sh.vocab), np.float32)
        logits_val = ort.OrtValue.ortvalue_from_numpy(logits_step)
        binding = self.sess.io_binding()
        v2 = "logits_index" in self.input_names  # v2 graphs make (B, 1, V) logits from the start
        if v2:
            binding.bind_ortvalue_output("logits", logits_val)
        else:
            binding.bind_output("logits", "cpu")  # bound first so it is get_outputs()[0]
        for name, val in zip(self.past_names, cache, strict=True):
            binding.bind_ortvalue_input(name, val)
        for name, val in zip(self.present_names, cache, strict=True):
            binding.bind_ortvalue_output(name, val)

        def forward(ids: np.ndarray, pos: int, step: int) -> np.ndarray:
            for name, arr in self._feeds(ids, pos).items():
                binding.bind_cpu_input(name, arr)
            if step == 1 and not v2:  # v1 prefill logits are (B, S, V); then (B, 1, V)
                binding.bind_ortvalue_output("logits", logits_val)
            self.sess.run_with_iobinding(binding)
            return binding.get_outputs()[0].numpy() if step == 0 and not v2 else logits_step

        return self._timed(prompt, new, forward)


def run(args: argparse.Namespace) -> dict:
    opts = make_options(
        args.threads,
        not args.no_spin,
        not args.no_arena,
        args.level,
        args.denormal_zero,
        args.save_optimized,
    )
    t0 = time.perf_counter()
    sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    loop = Loop(sess, args.mode, max_len=args.max_len)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 50000, size=(args.batch, args.prompt), dtype=np.int64)
    results = []
    for rep in range(args.repeats + 1):  # the first is the warm-up
        tokens, prefill, steps = loop.generate(prompt, args.new)
        if rep:
            results.append((prefill, steps))
    prefill_ms = statistics.median(r[0] for r in results) * 1000
    decode = statistics.median(len(r[1]) * args.batch / sum(r[1]) for r in results)
    first = statistics.median(1 / statistics.median(r[1][:16]) for r in results)
    last = statistics.median(1 / statistics.median(r[1][-16:]) for r in results)
    return {
        "model": str(args.model),
        "mode": args.mode,
        "load_s": round(load_s, 3),
        "prefill_ms": round(prefill_ms, 1),
        "decode_tok_s": round(decode, 1),
        "decode_first16_tok_s": round(first * args.batch, 1),
        "decode_last16_tok_s": round(last * args.batch, 1),
        "tokens_head": tokens[0, :8].tolist(),
        "peak_rss_mib": peak_rss_mib(),
    }


def peak_rss_mib() -> float:
    """VmHWM (not ru_maxrss, which Linux carries across fork+exec from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--mode", choices=("numpy", "ortvalue", "shared"), default="numpy")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--level", default="all", choices=("none", "basic", "extended", "all"))
    p.add_argument("--no-spin", action="store_true")
    p.add_argument("--no-arena", action="store_true")
    p.add_argument("--denormal-zero", action="store_true")
    p.add_argument("--save-optimized", default=None)
    print(json.dumps(run(p.parse_args())))


if __name__ == "__main__":
    main()
