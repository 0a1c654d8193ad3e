"""Runtime unit tests that need no torch: the decode loop on a fake session, stop strings, stream
decoding, settings, the cache, IO binding against a fake binding, and bundle errors."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from gpt2_edge.runtime import EdgeError, GenerationOptions, Generator, Tokenizer
from gpt2_edge.runtime.contract.bundle import Bundle
from gpt2_edge.runtime.contract.manifest import Architecture, Manifest
from gpt2_edge.runtime.decoders.past import left_pad
from gpt2_edge.runtime.decoders.runners import BindingRunner, NumpyRunner, runner_for
from gpt2_edge.runtime.generation.text import StopFilter
from gpt2_edge.runtime.graph import providers
from gpt2_edge.runtime.graph.names import GraphNames
from gpt2_edge.runtime.graph.session import is_int8
from gpt2_edge.runtime.settings.resolve import resolve_settings
from support.fakes import EOS, VOCAB, FakeSession, fake_generator


@pytest.fixture(scope="session")
def tokenizer(gpt2_tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer(gpt2_tokenizer_dir / "tokenizer.json")


def test_first_call_has_empty_past_and_present_is_fed_back(tokenizer: Tokenizer) -> None:
    gen = fake_generator(tokenizer)
    result = gen.generate("Hello there", max_new_tokens=5, temperature=0)
    calls = gen.session.calls  # type: ignore[attr-defined]
    assert calls[0]["past_len"] == 0 and calls[0]["width"] == 2
    assert [c["past_len"] for c in calls] == [0, 2, 3, 4, 5]  # no forward after the last token
    assert all(c["width"] == 1 for c in calls[1:])
    assert calls[2]["past"][0, 0, -1, 0] == result.tokens[0]  # the sampled token went into the KV
    assert result.finish_reason == "length" and len(result.tokens) == 5


def test_batch_with_left_padding_equals_each_prompt_alone(tokenizer: Tokenizer) -> None:
    prompts = ["Hi", "The quick brown fox jumps", "A somewhat longer prompt than the others here"]
    gen = fake_generator(tokenizer)
    alone = [gen.generate(p, max_new_tokens=12, temperature=0).tokens for p in prompts]
    batch = gen.generate_batch(prompts, max_new_tokens=12, temperature=0)
    assert [r.tokens for r in batch] == alone


def test_rows_leave_the_batch_when_they_finish(tokenizer: Tokenizer) -> None:
    prompts = ["one", "two three four", "five six"]
    firsts = [int(tokenizer.encode(p)[0]) for p in prompts]
    gen = fake_generator(tokenizer)
    alone = [gen.generate(p, max_new_tokens=8, temperature=0).tokens for p in prompts]
    gen = fake_generator(tokenizer, eos_at={firsts[0]: 2, firsts[1]: 4})
    results = gen.generate_batch(prompts, max_new_tokens=8, temperature=0)
    assert [r.finish_reason for r in results] == ["eos", "eos", "length"]
    assert [len(r.tokens) for r in results] == [3, 5, 8]
    assert results[0].tokens[-1] == EOS and "<|endoftext|>" not in results[0].text
    assert results[2].tokens == alone[2]  # unaffected by the rows that left
    calls = gen.session.calls  # type: ignore[attr-defined]
    assert len(calls) == 8 and calls[-1]["past"].shape[0] == 1  # the batch shrank to one row


def test_ignore_eos_keeps_going(tokenizer: Tokenizer) -> None:
    gen = fake_generator(tokenizer, script={1: EOS})
    result = gen.generate("x", max_new_tokens=4, temperature=0, ignore_eos=True)
    assert result.finish_reason == "length" and result.tokens[1] == EOS


def test_context_end_and_truncation(tokenizer: Tokenizer) -> None:
    gen = fake_generator(tokenizer, context=16)
    prompt_ids = gen.encode("one two three four five six seven eight nine ten")
    assert prompt_ids.size == 10
    result = gen.generate("one two three four five six seven eight nine ten", max_new_tokens=50)
    assert result.finish_reason == "context" and len(result.tokens) == 6
    with pytest.raises(EdgeError, match="context is 16"):
        gen.generate("word " * 20, max_new_tokens=3)
    options = GenerationOptions(max_new_tokens=4, truncate="left")
    kept = gen.fit(np.arange(40), options)
    assert kept.tolist() == list(range(28, 40))  # the last 16 - 4: room for the new tokens
    truncated = gen.generate("word " * 20, max_new_tokens=4, truncate="left")
    assert truncated.prompt_tokens == 12 and truncated.finish_reason == "length"


def test_empty_prompt_starts_from_eos(tokenizer: Tokenizer) -> None:
    gen = fake_generator(tokenizer)
    result = gen.generate("", max_new_tokens=2)
    assert result.prompt_tokens == 1
    assert gen.session.calls[0]["past_len"] == 0  # type: ignore[attr-defined]


def test_stop_string_across_tokens_cuts_the_text(tokenizer: Tokenizer) -> None:
    words = tokenizer.encode(" alpha beta\n\ngamma").tolist()
    gen = fake_generator(tokenizer, script=dict(enumerate(words)))
    result = gen.generate("x", max_new_tokens=len(words), stop=["a\n\ng"], temperature=0)
    assert result.finish_reason == "stop"
    assert result.text == " alpha bet"
    streamed = "".join(
        gen.stream("x", max_new_tokens=len(words), stop=["a\n\ng", "zzz"], temperature=0)
    )
    assert streamed == result.text


@pytest.mark.parametrize(
    ("pieces", "stops", "out", "stopped"),
    [
        (["Hel", "lo wor", "ld"], ["lo w"], "Hel", True),
        (["ab", "c", "d"], ["cd"], "ab", True),
        (["ab", "c", "e"], ["cd"], "abce", False),
        (["x\n", "\ny"], ["\n\n", "y"], "x", True),
    ],
)
def test_stop_filter(pieces: list[str], stops: list[str], out: str, stopped: bool) -> None:
    f = StopFilter(stops)
    released = "".join(f.push(p) for p in pieces) + f.flush()
    assert (released, f.stopped, f.text) == (out, stopped, out)


TEXTS = ["naïve café 😀🎉 日本語のテキスト 👨‍👩‍👧 中文", "emoji 🤖 at end 🤖"]


@pytest.mark.parametrize("text", TEXTS)
def test_stream_decode_never_splits_a_character(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text).tolist()
    stream = tokenizer.stream()
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    for piece in pieces:
        piece.encode("utf-8")  # a lone surrogate or split character would fail
        assert "\ufffd" not in piece
    assert "".join(pieces) == tokenizer.decode(ids) == text


def test_stream_of_generated_emoji_and_cjk(tokenizer: Tokenizer) -> None:
    words = tokenizer.encode(" 猫が好き 🐈‍⬛ ok").tolist()
    gen = fake_generator(tokenizer, script=dict(enumerate(words)))
    pieces = list(gen.stream("🙂 日本", max_new_tokens=len(words), temperature=0))
    assert "".join(pieces) == tokenizer.decode(words) == " 猫が好き 🐈‍⬛ ok"
    assert len(pieces) > 3 and "\ufffd" not in "".join(pieces)


def test_incomplete_bytes_at_the_end_match_full_decode(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("😀").tolist()[:-1]  # half an emoji
    stream = tokenizer.stream()
    joined = "".join(stream.push(i) for i in ids) + stream.finish()
    assert joined == tokenizer.decode(ids)


def test_settings_are_validated_before_any_work(tokenizer: Tokenizer) -> None:
    gen = fake_generator(tokenizer)
    for bad, match in [
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"top_p": 1.5}, "top_p must be"),
        ({"temperature": -1}, "temperature must be"),
        ({"truncate": "right"}, r"truncate must be 'left' \(or not given\)"),
        ({"stop": [""]}, "stop must be"),
        ({"tempreature": 1.0}, "Unknown setting 'tempreature'"),
    ]:
        with pytest.raises(EdgeError, match=match):
            gen.stream("x", **bad)
    assert gen.session.calls == []  # type: ignore[attr-defined]


def test_defaults_come_from_the_bundle_then_constants() -> None:
    sampling, options = resolve_settings({"max_new_tokens": 7, "temperature": 0.0}, top_k=5)
    assert options.max_new_tokens == 7 and sampling.temperature == 0.0 and sampling.top_k == 5
    _, options = resolve_settings(None, stop="END")
    assert options.max_new_tokens == 128 and options.stop == ("END",)


def test_seeded_sampling_is_reproducible(tokenizer: Tokenizer) -> None:
    class Flat(FakeSession):
        def step(self, ids, mask, positions, past):  # noqa: ANN001, ANN201
            logits, present = super().step(ids, mask, positions, past)
            return np.random.default_rng(len(self.calls)).normal(size=logits.shape), present

    gen = Generator(Flat(), tokenizer)  # type: ignore[arg-type]
    a = gen.generate("x", max_new_tokens=8, temperature=1.0, top_k=50, seed=3).tokens
    b = gen.generate("x", max_new_tokens=8, temperature=1.0, top_k=50, seed=3).tokens
    c = gen.generate("x", max_new_tokens=8, temperature=1.0, top_k=50, seed=4).tokens
    assert a == b and a != c


def test_left_pad() -> None:
    ids, mask = left_pad([np.array([5, 6, 7]), np.array([9])], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 9]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# --- IO binding (the CUDA path) against a fake binding -------------------------------------------


class FakeOrtValue:
    made: list[tuple[str, tuple[int, ...]]] = []

    def __init__(self, array: np.ndarray, device: str):
        self.array, self.device = array, device

    @classmethod
    def ortvalue_from_numpy(cls, array: np.ndarray, device: str, device_id: int) -> FakeOrtValue:
        cls.made.append((device, array.shape))
        return cls(array, device)

    def numpy(self) -> np.ndarray:
        return self.array


class FakeBinding:
    def __init__(self) -> None:
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, str] = {}

    def bind_cpu_input(self, name: str, array: np.ndarray) -> None:
        self.inputs[name] = ("host", array)

    def bind_ortvalue_input(self, name: str, value: FakeOrtValue) -> None:
        self.inputs[name] = ("device", value)

    def clear_binding_outputs(self) -> None:
        self.outputs = {}

    def bind_output(self, name: str, device: str, device_id: int = 0) -> None:
        self.outputs[name] = device

    def get_outputs(self) -> list[FakeOrtValue]:
        return self.results


class FakeOrtSession:
    def __init__(self) -> None:
        self.binding = FakeBinding()

    def io_binding(self) -> FakeBinding:
        return self.binding

    def run_with_iobinding(self, binding: FakeBinding) -> None:
        _, past = binding.inputs["past.0.key"]
        length = past.array.shape[2] + binding.inputs["input_ids"][1].shape[1]
        kv = FakeOrtValue(np.zeros((1, 1, length, 2), np.float32), binding.outputs["present.0.key"])
        logits = FakeOrtValue(np.zeros((1, 1, 4), np.float32), binding.outputs["logits"])
        binding.results = [logits, kv, kv]


def test_binding_runner_keeps_the_cache_on_the_device() -> None:
    names = GraphNames(
        "input_ids",
        "attention_mask",
        "position_ids",
        ("past.0.key", "past.0.value"),
        ("logits", "present.0.key", "present.0.value"),
    )
    ort_session = FakeOrtSession()
    runner = BindingRunner(ort_session, names, device="cuda", ortvalue=FakeOrtValue)
    past = runner.empty_past((1, 1, 0, 2), np.dtype(np.float32))
    assert all(p.device == "cuda" for p in past)
    ids = np.array([[1, 2]])
    logits, present = runner.run(ids, np.ones((1, 2), np.int64), np.array([[0, 1]]), past)
    assert isinstance(logits, np.ndarray)
    binding = ort_session.binding
    assert binding.outputs == {"logits": "cpu", "present.0.key": "cuda", "present.0.value": "cuda"}
    _, present = runner.run(ids[:, :1], np.ones((1, 3), np.int64), np.array([[2]]), present)
    assert binding.inputs["past.0.key"][0] == "device"  # present was bound back, not copied
    assert binding.inputs["input_ids"][0] == "host"
    assert present[0].array.shape == (1, 1, 3, 2)
    assert FakeOrtValue.made == [("cuda", (1, 1, 0, 2))]  # no host round trip after the start


def test_int8_detection() -> None:
    assert is_int8({"dtype": "int8", "method": "dynamic"})
    assert not is_int8({"dtype": "float32", "method": None})
    assert not is_int8({"dtype": "float16"})


# --- Bundle errors, no model needed --------------------------------------------------------------


def test_bundle_errors(tmp_path: Path) -> None:
    from gpt2_edge.runtime import load
    from gpt2_edge.runtime.contract.manifest import write_manifest

    with pytest.raises(EdgeError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(EdgeError, match="neither a gpt2-edge bundle"):
        load(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(EdgeError, match="cannot be read as JSON"):
        load(tmp_path)
    (tmp_path / "bundle.json").write_text(
        json.dumps({"format": "gpt2-edge-bundle", "format_version": 99})
    )
    with pytest.raises(EdgeError, match="knows version 1"):
        load(tmp_path)
    arch = Architecture(1, 1, 2, 2, 16, VOCAB)
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    files = {"model.onnx": {"size": 11, "sha256": "0" * 64}}
    write_manifest(tmp_path, Manifest("bad", arch, files=files))
    with pytest.raises(EdgeError, match="SHA-256"):
        load(tmp_path)
    write_manifest(tmp_path, Manifest("bad", arch, files={"tokenizer.json": {"size": 1}}))
    with pytest.raises(EdgeError, match="missing tokenizer.json"):
        load(tmp_path)


def fake_graph(
    monkeypatch: pytest.MonkeyPatch, inputs: tuple[str, ...], kv_type: str = "tensor(float)"
) -> Any:
    """Make Session see a CUDA-capable onnxruntime, a graph has ``inputs``; return the module."""
    from gpt2_edge.runtime.graph import session as session_mod

    typed = [SimpleNamespace(name=n, type=kv_type) for n in inputs]
    fake_ort = SimpleNamespace(
        get_inputs=lambda: typed, get_overridable_initializers=lambda: [], io_binding=FakeBinding
    )
    facts = SimpleNamespace(positions=None)  # what the graph check learned of the file
    monkeypatch.setattr(session_mod, "create_inference_session", lambda *a: (fake_ort, facts))
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(session_mod.ort, "get_available_providers", lambda: cuda)
    return session_mod


def test_cuda_session_binds_and_warns_about_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    session_mod = fake_graph(monkeypatch, ("input_ids", "past_key_values.0.key"))
    arch = Architecture(1, 1, 2, 2, 16, VOCAB)
    int8 = Bundle(Path("."), Manifest("q", arch, precision={"dtype": "int8"}))
    session = session_mod.Session(int8, provider="auto")
    assert session.provider == "cuda" and isinstance(runner_for(session), BindingRunner)
    assert session.notices == [session_mod.INT8_ON_CUDA]
    fp32 = session_mod.Session(Bundle(Path("."), Manifest("f", arch)), provider="cuda")
    assert fp32.notices == []
    monkeypatch.setattr(
        session_mod.ort, "get_available_providers", lambda: ["CPUExecutionProvider"]
    )
    cpu = session_mod.Session(int8, provider="auto")
    assert cpu.provider == "cpu" and isinstance(runner_for(cpu), NumpyRunner)
    monkeypatch.setattr(providers, "gpu_build_installed", lambda: False)
    assert session_mod.Session(int8, provider="auto").notices == []  # nobody expected CUDA
    monkeypatch.setattr(providers, "gpu_build_installed", lambda: True)
    assert session_mod.Session(int8, provider="auto").notices == [providers.CUDA_MISSING]
    with pytest.raises(EdgeError, match="CUDA provider is not available"):
        session_mod.Session(int8, provider="cuda")


def test_cuda_keeps_fp32_attention_buffers_with_the_cpu_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """onnxruntime's CUDA GroupQueryAttention is fp16-only: fp32 shared buffers stay on the CPU."""
    names = ("input_ids", "attention_mask", "position_ids", "past_key_values.0.key")
    arch = Architecture(1, 1, 2, 2, 16, VOCAB)
    fused = Bundle(Path("."), Manifest("f", arch, graph={"kv_cache": "shared-buffer"}))
    for kv_type, device in (("tensor(float)", "cpu"), ("tensor(float16)", "cuda")):
        session_mod = fake_graph(monkeypatch, names, kv_type)
        session = session_mod.Session(fused, provider="cuda")
        assert session.shared_kv and session.kv_device == device
        assert (session_mod.FP32_ATTENTION_ON_CUDA in session.notices) == (device == "cpu")
        cpu = session_mod.Session(fused, provider="cpu")
        assert cpu.kv_device == "cpu" and cpu.notices == []
    # fp32 on CUDA computes in fp32: TF32 off
    assert session_mod.ort_providers("cuda")[0] == ("CUDAExecutionProvider", {"use_tf32": "0"})
