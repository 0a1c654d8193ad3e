"""``gpt2-generate``'s decoding flags on a real (tiny, torch-free) fused bundle, and hostile
values for every new setting through the CLI and the Python API: one sentence each, nothing run.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from gpt2_edge.runtime import EdgeError, Generator, Tokenizer
from gpt2_edge.runtime.cli import generate as cli
from support.fakes import FakeSession
from support.fused_bundle import build_fused_bundle
from support.sentences import assert_one_line, no_numpy_warnings
from typer.testing import CliRunner, Result

runner = CliRunner()
SINGLE_KEYS = {"text", "tokens", "finish_reason", "prompt_tokens", "timings"}


@pytest.fixture(scope="module")
def bundle(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("building the fused graph needs onnx")
    tokenizer = gpt2_tokenizer_dir / "tokenizer.json"
    return build_fused_bundle(tmp_path_factory.mktemp("cli") / "tiny", tokenizer)


def run(bundle: Path, *args: str) -> Result:
    return runner.invoke(cli.app, ["Hello world", "--model", str(bundle), *args])


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_readme_sampling_example_counts_max_length_like_transformers(bundle: Path) -> None:
    args = ["--temperature", "1", "--top-k", "50", "--top-p", "0.95", "--max-length", "100"]
    first = as_json(run(bundle, *args, "--seed", "42", "--json"))
    assert first["prompt_tokens"] + len(first["tokens"]) == 100 or first["finish_reason"] == "eos"
    again = as_json(run(bundle, *args, "--seed", "42", "--json"))
    assert (again["tokens"], again["text"]) == (first["tokens"], first["text"])
    assert as_json(run(bundle, *args, "--seed", "43", "--json"))["tokens"] != first["tokens"]
    streamed = run(bundle, *args, "--seed", "42")
    assert streamed.exit_code == 0 and streamed.stdout == first["text"] + "\n"


def test_one_sequence_keeps_its_json_shape(bundle: Path) -> None:
    assert set(as_json(run(bundle, "--max-new-tokens", "3", "--json"))) == SINGLE_KEYS
    beam = as_json(run(bundle, "--max-new-tokens", "3", "--num-beams", "3", "--json"))
    assert set(beam) == SINGLE_KEYS | {"score"}
    drafted = as_json(run(bundle, "--max-new-tokens", "8", "--draft", "prompt-lookup", "--json"))
    assert drafted["tokens"] == as_json(run(bundle, "--max-new-tokens", "8", "--json"))["tokens"]


def test_several_sequences_print_choices(bundle: Path) -> None:
    beams = as_json(
        run(bundle, "--max-new-tokens", "4", "--num-beams", "4", "--num-return-sequences", "3",
            "--length-penalty", "0.5", "--early-stopping", "never", "--json")
    )  # fmt: skip
    assert [c["index"] for c in beams["choices"]] == [0, 1, 2]
    scores = [c["score"] for c in beams["choices"]]
    assert scores == sorted(scores, reverse=True)
    samples = as_json(
        run(bundle, "--max-new-tokens", "4", "--temperature", "1", "--seed", "1",
            "--num-return-sequences", "2", "--json")
    )  # fmt: skip
    assert len(samples["choices"]) == 2 and set(samples["choices"][0]) == SINGLE_KEYS | {"index"}
    text = run(bundle, "--max-new-tokens", "4", "--temperature", "1", "--seed", "1",
               "--num-return-sequences", "2")  # fmt: skip
    assert text.stdout == "\n\n".join(c["text"] for c in samples["choices"]) + "\n"


def test_logprobs_in_the_json(bundle: Path) -> None:
    data = as_json(run(bundle, "--max-new-tokens", "3", "--logprobs", "2", "--json"))
    assert [entry["token"] for entry in data["logprobs"]] == data["tokens"]
    for entry in data["logprobs"]:
        assert len(entry["top_logprobs"]) == 2 and entry["logprob"] <= 0.0
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][1]["logprob"]


CLI_ERRORS = [
    (["--logprobs", "2"], "add --json"),
    (["--early-stopping", "maybe", "--num-beams", "2"], "--early-stopping must be true, false"),
    (["--num-beams", "0"], "num_beams must be an integer from 1 to 64"),
    (["--num-beams", "65"], "num_beams must be an integer from 1 to 64"),
    (["--num-return-sequences", "2", "--temperature", "0"], "Greedy decoding gives one sequence"),
    (["--num-return-sequences", "3", "--num-beams", "2"], "cannot exceed num_beams"),
    (["--max-length", "1"], "max_length must be an integer >= 2"),
    (["--max-length", "9", "--max-new-tokens", "3"], "not both"),
    (["--max-length", "2"], "leaves no room"),
    (["--draft", "medusa"], "draft must be 'prompt-lookup' (or not given)"),
    (["--logprobs", "21", "--json"], "logprobs must be an integer from 0 to 20 (or not given)"),
    (["--logprobs", "-1", "--json"], "logprobs must be an integer from 0 to 20 (or not given)"),
    (["--length-penalty", "nan", "--num-beams", "2"], "length_penalty must be a number from -1"),
    (["--length-penalty", "inf", "--num-beams", "2"], "length_penalty must be a number from -1"),
    (["--num-beams", "2", "--stop", "x"], "Stop strings do not work with beam search"),
    (["--num-beams", "2", "--draft", "prompt-lookup"], "Drafting does not work with beam"),
    (["--num-beams", "2", "--temperature", "0.5"], "temperature has no effect with beam search"),
]


@no_numpy_warnings
@pytest.mark.parametrize(("args", "fragment"), CLI_ERRORS, ids=[" ".join(a) for a, _ in CLI_ERRORS])
def test_cli_refuses_bad_decoding_flags(bundle: Path, args: list[str], fragment: str) -> None:
    assert_one_line(run(bundle, *args), 1, fragment)


@pytest.fixture(scope="module")
def fake(gpt2_tokenizer_dir: Path) -> Generator:
    tokenizer = Tokenizer(gpt2_tokenizer_dir / "tokenizer.json")
    return Generator(FakeSession(context=64), tokenizer)  # type: ignore[arg-type]


API_ERRORS = [
    (lambda g: g.generate("x", num_return_sequences=2, temperature=1), "use generate_batch()"),
    (lambda g: g.stream("x", num_return_sequences=2, temperature=1), "use generate_batch()"),
    (lambda g: g.generate(["x"]), "generate() takes one prompt string, got list"),
    (lambda g: g.generate_batch("abc"), "non-empty list of strings, got str"),
    (lambda g: g.stream("x", num_beams=2), "Beam search returns whole sequences only"),
    (lambda g: g.stream_events(["x"], num_beams=2), "Beam search returns whole sequences only"),
    (lambda g: g.generate("x", num_beams=True), "num_beams must be an integer"),
    (lambda g: g.generate("x", num_beams="2"), "num_beams must be an integer"),
    (lambda g: g.generate("x", num_beams=1.5), "num_beams must be an integer"),
    (lambda g: g.generate("x", num_beams=2, early_stopping=1), "early_stopping must be True"),
    (lambda g: g.generate("x", num_beams=2, early_stopping="always"), "early_stopping must be"),
    (lambda g: g.generate("x", num_beams=2, length_penalty="1"), "length_penalty must be"),
    (
        lambda g: g.generate("x", logprobs=True),
        "logprobs must be an integer from 0 to 20 (or not given)",
    ),
    (
        lambda g: g.generate("x", logprobs=2.0),
        "logprobs must be an integer from 0 to 20 (or not given)",
    ),
    (lambda g: g.generate("x", draft=1), "draft must be 'prompt-lookup' (or not given)"),
    (
        lambda g: g.generate("x", draft="Prompt-Lookup"),
        "draft must be 'prompt-lookup' (or not given)",
    ),
    (lambda g: g.generate("x", max_length=2.0), "max_length must be an integer >= 2"),
    (lambda g: g.generate("x", max_length="10"), "max_length must be an integer >= 2"),
    (lambda g: g.generate("x " * 20, max_length=5), "leaves no room"),
    (lambda g: g.generate_batch(["x"], num_return_sequences=0), "num_return_sequences must be"),
    (lambda g: g.score(""), "Nothing to score"),
    (lambda g: g.score(5), "The text to score must be a string, got int"),
    (lambda g: g.score("x", context=b"y"), "The context to score must be a string, got bytes"),
    (lambda g: g.score_batch(["x", None]), "item 1 is a NoneType"),
    (lambda g: g.score_batch(["a"], ["b", "c"]), "Got 1 texts but 2 contexts"),
    (
        lambda g: g.score("x", logprobs=21),
        "logprobs must be an integer from 0 to 20 (or not given)",
    ),
    (lambda g: g.score("word " * 80), "score a shorter text"),
]


@no_numpy_warnings
@pytest.mark.parametrize(("call", "fragment"), API_ERRORS)
def test_api_refuses_bad_decoding_settings(fake: Generator, call: Any, fragment: str) -> None:
    fake.session.calls = []  # type: ignore[attr-defined]
    with pytest.raises(EdgeError) as info:
        call(fake)
    assert fragment in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert fake.session.calls == []  # type: ignore[attr-defined]  # nothing ran


def test_no_greedy_samples_and_no_temperature_with_beams() -> None:
    """The same rules hold for a bundle's defaults: they are checked together on load."""
    from gpt2_edge.runtime.settings.resolve import resolve_settings

    sampling, options = resolve_settings({"temperature": 0.7}, num_beams=3)
    assert options.num_beams == 3 and sampling.temperature == 0.7  # unused by beam search
    _, options = resolve_settings({"max_new_tokens": 9}, max_length=30)
    assert options.budget(10) == 20  # the caller's max_length replaces the bundle's budget
    _, options = resolve_settings({"max_new_tokens": 9, "max_length": 30})
    assert options.budget(10) == 9  # the bundle's own max_new_tokens wins, as in transformers
    _, options = resolve_settings({"max_length": 30}, max_new_tokens=4)
    assert options.budget(10) == 4


# --- A setting the decoding mode ignores is refused, unless the bundle's defaults gave it --------

UNUSED = [
    ({"num_beams": 2, "top_p": 0.5}, "top_p has no effect with beam search (num_beams 2)"),
    ({"num_beams": 2, "top_k": 5}, "top_k has no effect with beam search"),
    ({"num_beams": 2, "min_p": 0.1}, "min_p has no effect with beam search"),
    ({"num_beams": 2, "temperature": 0.8}, "temperature has no effect with beam search"),
    ({"num_beams": 2, "temperature": 1}, "temperature has no effect with beam search"),
    ({"temperature": 0, "top_p": 0.5}, "top_p has no effect with greedy decoding (temperature 0);"),
    ({"temperature": 0, "top_k": 5}, "top_k has no effect with greedy decoding"),
    ({"temperature": 0, "min_p": 0.1}, "min_p has no effect with greedy decoding"),
    ({"early_stopping": True}, "early_stopping has no effect without beam search"),
    ({"early_stopping": "never"}, "early_stopping has no effect without beam search"),
    ({"length_penalty": 2.0, "temperature": 0}, "length_penalty has no effect without beam"),
]


@pytest.mark.parametrize(("settings", "fragment"), UNUSED)
def test_api_refuses_a_setting_its_mode_ignores(
    fake: Generator, settings: dict[str, Any], fragment: str
) -> None:
    fake.session.calls = []  # type: ignore[attr-defined]
    for call in (fake.generate_batch, fake.stream_events):
        if call is fake.stream_events and "num_beams" in settings:
            continue  # refused for streaming anyway
        with pytest.raises(EdgeError) as info:
            call(["x"], max_new_tokens=2, **settings)
        assert fragment in str(info.value) and str(info.value).endswith("."), str(info.value)
    assert fake.session.calls == []  # type: ignore[attr-defined]


# Settings at the values that turn them off, or that cannot change a deterministic mode, beside
# the settings they must decode exactly as; and filters that take effect: on the fake model's
# one-hot logits, min_p 0.1 leaves only the argmax (it has 2.4% of the probability at temperature
# 0.7, every other token 0.002%), so the sample is the greedy text.
SAME_AS = [
    ({"temperature": 0, "top_p": 1.0, "top_k": 0, "min_p": 0.0}, {"temperature": 0}),
    ({"num_beams": 2, "temperature": 0, "top_p": 1, "early_stopping": True},
     {"num_beams": 2, "early_stopping": True}),
    ({"early_stopping": False, "length_penalty": 1.0, "temperature": 0.7, "seed": 1},
     {"temperature": 0.7, "seed": 1}),
    ({"temperature": 0.7, "top_p": 0.5, "top_k": 5, "min_p": 0.1, "seed": 1}, {"temperature": 0}),
    ({"temperature": 0, "seed": 3}, {"temperature": 0}),  # a seed cannot mislead greedy
    ({"num_beams": 2, "seed": 1}, {"num_beams": 2}),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "same_as"), SAME_AS, ids=[repr(s) for s, _ in SAME_AS])
def test_settings_that_take_effect_or_turn_off_pass(
    fake: Generator, settings: dict, same_as: dict
) -> None:
    got = fake.generate_batch(["x", "the city"], max_new_tokens=8, **settings)
    want = fake.generate_batch(["x", "the city"], max_new_tokens=8, **same_as)
    assert [(r.tokens, r.text, r.finish_reason) for r in got] == [
        (r.tokens, r.text, r.finish_reason) for r in want
    ]
    assert all(len(r.tokens) == 8 for r in got)


def test_without_min_p_the_same_sample_is_not_greedy(fake: Generator) -> None:
    """The other side of the min_p case above: without it the argmax keeps 2.4% of the
    probability, so the seeded sample departs from greedy; min_p 0.1 is what took effect."""
    settings = {"temperature": 0.7, "top_p": 0.5, "top_k": 5, "seed": 1}
    sampled = fake.generate("x", max_new_tokens=8, **settings).tokens
    assert sampled != fake.generate("x", max_new_tokens=8, temperature=0).tokens


def test_the_bundles_defaults_are_never_refused(gpt2_tokenizer_dir: Path) -> None:
    session = FakeSession(context=64)
    defaults = {"temperature": 0.0, "top_k": 50, "top_p": 0.9, "seed": 3, "early_stopping": True}
    session.bundle.manifest.generation.update(defaults)
    gen = Generator(session, Tokenizer(gpt2_tokenizer_dir / "tokenizer.json"))  # type: ignore[arg-type]
    assert gen.generate("x", max_new_tokens=2).finish_reason == "length"
    assert gen.generate("x", max_new_tokens=2, num_beams=2).finish_reason == "length"
    assert gen.generate("x", max_new_tokens=2, temperature=0.5).finish_reason == "length"
    with pytest.raises(
        EdgeError,
        match=r"top_p has no effect with greedy decoding \(temperature 0, "
        r"the bundle's default\); sample with a temperature > 0, or leave top_p out",
    ):
        gen.generate("x", top_p=0.5)


def test_the_server_path_keeps_openais_convention() -> None:
    """``resolve_settings`` (what serve/ calls) accepts top_p and seed with temperature 0, as
    OpenAI's API does; only ``gpt2-generate`` and the Python API refuse them."""
    from gpt2_edge.runtime.settings.resolve import resolve_settings, resolve_user_settings

    settings = {"temperature": 0, "top_p": 0.5, "seed": 1}
    sampling, _ = resolve_settings({"temperature": 0.7}, **settings)
    assert sampling.greedy and sampling.top_p == 0.5
    with pytest.raises(EdgeError, match="top_p has no effect with greedy decoding"):
        resolve_user_settings({"temperature": 0.7}, **settings)


CLI_UNUSED = [
    (["--num-beams", "2", "--top-p", "0.5"], "top_p has no effect with beam search"),
    (["--num-beams", "2", "--min-p", "0.5"], "min_p has no effect with beam search"),
    (["--temperature", "0", "--top-k", "5"], "top_k has no effect with greedy decoding"),
    (["--top-p", "0.5"], "top_p has no effect with greedy decoding (temperature 0, the bundle's"),
    (["--early-stopping", "true"], "early_stopping has no effect without beam search"),
    (["--length-penalty", "0.5"], "length_penalty has no effect without beam search"),
]


@no_numpy_warnings
@pytest.mark.parametrize(("args", "fragment"), CLI_UNUSED, ids=[" ".join(a) for a, _ in CLI_UNUSED])
def test_cli_refuses_a_flag_its_mode_ignores(bundle: Path, args: list[str], fragment: str) -> None:
    """The fused test bundle's defaults are greedy (temperature 0), as the shipped ones."""
    assert_one_line(run(bundle, "--max-new-tokens", "2", *args), 1, fragment)
    assert_one_line(run(bundle, "--max-new-tokens", "2", "--json", *args), 1, fragment)


def test_cli_takes_flags_that_turn_off(bundle: Path) -> None:
    """Flags at their off values are taken, and decode exactly as without them."""
    plain = as_json(run(bundle, "--max-new-tokens", "6", "--json"))
    args = ["--max-new-tokens", "6", "--top-p", "1", "--early-stopping", "false", "--json"]
    assert as_json(run(bundle, *args)) | {"timings": None} == plain | {"timings": None}
    beams = ["--max-new-tokens", "6", "--num-beams", "2", "--temperature", "0", "--json"]
    got = as_json(run(bundle, *beams, "--length-penalty", "1", "--top-k", "0"))
    want = as_json(run(bundle, "--max-new-tokens", "6", "--num-beams", "2", "--json"))
    assert {k: got[k] for k in ("tokens", "text", "score")} == {
        k: want[k] for k in ("tokens", "text", "score")
    }
