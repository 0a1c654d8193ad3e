"""Hostile calls to the Python API (``gpt2_edge.runtime``, ``export_bundle``, ``make_pack``,
``ServeConfig``): arguments of every wrong type and size, misuse of a generator (after close,
a stream dropped half read, two threads at once). A user's mistake must be one ``EdgeError``
sentence; any other exception or a warning is a defect."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .common import Case, Fixtures, Outcome

A = "Python API"


def _call(fn: Callable[[Fixtures], Any], want: str) -> Callable[[Fixtures], Outcome]:
    def go(fx: Fixtures) -> Outcome:
        from gpt2_edge.runtime import EdgeError

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                value = fn(fx)
            except EdgeError as exc:
                text = str(exc)
                if "\n" in text or not text:
                    return Outcome("defect", f"EdgeError of several lines: {text[:120]!r}")
                if want == "ok":
                    return Outcome("defect", f"refused: {text[:160]}")
                return Outcome("clean error", text[:160])
            except Exception as exc:  # a traceback for the user
                return Outcome("defect", f"{type(exc).__name__}: {str(exc)[:160]}")
        if want == "error":
            return Outcome("defect", f"accepted: {str(value)[:120]}")
        return Outcome("accepted", str(value)[:80])

    return go


def _gen(fx: Fixtures):
    return fx.generator


def _load(*args: Any, **kwargs: Any) -> Callable[[Fixtures], Any]:
    def call(fx: Fixtures) -> Any:
        from gpt2_edge.runtime import load

        path = args[0](fx) if args and callable(args[0]) else (args[0] if args else fx.bundle)
        with load(path, *args[1:], **kwargs):
            return "loaded"

    return call


def _generate(prompt: Any = "Hello", **settings: Any) -> Callable[[Fixtures], Any]:
    return lambda fx: _gen(fx).generate(prompt, **{"max_new_tokens": 3, **settings}).text


LOADS = [
    ("load path a number", _load(5), "error"),
    ("load path None", _load(None), "error"),
    ("load path bytes", _load(b"/tmp"), "error"),
    ("load path a file", _load(lambda fx: fx.bundle / "bundle.json"), "error"),
    ("load path missing", _load(Path("/nonexistent/bundle")), "error"),
    ("load provider a number", _load(lambda fx: fx.bundle, 5), "error"),
    ("load provider gpu", _load(lambda fx: fx.bundle, "gpu"), "error"),
    ("load threads True", _load(lambda fx: fx.bundle, "cpu", True), "error"),
    ("load threads 1.5", _load(lambda fx: fx.bundle, "cpu", 1.5), "error"),
    ("load threads -1", _load(lambda fx: fx.bundle, "cpu", -1), "error"),
    ("load threads 10**9", _load(lambda fx: fx.bundle, "cpu", 10**9), "error"),
    ("load check_hashes 'yes'", _load(lambda fx: fx.bundle, "cpu", 1, "yes"), "error"),
    ("load ok, numpy threads", _load(lambda fx: fx.bundle, "cpu", np.int64(1)), "ok"),
]
GENERATES = [
    ("prompt None", _generate(None), "error"),
    ("prompt bytes", _generate(b"x"), "error"),
    ("prompt a number", _generate(5), "error"),
    ("prompt a list", _generate(["a"]), "error"),
    ("prompt lone surrogate", _generate("\ud800"), "error"),
    ("prompt empty", _generate(""), "ok"),
    ("prompt 200k characters", _generate("x " * 100_000), "error"),
    ("prompt 200k truncated", _generate("x " * 100_000, truncate="left"), "ok"),
    ("temperature a string", _generate(temperature="0.5"), "error"),
    ("temperature Decimal", _generate(temperature=Decimal("0.5")), "error"),
    ("temperature Fraction", _generate(temperature=Fraction(1, 2)), "ok"),
    ("temperature numpy nan", _generate(temperature=np.float32("nan")), "error"),
    ("temperature complex", _generate(temperature=1 + 0j), "error"),
    ("temperature True", _generate(temperature=True), "error"),
    ("top_k 5.0", _generate(temperature=1, top_k=5.0), "error"),
    ("max_new_tokens True", _generate(max_new_tokens=True), "error"),
    ("max_new_tokens 10**30", _generate(max_new_tokens=10**30), "ok"),
    ("stop a set", _generate(stop={"a"}), "error"),
    ("stop bytes", _generate(stop=b"x"), "error"),
    ("stop with empty", _generate(stop=["a", ""]), "error"),
    ("stop with None", _generate(stop=[None]), "error"),
    ("seed numpy int", _generate(temperature=1, seed=np.int64(5)), "ok"),
    ("seed 2**100", _generate(temperature=1, seed=2**100), "ok"),
    ("seed -1", _generate(temperature=1, seed=-1), "error"),
    ("logprobs 21", _generate(logprobs=21), "error"),
    ("num_return_sequences 65", _generate(temperature=1, num_return_sequences=65), "error"),
    ("length_penalty -1e308", _generate(num_beams=2, length_penalty=-1e308), "error"),
    ("length_penalty inf", _generate(num_beams=2, length_penalty=float("inf")), "error"),
    ("unknown setting", _generate(temprature=1), "error"),
    ("draft with beams", _generate(num_beams=2, draft="prompt-lookup"), "error"),
    ("truncate with max_length", _generate(truncate="left", max_length=20), "error"),
]
BATCHES = [
    ("batch empty list", lambda fx: _gen(fx).generate_batch([]), "any"),
    ("batch a string", lambda fx: _gen(fx).generate_batch("abc", max_new_tokens=2), "error"),
    ("batch a tuple", lambda fx: _gen(fx).generate_batch(("a", "b"), max_new_tokens=2), "ok"),
    ("batch with a number", lambda fx: _gen(fx).generate_batch(["a", 1]), "error"),
    (
        "batch 300 prompts",
        lambda fx: len(_gen(fx).generate_batch(["a"] * 300, max_new_tokens=1)),
        "ok",
    ),  # fmt: skip
    ("score empty", lambda fx: _gen(fx).score(""), "error"),
    ("score context a number", lambda fx: _gen(fx).score("x", context=5), "error"),
    ("score long text", lambda fx: _gen(fx).score("word " * 2000), "error"),
    ("score ok", lambda fx: _gen(fx).score(" was", context="The city").logprob, "ok"),
    ("stream dropped half read", lambda fx: _stream_dropped(fx), "ok"),
    ("stream bad setting", lambda fx: list(_gen(fx).stream("x", top_p=2)), "error"),
    ("two threads at once", lambda fx: _two_threads(fx), "ok"),
]
TOKENIZER = [
    ("encode a number", lambda fx: _gen(fx).tokenizer.encode(5), "error"),
    ("decode past vocabulary", lambda fx: _gen(fx).tokenizer.decode([50257]), "error"),
    ("decode float array", lambda fx: _gen(fx).tokenizer.decode(np.array([1.5])), "error"),
    ("decode nested list", lambda fx: _gen(fx).tokenizer.decode([[1]]), "error"),
    ("decode a string", lambda fx: _gen(fx).tokenizer.decode("abc"), "error"),
    ("decode a range", lambda fx: _gen(fx).tokenizer.decode(range(10)), "ok"),
    (
        "decode 2-D array",
        lambda fx: _gen(fx).tokenizer.decode(np.zeros((2, 2), np.int64)),
        "error",
    ),  # fmt: skip
]


def _stream_dropped(fx: Fixtures) -> str:
    gen = _gen(fx)
    stream = gen.stream("Once upon", max_new_tokens=20)
    next(stream)
    stream.close()
    return gen.generate("again", max_new_tokens=2).text


def _two_threads(fx: Fixtures) -> str:
    gen, results, errors = _gen(fx), [], []

    def one() -> None:
        try:
            results.append(gen.generate("Hello", max_new_tokens=5).text)
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    if results[0] != results[1]:
        raise AssertionError(f"two threads, two texts: {results}")
    return results[0]


def _closed(fx: Fixtures) -> Any:
    from gpt2_edge.runtime import load

    gen = load(fx.bundle, "cpu", 1)
    gen.close()
    return gen.generate("x", max_new_tokens=2)


def _export(*args: Any, **kwargs: Any) -> Callable[[Fixtures], Any]:
    def call(fx: Fixtures) -> Any:
        from gpt2_edge.exporter import export_bundle

        model = args[0] if args else str(fx.checkpoint)
        output = kwargs.pop("output", fx.scratch("api-export") / "out")
        return export_bundle(model, output, progress=False, **kwargs)

    return call


OTHERS = [
    ("use after close", _closed, "error"),
    ("export model a number", _export(5), "error"),
    ("export output a number", _export(output=5), "error"),
    ("export bits '8'", _export(bits="8"), "error"),
    ("export dtype None", _export(dtype=None), "error"),
    ("export unknown option", _export(quantise=True), "error"),
    ("pack bundle a number", lambda fx: _pack(5, "linux_x86_64"), "error"),
    ("pack platform None", lambda fx: _pack(fx.bundle, None), "error"),
    ("serve config empty key", lambda fx: _serve_config(api_key=""), "error"),
    ("serve config key a number", lambda fx: _serve_config(api_key=5), "error"),
]


def _pack(bundle: Any, platform: Any) -> Any:
    from gpt2_edge.pack import make_pack

    return make_pack(bundle, platform, output=Path("/nonexistent/pack"))


def _serve_config(**kwargs: Any) -> Any:
    from gpt2_edge.serve import ServeConfig

    return ServeConfig(("tiny",), **kwargs)


def cases() -> list[Case]:
    every = LOADS + GENERATES + BATCHES + TOKENIZER + OTHERS
    return [Case(A, name, _call(fn, want)) for name, fn, want in every]
