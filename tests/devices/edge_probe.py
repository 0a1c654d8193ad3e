"""Run on an (emulated) device by test_edge_arm.py: greedy tokens and perplexity per bundle.

Usage: python edge_probe.py TEXT_FILE PROMPT NEW_TOKENS BUNDLE [BUNDLE ...]; prints one JSON
object: {"cpu": {feature: bool}, "bundles": {path: {"tokens": [...], "perplexity": float}}}.
It imports only gpt2-edge's runtime (the device has no pytest), and reports the CPU features
numpy detected, so a test can check that the emulator really showed it the CPU it asked for.
Timings under emulation mean nothing, so none are reported.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gpt2_edge.runtime import Generator, load_bundle
from gpt2_edge.runtime.generation.evaluate import perplexity
from gpt2_edge.runtime.graph.session import Session

EVAL_TOKENS = 48  # short: the LM head over 50,257 words is most of the emulated time
FEATURES = ("ASIMD", "ASIMDDP", "ASIMDHP", "AVX2", "AVX512F", "AVX512_SKX", "FMA3")


def cpu_features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as found
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as found
    return {name: bool(found[name]) for name in FEATURES if name in found}


def probe(text: str, prompt: str, new_tokens: int, folder: str) -> dict:
    bundle = load_bundle(folder, check_hashes=False)  # the CLI run checks them
    session = Session(bundle, provider="cpu", threads=2)
    generator = Generator(session, bundle.tokenizer)
    result = generator.generate(prompt, max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    ids = bundle.tokenizer.encode(text, add_special_tokens=False)[:EVAL_TOKENS]
    scored = perplexity(session, ids, context=EVAL_TOKENS, stride=EVAL_TOKENS)
    return {"tokens": [int(t) for t in result.tokens], "perplexity": scored.perplexity}


def main(argv: list[str]) -> None:
    text_file, prompt, new_tokens, *bundles = argv
    text = Path(text_file).read_text(encoding="utf-8")
    report = {
        "cpu": cpu_features(),
        "bundles": {b: probe(text, prompt, int(new_tokens), b) for b in bundles},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
