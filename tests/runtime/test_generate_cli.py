"""``gpt2-generate``: output modes and user errors (one sentence, exit 1, no traceback).

The model is either a fake (``cli.load`` patched) or a bundle that fails before onnxruntime runs,
so these tests need no torch; one test at the end runs a real tiny export (export extra).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gpt2_edge.runtime import EdgeError, Generator, Tokenizer
from gpt2_edge.runtime.cli import generate as cli
from gpt2_edge.runtime.contract.files import file_entry
from gpt2_edge.runtime.contract.manifest import Architecture, Manifest, write_manifest
from support.fakes import FakeSession, patch_cli_load
from typer.testing import CliRunner, Result

runner = CliRunner()


def invoke(args: list[str], stdin: bytes | str | None = None) -> Result:
    return runner.invoke(cli.app, args, input=stdin)


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch, gpt2_tokenizer_dir: Path) -> list[Path]:
    """Patch the CLI's ``load`` with a generator on the fake session; records the paths asked."""
    asked: list[Path] = []
    tokenizer = Tokenizer(gpt2_tokenizer_dir / "tokenizer.json")
    make = lambda: Generator(FakeSession(), tokenizer)  # type: ignore[arg-type]  # noqa: E731
    patch_cli_load(monkeypatch, cli, make, asked)
    return asked


def test_streams_text_and_json_matches(fake: list[Path]) -> None:
    args = ["Hello", "--model", "m", "--max-new-tokens", "6", "--temperature", "0"]
    streamed = invoke(args)
    assert streamed.exit_code == 0, streamed.output
    as_json = invoke([*args, "--json"])
    data = json.loads(as_json.stdout)
    assert set(data) == {"text", "tokens", "finish_reason", "prompt_tokens", "timings"}
    assert len(data["tokens"]) == 6 and data["finish_reason"] == "length"
    assert {"prefill_ms", "decode_tokens_per_s"} <= set(data["timings"])
    assert streamed.stdout == data["text"] + "\n"


def test_prompt_from_stdin_and_interactive(fake: list[Path]) -> None:
    args = ["--model", "m", "--max-new-tokens", "3", "--temperature", "0", "--json"]
    from_stdin = invoke(["-", *args], stdin="Hello")
    from_arg = invoke(["Hello", *args])
    a, b = json.loads(from_stdin.stdout), json.loads(from_arg.stdout)
    assert (a["tokens"], a["text"]) == (b["tokens"], b["text"])
    loop = invoke(["--interactive", *args], stdin=b"one\n\xff\n" + b"word " * 80 + b"\ntwo\n")
    assert loop.exit_code == 0 and len(loop.stdout.strip().splitlines()) == 2
    assert "not valid UTF-8" in loop.stderr and "context is 64" in loop.stderr


def test_default_model_is_the_one_bundle_in_models(
    fake: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert_user_error(invoke(["Hi"]), "holds no bundle")
    for name in ("b1", "b2"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "bundle.json").write_text("{}")
    several = invoke(["Hi", "--max-new-tokens", "2"])  # one is picked, and named on stderr
    assert several.exit_code == 0 and "Using models/b1" in several.stderr
    shutil.rmtree(tmp_path / "models" / "b2")
    alone = invoke(["Hi", "--max-new-tokens", "2"])
    assert alone.exit_code == 0 and "Using" not in alone.stderr
    assert fake == [Path("models/b1"), Path("models/b1")]


def test_user_errors_before_the_model(fake: list[Path]) -> None:
    assert_user_error(invoke(["Hi", "--model", "m", "--top-p", "2"]), "top_p")
    assert_user_error(invoke(["Hi", "--model", "m", "--truncate", "middle"]), "truncate")
    assert_user_error(invoke(["-", "--model", "m"], stdin=b"caf\xe9"), "not valid UTF-8")
    assert_user_error(invoke(["caf\udce9", "--model", "m"]), "not valid UTF-8")
    assert_user_error(invoke(["word " * 80, "--model", "m"]), "context is 64")
    assert fake == [Path("m")]  # only the prompt-length check needed the model


@pytest.fixture()
def broken_bundle(tmp_path: Path, gpt2_tokenizer_dir: Path) -> Path:
    """A bundle whose manifest and hashes are right but whose model.onnx is not ONNX."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"this is not an onnx file")
    shutil.copy(gpt2_tokenizer_dir / "tokenizer.json", folder / "tokenizer.json")
    arch = Architecture(2, 4, 16, 64, 128, 50257)
    files = {n: file_entry(folder / n) for n in ("model.onnx", "tokenizer.json")}
    write_manifest(folder, Manifest("broken", arch, files=files))
    return folder


def test_bundle_errors_are_sentences(broken_bundle: Path, tmp_path: Path) -> None:
    model = ["Hi", "--model", str(broken_bundle)]
    assert_user_error(invoke(model), "onnxruntime cannot load")
    assert_user_error(invoke([*model, "--provider", "tpu"]), "Unknown provider 'tpu'")
    assert_user_error(invoke([*model, "--provider", "cuda"]), "CUDA provider is not available")
    assert_user_error(invoke(["Hi", "--model", str(tmp_path / "nope")]), "does not exist")
    manifest = broken_bundle / "bundle.json"
    data = json.loads(manifest.read_text())
    (broken_bundle / "model.onnx").write_bytes(b"this is not an onnx file!")
    assert_user_error(invoke(model), "wrong size")
    (broken_bundle / "model.onnx").write_bytes(b"this is not an onnx fil!")
    assert_user_error(invoke(model), "SHA-256")
    (broken_bundle / "model.onnx").unlink()
    assert_user_error(invoke(model), "missing model.onnx")
    manifest.write_text(json.dumps({**data, "format_version": 7}))
    assert_user_error(invoke(model), "format version 7", "knows version 1")
    manifest.write_bytes(b"\xff\xfe{")
    assert_user_error(invoke(model), "cannot be read")
    manifest.unlink()
    assert_user_error(invoke(model), "neither a gpt2-edge bundle")


@pytest.mark.export
def test_real_model_via_module_entry_point(
    tiny_optimum_export: Path, tiny_checkpoint: Path
) -> None:
    """``python -m gpt2_edge.runtime`` on a real model prints the Python API's greedy result,
    which is transformers' own greedy continuation."""
    import subprocess
    import sys

    from gpt2_edge.runtime import load
    from support.reference import transformers_greedy

    args = ["Hello", "--model", str(tiny_optimum_export), "--max-new-tokens", "5"]
    args += ["--temperature", "0", "--ignore-eos", "--json", "--provider", "cpu"]
    out = subprocess.run(
        [sys.executable, "-m", "gpt2_edge.runtime", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    printed = json.loads(out.stdout)
    gen = load(tiny_optimum_export, provider="cpu", threads=1)
    api = gen.generate("Hello", max_new_tokens=5, temperature=0, ignore_eos=True)
    assert (printed["tokens"], printed["text"]) == (api.tokens, api.text)
    assert printed["finish_reason"] == api.finish_reason == "length"
    assert api.tokens == transformers_greedy(tiny_checkpoint, gen.encode("Hello"), 5)


def test_default_model_ignores_hidden_staging_folders(tmp_path: Path) -> None:
    from gpt2_edge.runtime.contract.manifest import MANIFEST
    from gpt2_edge.runtime.contract.models_dir import default_model

    for name in ("gpt2-int8", ".gpt2.partial-123-abc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST).write_text("{}")
    assert default_model(tmp_path) == tmp_path / "gpt2-int8"


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [(EdgeError("Bad thing."), 1, "Error: Bad thing."), (KeyboardInterrupt(), 130, "Stopped.")],
)
def test_user_errors_become_one_line_and_an_exit_code(
    raised: BaseException, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer
    from gpt2_edge.runtime.cli.errors import user_errors

    with pytest.raises(typer.Exit) as exit_info, user_errors(interrupted="Stopped."):
        raise raised
    assert exit_info.value.exit_code == code
    assert capsys.readouterr().err.strip() == line
