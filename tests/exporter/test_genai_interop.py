"""The same bundle runs in onnxruntime-genai, unmodified (issue 15).

fp32, int8, int4 and fp16 bundles of the trained fixture (and an fp32 one of Optimum's graph,
``--graph optimum``) are loaded by the real ``onnxruntime-genai`` from PyPI (the ``test`` extra)
and must give our runtime's greedy tokens, prompt by prompt and as one right-padded batch; its
tokenizer must read our ``tokenizer.json`` to the same ids. The fused graph's ``logits_index``
default (every position, for a caller that does not feed it) is checked against the fed index on
the graph itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime import load
from gpt2_edge.runtime.contract.bundle import load_bundle
from gpt2_edge.runtime.contract.manifest import Architecture, Manifest
from gpt2_edge.runtime.errors import EdgeError

og = pytest.importorskip(
    "onnxruntime_genai", reason="onnxruntime-genai is not installed (the test extra has it)"
)

NEW_TOKENS = 32
PROMPTS = [
    "The history of the city",
    "In 1990 , the team won the league and",
    " A leading space, then more words about the music of the band",
    "Unicode: café, naïve — “quoted” 東京 🙂",
    "<|endoftext|>The band released its second album",
    "x",
]
# The tokenizer sees these too: empty, blank, control characters, a long run, a lone special.
TEXTS = [*PROMPTS, "", "   ", "\n\n = Heading = \n", "tab\tand\r\nnewline", "a" * 300]
TEXTS += ["<|endoftext|>", "ends with <|endoftext|>", "\u200b\ufeffzero width", "x" * 2 + "🙂" * 20]
PRECISIONS = ("fp32", "int8", "int4", "fp16", "optimum-fp32")  # names in support/shipped.py


@pytest.fixture(scope="module")
def bundles(shipped_bundles) -> dict:
    """The shipped bundles of the trained fixture, of both graphs (Optimum's: a growing past)."""
    return {name: shipped_bundles[name] for name in PRECISIONS}


def until_eos(tokens: list[int], eos: int) -> list[int]:
    """The tokens up to the first end of text (which either runtime may or may not keep)."""
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def genai_greedy(model: Any, prompts: list[list[int]], pad_id: int) -> list[list[int]]:
    """onnxruntime-genai's greedy continuation of ``prompts``, run as one right-padded batch."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad_id, dtype=np.int32)  # (B, T)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=width + NEW_TOKENS, do_sample=False, batch_size=len(prompts)
    )
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    out: list[list[int]] = [[] for _ in prompts]
    while not generator.is_done():
        generator.generate_next_token()
        for row, token in enumerate(generator.get_next_tokens()):
            out[row].append(int(token))
    return out


@pytest.mark.export
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_genai_gives_our_greedy_tokens(bundles: dict, precision: str) -> None:
    """Each prompt alone, then all prompts as one batch: genai's tokens are ours."""
    folder = bundles[precision]
    ours = load(folder, provider="cpu")
    model = og.Model(str(folder))
    eos, pad = ours.eos_id, ours.pad_id
    ids = [ours.tokenizer.encode(p).tolist() for p in PROMPTS]
    expected = [
        until_eos(list(ours.generate(p, max_new_tokens=NEW_TOKENS, temperature=0).tokens), eos)
        for p in PROMPTS
    ]
    assert sum(len(e) for e in expected) > NEW_TOKENS  # not all stopped at once: a real check
    alone = [until_eos(genai_greedy(model, [p], pad)[0], eos) for p in ids]
    assert alone == expected
    # A prompt that ends in the pad token would read as padding to genai, so none does here.
    batch = [until_eos(row, eos) for row in genai_greedy(model, ids, pad)]
    assert batch == expected


@pytest.mark.export
@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_genai_tokenizer_reads_ours(bundles: dict, text: str) -> None:
    """genai's tokenizer (onnxruntime-extensions) reads tokenizer.json to our ids, and decodes
    them to our text. Decoding differs only with special tokens: genai leaves them out (and
    turns a lone ``<|endoftext|>`` into U+FFFD), ours keeps them."""
    folder = bundles["fp32"]
    generator = load(folder, provider="cpu")
    ours = generator.tokenizer
    theirs = og.Tokenizer(og.Model(str(folder)))
    ids = ours.encode(text).tolist()
    assert theirs.encode(text).tolist() == ids
    if generator.eos_id not in ids:  # <|endoftext|>, GPT-2's one special token
        assert theirs.decode(np.array(ids, dtype=np.int32)) == ours.decode(ids) == text


@pytest.mark.export
def test_genai_needs_the_tokenizer_config(bundles: dict, tmp_path: Path) -> None:
    """Without tokenizer_config.json genai's tokenizer does not load: the file is not decoration."""
    folder = bundles["fp32"]
    for path in folder.iterdir():
        if path.name != "tokenizer_config.json":
            (tmp_path / path.name).symlink_to(path)
    model = og.Model(str(tmp_path))  # the graph and genai_config.json load
    with pytest.raises(Exception, match="tokenizer_config.json"):
        og.Tokenizer(model)


@pytest.mark.export
def test_genai_files_are_listed_and_hashed(bundles: dict, tmp_path: Path) -> None:
    """The manifest lists both genai files with their hashes, like the model and tokenizer."""
    for folder in bundles.values():
        files = json.loads((folder / "bundle.json").read_text())["files"]
        assert {"genai_config.json", "tokenizer_config.json"} <= set(files)
    folder = Path(shutil.copytree(bundles["int8"], tmp_path / "int8"))  # shared: edit a copy
    load_bundle(folder, check_hashes=True)
    config = folder / "genai_config.json"
    config.write_text(config.read_text().replace('"do_sample": false', '"do_sample": true'))
    with pytest.raises(EdgeError, match="genai_config.json"):
        load_bundle(folder, check_hashes=True)


@pytest.mark.export
def test_genai_config_describes_the_bundle(bundles: dict) -> None:
    """Sizes, ids and names are the manifest's; genai's strict parser took the rest above."""
    for name, folder in bundles.items():
        manifest = load_bundle(folder).manifest
        config = json.loads((folder / "genai_config.json").read_text())
        model, arch, io = config["model"], manifest.architecture, manifest.io
        assert model["type"] == "decoder"
        assert (model["context_length"], model["vocab_size"]) == (
            arch.context_length,
            arch.vocab_size,
        )
        decoder = model["decoder"]
        assert (decoder["num_hidden_layers"], decoder["head_size"]) == (arch.layers, arch.head_size)
        assert decoder["num_attention_heads"] == decoder["num_key_value_heads"] == arch.heads
        assert decoder["inputs"]["past_key_names"] == io["past_key"]
        assert decoder["outputs"]["present_value_names"] == io["present_value"]
        assert model["eos_token_id"] == manifest.special_tokens["eos"], name
        assert config["search"] == {
            "max_length": arch.context_length,
            "past_present_share_buffer": not name.startswith("optimum"),
            "do_sample": False,
        }
        tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
        assert tokenizer["tokenizer_class"] == "GPT2Tokenizer"
        assert tokenizer["add_bos_token"] is False and tokenizer["eos_token"] == "<|endoftext|>"


def manifest_for(graph_kind: str, generation: dict[str, Any]) -> Manifest:
    arch = Architecture(
        layers=2, heads=4, head_size=32, hidden_size=128, context_length=64, vocab_size=100
    )
    return Manifest(
        name="m",
        architecture=arch,
        special_tokens={"bos": 7, "eos": 7, "pad": None},
        generation=generation,
        graph={"kind": graph_kind},
    )


@pytest.mark.parametrize(
    ("kind", "generation", "search"),
    [
        ("fused-gqa", {"temperature": 0.0},
         {"past_present_share_buffer": True, "do_sample": False}),
        ("optimum", {}, {"past_present_share_buffer": False, "do_sample": True, "temperature": 1.0,
                         "top_k": 0, "top_p": 1.0}),
        ("", {"temperature": 0.7, "top_k": 40, "min_p": 0.1, "max_new_tokens": 9},
         {"past_present_share_buffer": False, "do_sample": True, "temperature": 0.7, "top_k": 40,
          "top_p": 1.0}),
        ("fused-gqa", {"temperature": 0.0, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3},
         {"past_present_share_buffer": True, "do_sample": False, "repetition_penalty": 1.3,
          "no_repeat_ngram_size": 3}),
    ],
)  # fmt: skip
def test_search_options(kind: str, generation: dict, search: dict) -> None:
    """Greedy stays greedy; sampling writes our defaults where genai's differ (its top_k is 50);
    keys genai lacks (min_p, max_new_tokens) are left out rather than break its strict parser;
    only the fused graph shares past and present."""
    from gpt2_edge.exporter.writing.genai_config import genai_config

    config = genai_config(manifest_for(kind, generation))
    assert config["search"] == {"max_length": 64, **search}
    assert "pad_token_id" not in config["model"]  # a missing id is left out, not written as null


@pytest.mark.export
def test_logits_index_default_is_every_position(bundles: dict) -> None:
    """Unfed, the fused graph's logits_index asks for every position (genai's case); fed, the
    rows' own positions, as before; and our runtime still feeds it (K = 1 when generating)."""
    import onnxruntime as ort

    folder = bundles["fp32"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(folder / "model.onnx"), options)
    assert "logits_index" not in {i.name for i in session.get_inputs()}
    assert "logits_index" in {i.name for i in session.get_overridable_initializers()}
    ids = np.array([[464, 2106, 286, 262, 1748], [818, 6303, 837, 50256, 50256]], dtype=np.int64)
    lengths = np.array([5, 3])
    mask = (np.arange(5) < lengths[:, None]).astype(np.int64)
    feeds = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": np.tile(np.arange(5), (2, 1)),
    }
    for i in session.get_inputs():
        if i.name.startswith("past"):
            feeds[i.name] = np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32)
    every = session.run(["logits"], feeds)[0]  # (B, S, V)
    assert every.shape == (2, 5, 50257)
    last = session.run(["logits"], {**feeds, "logits_index": (lengths - 1)[:, None]})[0]
    assert last.shape == (2, 1, 50257)
    np.testing.assert_allclose(last[:, 0], every[[0, 1], lengths - 1], atol=1e-5)
    picked = session.run(["logits"], {**feeds, "logits_index": np.array([[4, 0], [0, 2]])})[0]
    np.testing.assert_allclose(picked, every[[[0], [1]], [[4, 0], [0, 2]]], atol=1e-5)
    assert load(folder, provider="cpu").session.names.logits_index == "logits_index"
