"""Hostile input to the runtime's commands and Python API: every case ends in one sentence (or a
clean result), the right exit code, no traceback and no numpy RuntimeWarning.

The model is the fake session of ``support/fakes.py`` (no torch); one test at the end runs a real
tiny export through ``python -m gpt2_edge.runtime`` (export extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime import EdgeError, GenerationOptions, Generator, Tokenizer, load
from gpt2_edge.runtime.cli import evaluate as eval_cli
from gpt2_edge.runtime.cli import generate as cli
from gpt2_edge.runtime.cli.errors import package_version
from gpt2_edge.runtime.sampling.filters import apply_temperature
from gpt2_edge.runtime.sampling.sampler import Sampler
from gpt2_edge.runtime.settings.sampling import SamplingSettings
from gpt2_edge.runtime.settings.threads import available_cpus
from support.fakes import EOS, FakeSession, patch_cli_load
from support.sentences import assert_one_line, no_numpy_warnings
from typer.testing import CliRunner, Result

runner = CliRunner()
EMPTY = np.array([], dtype=np.int64)


@pytest.fixture(scope="module")
def tokenizer(gpt2_tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer(gpt2_tokenizer_dir / "tokenizer.json")


def fake(tokenizer: Tokenizer, **kwargs: Any) -> Generator:
    return Generator(FakeSession(**kwargs), tokenizer)  # type: ignore[arg-type]


# --- Sampling numerics ---------------------------------------------------------------------------

PEAKED = np.array([[1.0, 2.0, 2.0, -3.0, -np.inf], [-1e30, -3e38, 3e38, 3.3e38, 0.0]], np.float32)
PEAKED_BEST = [{1, 2}, {3}]  # the argmax (ties included) of each row


@no_numpy_warnings
@pytest.mark.parametrize("temperature", [1e-40, 1e-46, 5e-324, 1e-30, 1e-7])
@pytest.mark.parametrize("filters", [{}, {"top_p": 0.9}, {"top_k": 2, "min_p": 0.1}])
def test_tiny_temperature_samples_the_argmax(temperature: float, filters: dict) -> None:
    sampler = Sampler(SamplingSettings(temperature=temperature, seed=0, **filters))
    for _ in range(30):
        tokens = sampler(PEAKED, [EMPTY, EMPTY], [EMPTY, EMPTY]).tolist()
        assert tokens[0] in PEAKED_BEST[0] and tokens[1] in PEAKED_BEST[1]


@no_numpy_warnings
@pytest.mark.parametrize("temperature", [1e38, 1e300])
def test_huge_temperature_is_uniform_over_allowed_tokens(temperature: float) -> None:
    sampler = Sampler(SamplingSettings(temperature=temperature, seed=0))
    tokens = sampler(np.repeat(PEAKED[:1], 4000, axis=0), [EMPTY] * 4000, [EMPTY] * 4000)
    counts = np.bincount(tokens, minlength=5)
    assert counts[4] == 0  # -inf stays impossible
    assert counts[:4].min() > 800  # ~1000 each


@no_numpy_warnings
def test_tiny_temperature_keeps_softmax_semantics() -> None:
    out = apply_temperature(PEAKED, 1e-40)
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out[0, [1, 2]], [0.0, 0.0])  # the top tokens, shifted to 0
    assert np.all(out[0, [0, 3, 4]] == -np.inf)
    dead = apply_temperature(np.full((1, 3), -np.inf, np.float32), 1e-40)
    assert np.all(dead == -np.inf)  # a row with nothing allowed stays so
    x = np.array([[0.5, -1.0, 2.0]], np.float32)  # where nothing overflows: a plain division
    np.testing.assert_array_equal(apply_temperature(x, 0.25), x / np.float32(0.25))


@no_numpy_warnings
@pytest.mark.parametrize("penalty", [5e-324, 1e-300, 1e300])
@pytest.mark.parametrize("temperature", [0.0, 1.0, 1e-40])
def test_extreme_repetition_penalty_stays_finite(penalty: float, temperature: float) -> None:
    sampler = Sampler(SamplingSettings(repetition_penalty=penalty, temperature=temperature, seed=1))
    history = [np.array([1, 3]), np.array([3, 0])]
    processed = sampler.process(PEAKED, history, [EMPTY, EMPTY])
    assert not np.isnan(processed).any() and not np.isposinf(processed).any()
    tokens = sampler(PEAKED, history, [EMPTY, EMPTY])
    assert np.all(np.isfinite(PEAKED[[0, 1], tokens]))  # never a forbidden token


@no_numpy_warnings
def test_tiny_temperature_through_the_generator(tokenizer: Tokenizer) -> None:
    gen = fake(tokenizer)
    greedy = gen.generate("Hello", max_new_tokens=6, temperature=0).tokens
    assert gen.generate("Hello", max_new_tokens=6, temperature=1e-40, seed=3).tokens == greedy


# --- Huge prompts: refused or cut before tokenizing -----------------------------------------------


class CountingTokenizer(Tokenizer):
    """Records the length of every text it tokenizes."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.lengths: list[int] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> np.ndarray:
        self.lengths.append(len(text))
        return super().encode(text, add_special_tokens)


@pytest.fixture()
def counting(gpt2_tokenizer_dir: Path) -> CountingTokenizer:
    return CountingTokenizer(gpt2_tokenizer_dir / "tokenizer.json")


HUGE = "All work and no play makes Jack a dull boy. " * 250_000  # 11 MB


@no_numpy_warnings
def test_huge_prompt_is_refused_without_tokenizing(counting: CountingTokenizer) -> None:
    gen = Generator(FakeSession(), counting)  # type: ignore[arg-type]
    start = time.perf_counter()
    with pytest.raises(EdgeError, match=r"11,000,000 characters long.*context of 64 tokens"):
        gen.generate(HUGE, max_new_tokens=3)
    assert counting.lengths == [] and time.perf_counter() - start < 2.0


@no_numpy_warnings
def test_huge_prompt_with_truncation_tokenizes_only_its_tail(counting: CountingTokenizer) -> None:
    gen = Generator(FakeSession(), counting)  # type: ignore[arg-type]
    result = gen.generate(HUGE, max_new_tokens=3, truncate="left")
    assert (result.prompt_tokens, result.finish_reason, len(result.tokens)) == (61, "length", 3)
    assert max(counting.lengths) <= gen.max_prompt_chars + 1024  # the tail, at most a word longer


TAILS = {
    "words": "The quick brown fox, jumping over 12 lazy dogs!\n\n  Then it rested. " * 200,
    "unicode": "naïve café 😀🎉 日本語のテキスト 👨‍👩‍👧 中文\t<|endoftext|> end. " * 300,
    "spaces": ("word " + " " * 37 + "\n") * 400,
}


@pytest.mark.parametrize("name", sorted(TAILS))
def test_tail_tokens_equal_the_whole_texts_last_tokens(tokenizer: Tokenizer, name: str) -> None:
    text = TAILS[name]
    gen = fake(tokenizer)
    assert gen.max_prompt_chars is not None and len(text) > gen.max_prompt_chars
    options = GenerationOptions(max_new_tokens=1, truncate="left")
    whole = tokenizer.encode(text)
    assert gen.prompt_ids(text, options).tolist() == whole[-63:].tolist()


def test_a_prompt_at_the_character_bound_is_still_tokenized(tokenizer: Tokenizer) -> None:
    gen = fake(tokenizer)
    limit = gen.max_prompt_chars
    assert limit == 64 * 128  # GPT-2's longest token is 128 bytes
    with pytest.raises(EdgeError, match="tokens long but the model's context is 64"):
        gen.generate("a " * (limit // 2), max_new_tokens=1)


# --- truncate="left" leaves room for max_new_tokens ---------------------------------------------


@pytest.mark.parametrize(
    ("words", "budget", "kept", "reason", "new"),
    [
        (10, 3, 10, "length", 3),  # prompt and budget fit: nothing is cut
        (10, 6, 10, "length", 6),  # they fill the context exactly
        (10, 7, 9, "length", 7),  # the oldest prompt token makes room for the budget
        (15, 5, 11, "length", 5),
        (40, 5, 11, "length", 5),  # too long for the context as well
        (40, 15, 1, "length", 15),  # the most new tokens a context of 16 leaves room for
    ],
)
def test_left_truncation_leaves_room_for_max_new_tokens(
    tokenizer: Tokenizer, words: int, budget: int, kept: int, reason: str, new: int
) -> None:
    gen = fake(tokenizer, context=16)
    prompt = " ".join(["word"] * words)
    assert gen.encode(prompt).size == words
    result = gen.generate(prompt, max_new_tokens=budget, truncate="left", temperature=0)
    assert (result.prompt_tokens, result.finish_reason, len(result.tokens)) == (kept, reason, new)
    assert (
        gen.encode(prompt)[words - kept :].tolist()
        == gen.prompt_ids(
            prompt, GenerationOptions(max_new_tokens=budget, truncate="left")
        ).tolist()
    )  # the last tokens are kept


def test_without_truncation_a_prompt_that_fits_is_never_cut(tokenizer: Tokenizer) -> None:
    prompt = " ".join(["word"] * 10)
    result = fake(tokenizer, context=16).generate(prompt, max_new_tokens=50, temperature=0)
    assert (result.prompt_tokens, result.finish_reason, len(result.tokens)) == (10, "context", 6)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"max_new_tokens": 16}, "max_new_tokens must be below the model's context of 16"),
        ({"max_new_tokens": 10**9}, "got 1000000000"),
        ({"max_length": 12}, "Left truncation needs max_new_tokens"),
    ],
)
def test_left_truncation_without_room_is_refused(
    tokenizer: Tokenizer, settings: dict[str, Any], fragment: str
) -> None:
    gen = fake(tokenizer, context=16)
    with pytest.raises(EdgeError, match=fragment):
        gen.generate("word", truncate="left", **settings)  # even a short prompt: no room is kept
    assert gen.session.calls == []  # type: ignore[attr-defined]


def test_left_truncation_through_the_cli_generates_max_new_tokens(
    monkeypatch: pytest.MonkeyPatch, tokenizer: Tokenizer
) -> None:
    patch_cli_load(monkeypatch, cli, lambda: fake(tokenizer, context=64))
    args = ["-", "--model", "m", "--truncate", "left", "--max-new-tokens", "50", "--json"]
    result = runner.invoke(cli.app, args, input="word " * 1500)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["prompt_tokens"], len(data["tokens"]), data["finish_reason"]) == (14, 50, "length")
    refused = runner.invoke(cli.app, [*args[:6], "64"], input="word")
    assert_one_line(refused, 1, "max_new_tokens must be below the model's context of 64")


# --- Wrong types in the Python API: sentences, not TypeErrors ------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"path": 5}, "path must be a folder path"),
        ({"path": b"models/x"}, "path must be a folder path"),
        ({"provider": 5}, "Unknown provider 5"),
        ({"provider": "tpu"}, "Unknown provider 'tpu'"),
        ({"threads": "2"}, "threads must be an integer"),
        ({"threads": 2.5}, "threads must be an integer"),
        ({"threads": True}, "threads must be an integer"),
        ({"threads": 0}, "threads must be from 1"),
        ({"threads": -3}, "threads must be from 1"),
        ({"threads": 10_000}, "(the CPUs this process may use), got 10000"),
        ({"check_hashes": "yes"}, "check_hashes must be True or False"),
    ],
)
def test_load_checks_its_arguments_first(
    tmp_path: Path, kwargs: dict[str, Any], fragment: str
) -> None:
    args = {"path": tmp_path / "absent", **kwargs}
    with pytest.raises(EdgeError) as info:
        load(**args)
    assert fragment in str(info.value) and "does not exist" not in str(info.value)


@no_numpy_warnings
@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda g: g.generate(b"bytes"), "got bytes"),
        (lambda g: g.generate(5), "got int"),
        (lambda g: g.generate(None), "got NoneType"),
        (lambda g: g.generate_batch([]), "got an empty list"),
        (lambda g: g.generate_batch(["ok", 5]), "item 1 is a int"),
        (lambda g: g.stream(["a", "b"]), "stream() takes one prompt string"),
        (lambda g: g.stream(b"x"), "stream() takes one prompt string"),
        (lambda g: g.stream_events("abc"), "got one string"),
        (lambda g: g.encode(b"x"), "A prompt must be a string"),
        (lambda g: g.generate("x", stop=5), "stop must be a non-empty string"),
        (lambda g: g.generate("x", stop=b"\n"), "stop must be a non-empty string"),
        (lambda g: g.generate("x", stop=["a", None]), "stop must be a non-empty string"),
        (lambda g: g.generate("x", stop={"a"}), "stop must be a non-empty string"),
        (lambda g: g.generate("x", max_new_tokens=2.5), "max_new_tokens must be an integer"),
        (lambda g: g.generate("x", max_new_tokens="3"), "max_new_tokens must be an integer"),
        (lambda g: g.generate("x", ignore_eos="yes"), "ignore_eos must be true or false"),
        (
            lambda g: g.generate("x", truncate=["left"]),
            "truncate must be 'left' (or not given), got ['left']",
        ),
        (lambda g: g.generate("x", temperature="0.5"), "temperature must be"),
        (lambda g: g.generate("x", top_k=2.5), "top_k must be"),
        (lambda g: g.generate("x", seed=-1), "seed must be"),
        (lambda g: g.generate("x", temprature=0.5), "Unknown setting 'temprature'"),
    ],
)
def test_generator_wrong_types_are_sentences(
    tokenizer: Tokenizer, call: Any, fragment: str
) -> None:
    gen = fake(tokenizer)
    with pytest.raises(EdgeError) as info:
        call(gen)
    assert fragment in str(info.value), str(info.value)
    assert gen.session.calls == []  # type: ignore[attr-defined]  # nothing ran


# --- gpt2-generate through CliRunner, with the fake model -----------------------------------------

WORDS = " alpha beta\n\ngamma\tdelta"


@pytest.fixture()
def scripted(monkeypatch: pytest.MonkeyPatch, tokenizer: Tokenizer) -> list[Path]:
    """``cli.load`` returns a fake that generates WORDS (then EOS); records the paths asked."""
    asked: list[Path] = []
    script = dict(enumerate([*tokenizer.encode(WORDS).tolist(), EOS]))

    make = lambda: Generator(FakeSession(script=script), tokenizer)  # type: ignore[arg-type]  # noqa: E731
    patch_cli_load(monkeypatch, cli, make, asked)
    return asked


def generate(args: list[str], stdin: bytes | str | None = None) -> Result:
    return runner.invoke(cli.app, [*args, "--model", "m"], input=stdin)


@pytest.mark.parametrize(
    ("stop", "text"),
    [
        ("\\n\\n", " alpha beta"),
        ("\\t", " alpha beta\n\ngamma"),
        ("a\\u0020b", " alph"),
        ("\\\\n", WORDS),  # a backslash and an n: never generated
        ("beta\\n", " alpha "),
    ],
)
def test_stop_escapes(scripted: list[Path], stop: str, text: str) -> None:
    result = generate(["x", "--stop", stop, "--json", "--temperature", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == text


def test_stop_escape_of_half_a_surrogate_is_refused(scripted: list[Path]) -> None:
    assert_one_line(generate(["x", "--stop", "\\ud800"]), 1, "surrogate")


@pytest.mark.parametrize(
    ("stop", "fragment"),
    [
        ("\\u12", "--stop holds \\u12, an incomplete escape: \\u takes 4 hex digits."),
        ("a\\u12g4", "--stop holds \\u12, an incomplete escape"),
        ("\\user", "--stop holds \\u, an incomplete escape"),
        ("\\d+", "--stop holds \\d, which is no escape; the escapes are \\n, \\t"),
        ("\\x41", "--stop holds \\x, which is no escape"),
        ("end\\", "--stop holds a backslash at its end, which is no escape"),
        ("a\\\nb", "--stop holds a backslash before '\\n', which is no escape"),
    ],
)
def test_stop_with_an_unknown_or_incomplete_escape_is_refused(
    scripted: list[Path], stop: str, fragment: str
) -> None:
    assert_one_line(generate(["x", "--stop", stop]), 1, fragment)
    assert scripted == []  # refused before loading


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--truncate", "right"], "truncate must be 'left' (or not given), got 'right'."),
        (["--draft", "medusa"], "draft must be 'prompt-lookup' (or not given), got 'medusa'."),
        (["--logprobs", "21", "--json"], "logprobs must be an integer from 0 to 20 (or not given)"),
        (["--seed", "-1"], "seed must be an integer >= 0 (or not given), got -1."),
    ],
)
def test_cli_messages_do_not_speak_python(
    scripted: list[Path], args: list[str], fragment: str
) -> None:
    assert "None" not in assert_one_line(generate(["x", *args]), 1, fragment)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"truncate": "right"}, "truncate must be 'left' (or not given)"),
        ({"draft": "medusa"}, "draft must be 'prompt-lookup' (or not given)"),
        ({"logprobs": 21}, "logprobs must be an integer from 0 to 20 (or not given)"),
        ({"seed": -1}, "seed must be an integer >= 0 (or not given)"),
        ({"ignore_eos": "yes"}, "ignore_eos must be true or false"),
    ],
)
def test_api_messages_do_not_speak_python(
    tokenizer: Tokenizer, settings: dict[str, Any], fragment: str
) -> None:
    """The server passes these sentences on as they are, so they must read right for JSON too."""
    with pytest.raises(EdgeError) as info:
        fake(tokenizer).generate("x", **settings)
    assert fragment in str(info.value) and "None" not in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("stdin", "same"),
    [("Hello\n", True), ("Hello\r\n", True), ("Hello", True), ("Hello\n\n", False)],
)
def test_stdin_loses_one_trailing_newline(scripted: list[Path], stdin: str, same: bool) -> None:
    args = ["--json", "--max-new-tokens", "2"]
    piped = json.loads(generate(["-", *args], stdin=stdin.encode()).stdout)
    typed = json.loads(generate(["Hello", *args]).stdout)
    assert (piped["prompt_tokens"] == typed["prompt_tokens"]) == same


def test_huge_stdin_is_refused_in_one_line(scripted: list[Path]) -> None:
    start = time.perf_counter()
    result = generate(["-", "--max-new-tokens", "2"], stdin=HUGE.encode())
    assert_one_line(result, 1, "11,000,000 characters long")
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["x", "--threads", "1000"], 1, f"threads must be from 1 to {available_cpus()}"),
        (["x", "--threads", "0"], 1, "threads must be from 1"),
        (["x", "--threads", "-2"], 1, "threads must be from 1"),
        (["x", "--threads", "2.5"], 2, "'--threads'"),
        (["x", "--threads", "many"], 2, "'--threads'"),
        (["x", "--tempreature", "1"], 2, "No such option: --tempreature"),
        (["x", "--max-new-tokens", "lots"], 2, "'--max-new-tokens'"),
        (["x", "--temperature", "warm"], 2, "'--temperature'"),
        (["x", "y"], 2, "unexpected extra argument"),
        (["x", "--temperature", "nan"], 1, "temperature must be"),
        (["x", "--max-new-tokens", "0"], 1, "max_new_tokens must be"),
        (["x", "--provider", "gpu"], 1, "Unknown provider 'gpu'"),
        (["x", "--stop", ""], 1, "stop must be a non-empty string"),
        (["-", "--interactive"], 1, "cannot be '-' as well"),
        ([], 1, "No prompt given"),
    ],
)
def test_bad_command_lines_are_one_line(
    scripted: list[Path], args: list[str], code: int, fragment: str
) -> None:
    message = assert_one_line(generate(args), code, fragment)
    if code == 2:
        assert "gpt2-generate --help" in message or "--help" in message
    assert scripted == []  # refused before any model was loaded


@pytest.mark.parametrize("app", [cli.app, eval_cli.app], ids=["generate", "eval"])
def test_version(app: Any) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip().endswith(package_version())


def test_eval_usage_errors_and_help(tmp_path: Path) -> None:
    missing = runner.invoke(eval_cli.app, ["--model", "m"])
    assert_one_line(missing, 2, "Missing option '--text'")
    threads = runner.invoke(eval_cli.app, ["--model", "m", "--text", "t", "--threads", "0"])
    assert_one_line(threads, 1, "threads must be from 1")
    shown = runner.invoke(eval_cli.app, ["--help"], env={"COLUMNS": "200"}).stdout
    assert "(default: the model's context)" in shown and "(default: min(512, context))" in shown


# --- Interactive mode -----------------------------------------------------------------------------


class Interrupting(Generator):
    """Raises Ctrl-C in the middle of answering a prompt that contains "boom"."""

    def events(self, prompts, sampling, options):  # noqa: ANN001, ANN201
        for n, event in enumerate(super().events(prompts, sampling, options)):
            if "boom" in prompts[0] and n == 1:
                raise KeyboardInterrupt
            yield event


@pytest.fixture()
def interrupting(monkeypatch: pytest.MonkeyPatch, tokenizer: Tokenizer) -> None:
    make = lambda: Interrupting(FakeSession(), tokenizer)  # type: ignore[arg-type]  # noqa: E731
    patch_cli_load(monkeypatch, cli, make)


@pytest.mark.parametrize(
    ("args", "stdin", "answers", "errors"),
    [
        ([], b"one\n\n   \n\ntwo\n", 2, 0),  # blank lines are skipped
        ([], b"boom\ntwo\n", 2, 0),  # Ctrl-C stops one answer; the loop goes on
        ([], b"one\n\xff\ntwo\n" + b"word " * 80 + b"\n", 2, 2),  # errors are reported
        (["first"], b"two\n", 2, 0),  # a prompt argument is the first turn
        (["first"], b"", 1, 0),
        ([], b"no newline at the end", 1, 0),
    ],
)
def test_interactive_loop(
    interrupting: None, args: list[str], stdin: bytes, answers: int, errors: int
) -> None:
    result = runner.invoke(
        cli.app, [*args, "-i", "--model", "m", "--max-new-tokens", "3"], input=stdin
    )
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert len([line for line in result.stdout.splitlines() if line.strip()]) == answers
    assert result.stderr.count("Error: ") == errors


# --- Which model: names under models/, and a sensible pick among several --------------------------


def make_bundle(folder: Path, dtype: str) -> None:
    folder.mkdir(parents=True)
    (folder / "bundle.json").write_text(json.dumps({"precision": {"dtype": dtype}}))


def test_model_names_and_the_default_pick(
    scripted: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, dtype in [
        ("distilgpt2-int4", "int4"),
        ("gpt2-fp16", "float16"),
        ("gpt2-int8", "int8"),
        ("my-gpt2-checkpoint", "float32"),
    ]:
        make_bundle(tmp_path / "models" / name, dtype)
    args = ["Hi", "--max-new-tokens", "1", "--provider", "cpu"]
    picked = runner.invoke(cli.app, args)
    assert picked.exit_code == 0, picked.output
    assert picked.stderr.startswith("Using models/gpt2-int8 (int8), one of the 4 bundles")
    named = runner.invoke(cli.app, [*args, "--model", "gpt2-fp16"])
    assert named.exit_code == 0 and "Using" not in named.stderr
    assert scripted == [Path("models/gpt2-int8"), Path("models/gpt2-fp16")]


# --- Ctrl-C while the libraries are still importing -----------------------------------------------

INTERRUPT_AT_IMPORT = """
import builtins, signal, sys
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name == {module!r}:
        signal.raise_signal(signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
sys.argv = ["cmd", *{argv!r}]
from gpt2_edge.runtime.{entry} import main
main()
"""


@pytest.mark.parametrize(
    ("entry", "module", "argv"),
    [
        ("cli.generate", "typer", ["hi"]),
        ("cli.generate", "onnxruntime", ["hi"]),
        ("cli.generate", "tokenizers", ["hi"]),
        ("cli.evaluate", "numpy", ["--model", "m", "--text", "t"]),
    ],
)
def test_ctrl_c_during_imports_exits_130_quietly(entry: str, module: str, argv: list[str]) -> None:
    code = INTERRUPT_AT_IMPORT.format(module=module, argv=argv, entry=entry)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


# --- A real bundle, a real process -------------------------------------------------------------


@pytest.mark.export
def test_huge_stdin_through_a_real_bundle(tiny_optimum_export: Path) -> None:
    command = [sys.executable, "-m", "gpt2_edge.runtime", "-", "--model", str(tiny_optimum_export)]
    command += ["--provider", "cpu", "--max-new-tokens", "2", "--json"]
    env = {**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"}
    big = HUGE.encode()
    refused = subprocess.run(command, input=big, capture_output=True, env=env, timeout=120)
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr
    assert refused.stderr.decode().strip().startswith("Error: The prompt is 11,000,000 characters")
    cut = subprocess.run(
        [*command, "--truncate", "left"], input=big, capture_output=True, env=env, timeout=120
    )
    assert cut.returncode == 0, cut.stderr
    result = json.loads(cut.stdout)
    assert result["prompt_tokens"] == 126 and result["finish_reason"] in ("length", "eos")


# --- Large batches, public helpers and value formatting -------------------------------------------


def test_a_large_batch_runs_in_bounded_batches_with_the_same_results(
    tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpt2_edge.runtime.generation import generator as generate_module

    prompts = [f"row {i} says" for i in range(7)]
    settings = {"max_new_tokens": 4, "temperature": 0.8, "seed": 3, "num_return_sequences": 2}
    whole = fake(tokenizer).generate_batch(prompts, **settings)
    gen = fake(tokenizer)
    widest: list[int] = []
    step = gen.session.step  # type: ignore[attr-defined]
    monkeypatch.setattr(
        gen.session, "step", lambda ids, *a: widest.append(len(ids)) or step(ids, *a)
    )
    vocab = gen.session.arch.vocab_size
    monkeypatch.setattr(generate_module, "BATCH_LOGITS_BUDGET", 3 * vocab)  # 3 rows a batch
    chunked = gen.generate_batch(prompts, **settings)
    assert max(widest) == 3
    assert [(r.text, r.tokens) for r in chunked] == [(r.text, r.tokens) for r in whole]
    rows = {e.row for e in gen.stream_events(prompts, **settings)}
    assert rows == set(range(14))
    widest.clear()
    beams = gen.generate_batch(prompts, max_new_tokens=3, num_beams=2)
    assert max(widest) <= 2 and len(beams) == len(prompts)
    assert [r.tokens for r in beams] == [
        r.tokens for r in fake(tokenizer).generate_batch(prompts, max_new_tokens=3, num_beams=2)
    ]


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda t: t.decode([-1]), "got -1"),
        (lambda t: t.decode([2**64]), "from 0 to 50256"),
        (lambda t: t.decode([10**9]), "got 1000000000"),
        (lambda t: t.decode([1.7]), "got 1.7"),
        (lambda t: t.decode([True]), "got True"),
        (lambda t: t.decode("abc"), "got str"),
        (lambda t: t.decode(None), "got NoneType"),
        (lambda t: t.decode(np.array([1.0])), "float64"),
        (lambda t: t.decode(np.array([[1]])), "2-D"),
        (lambda t: t.decode(np.array([5, 50257])), "got 50257"),
        (lambda t: t.encode(b"hi"), "got bytes"),
        (lambda t: t.encode(None), "got NoneType"),
    ],
)
def test_tokenizer_wrong_input_is_a_sentence(
    tokenizer: Tokenizer, call: Any, fragment: str
) -> None:
    with pytest.raises(EdgeError) as info:
        call(tokenizer)
    assert fragment in str(info.value), str(info.value)


def test_tokenizer_decode_takes_lists_and_integer_arrays(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("Hello world")
    assert tokenizer.decode(ids) == tokenizer.decode(ids.tolist()) == "Hello world"
    assert tokenizer.decode(tuple(np.int32(i) for i in ids)) == "Hello world"
    assert tokenizer.decode([]) == tokenizer.decode(EMPTY) == ""


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda g: g.fit([1, 2, 3], None), "GenerationOptions"),
        (lambda g: g.fit([1, 2, 3], {"truncate": "left"}), "got dict"),
        (lambda g: g.fit(None, GenerationOptions()), "got NoneType"),
        (lambda g: g.fit([], GenerationOptions()), "non-empty"),
        (lambda g: g.fit([1, -2], GenerationOptions()), "got -2"),
        (lambda g: g.fit([1, 2.0], GenerationOptions()), "got 2.0"),
        (lambda g: g.fit(np.array([1, 10**6]), GenerationOptions()), "got 1000000"),
        (lambda g: g.fit(np.array([0.5]), GenerationOptions()), "float64"),
        (lambda g: g.prompt_ids("hi", None), "GenerationOptions"),
        (lambda g: g.prompt_ids(b"hi", GenerationOptions()), "got bytes"),
    ],
)
def test_generator_helpers_wrong_input_is_a_sentence(
    tokenizer: Tokenizer, call: Any, fragment: str
) -> None:
    with pytest.raises(EdgeError) as info:
        call(fake(tokenizer))
    assert fragment in str(info.value), str(info.value)


def test_generator_fit_takes_lists_and_arrays(tokenizer: Tokenizer) -> None:
    gen = fake(tokenizer)
    options = GenerationOptions()
    assert gen.fit([1, 2, 3], options).tolist() == [1, 2, 3]
    fitted = gen.fit(np.array([4, 5], dtype=np.int32), options)
    assert fitted.dtype == np.int64 and fitted.tolist() == [4, 5]


def test_a_decimal_setting_is_shown_as_what_it_is(tokenizer: Tokenizer) -> None:
    from decimal import Decimal

    with pytest.raises(EdgeError) as info:
        fake(tokenizer).generate("x", temperature=Decimal("0.5"))
    assert "got Decimal('0.5')" in str(info.value), str(info.value)
