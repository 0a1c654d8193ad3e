"""gpt2-export's user errors, through the CLI: one sentence, exit 1, no traceback, nothing left.

None of these reach the heavy steps, so they run without the export extra; the steps that would
run torch are replaced by stand-ins that fail the way the real ones can.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gpt2_edge.exporter.cli import app
from gpt2_edge.exporter.graphs import optimum as onnx_export
from gpt2_edge.exporter.writing import staging
from typer.testing import CliRunner

runner = CliRunner()


def run_cli(*args: str):
    return runner.invoke(app, list(args))


def assert_one_sentence(result, *words: str) -> str:
    """Exit 1, no traceback, and one error line (after any progress lines) that is a sentence."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    message = errors[0]
    assert message.startswith("Error: ") and message.endswith("."), message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def assert_nothing_left(out: Path) -> None:
    assert not out.exists()
    if out.parent.exists():
        leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
        assert leftovers == []


# A header-only safetensors file and a one-token BPE: enough for the exporter's pre-checks, which
# open the weights and the tokenizer before any slow step.
EMPTY_SAFETENSORS = b"\x02\x00\x00\x00\x00\x00\x00\x00{}"


def write_config(folder: Path, config: dict, weights: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
        (folder / "vocab.json").write_text('{"a": 0}')
        (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


GPT2_CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "n_positions": 128,
    "vocab_size": 400,
}


@pytest.fixture
def fake_gpt2(tmp_path: Path) -> Path:
    """A folder that passes the source checks; the export step is replaced in these tests."""
    return write_config(tmp_path / "fake-gpt2", GPT2_CONFIG)


def test_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    out = tmp_path / "out"
    result = run_cli(str(folder), "--output", str(out))
    assert_one_sentence(result, "not a transformers checkpoint", "config.json")
    assert_nothing_left(out)


def test_config_without_weights(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "no-weights", GPT2_CONFIG, weights=False)
    result = run_cli(str(folder), "--output", str(tmp_path / "out"))
    assert_one_sentence(result, "no model weights")


def test_missing_local_folder(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nowhere" / "ckpt"), "--output", str(tmp_path / "out"))
    assert_one_sentence(result, "does not exist")


BERT = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 768}
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096}


@pytest.mark.parametrize("config, kind", [(BERT, "bert"), (LLAMA, "llama")])
def test_checkpoint_that_is_not_gpt2(tmp_path: Path, config: dict, kind: str) -> None:
    folder = write_config(tmp_path / kind, config)
    out = tmp_path / "out"
    result = run_cli(str(folder), "--output", str(out))
    assert_one_sentence(result, f"'{kind}' model, not GPT-2")
    assert_nothing_left(out)


def test_real_transformers_configs_are_refused(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    for name, config in (
        ("bert", transformers.BertConfig()),
        ("llama", transformers.LlamaConfig()),
    ):
        config.save_pretrained(tmp_path / name)
        (tmp_path / name / "model.safetensors").write_bytes(b"x")
        result = run_cli(str(tmp_path / name), "--output", str(tmp_path / "out"))
        assert_one_sentence(result, "not GPT-2")


def test_gpt2_without_lm_head(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "base", {**GPT2_CONFIG, "architectures": ["GPT2Model"]})
    assert_one_sentence(run_cli(str(folder)), "GPT2LMHeadModel")


def _hub_raises(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    import huggingface_hub

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)


def test_unknown_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    _hub_raises(monkeypatch, RepositoryNotFoundError("404 Client Error: Repository Not Found"))
    monkeypatch.chdir(tmp_path)
    result = run_cli("someone/no-such-gpt2")
    assert_one_sentence(result, "someone/no-such-gpt2", "neither a local folder nor a model")
    assert_nothing_left(tmp_path / "models" / "no-such-gpt2")


def test_hub_connection_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hub_raises(monkeypatch, ConnectionError("Failed to resolve huggingface.co"))
    result = run_cli("gpt2", "--output", str(tmp_path / "out"))
    assert_one_sentence(result, "cannot reach the hugging face hub", "local checkpoint folder")
    assert_nothing_left(tmp_path / "out")


def test_hub_unreachable_offline_subprocess(tmp_path: Path) -> None:
    """The real code path with the hub switched off: fast, and it says to pass a local folder."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_edge.exporter", "gpt2", "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: Cannot reach the Hugging Face hub"), proc.stderr
    assert "local checkpoint folder" in last
    assert_nothing_left(out)


def test_output_exists_without_force(tmp_path: Path, fake_gpt2: Path) -> None:
    """A folder of the user's: --force would refuse it too, so the message does not offer it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_cli(str(fake_gpt2), "--output", str(out))
    message = assert_one_sentence(result, "exists", "choose another --output")
    assert "pass --force" not in message
    assert (out / "keep.txt").read_text() == "mine"


def test_output_is_an_existing_file(tmp_path: Path, fake_gpt2: Path) -> None:
    out = tmp_path / "report.txt"
    out.write_text("mine")
    message = assert_one_sentence(run_cli(str(fake_gpt2), "--output", str(out)), "is a file")
    assert "--force" not in message and "choose another --output" in message
    assert out.read_text() == "mine"


def test_existing_bundle_without_force_offers_force(tmp_path: Path, fake_gpt2: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "bundle.json").write_text('{"format": "gpt2-edge-bundle"}')
    assert_one_sentence(run_cli(str(fake_gpt2), "--output", str(out)), "pass --force")


def test_default_output_exists(tmp_path: Path, fake_gpt2: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "fake-gpt2-int8").mkdir(parents=True)
    result = run_cli(str(fake_gpt2), "--quantize")
    assert_one_sentence(result, "models/fake-gpt2-int8", "already exists", "pass --force")


@pytest.mark.parametrize(
    "args, words",
    [(["--quantize", "--bits", "3"], ["--bits 3"]), (["--quantize", "--target", "x86"], ["x86"])],
)
def test_bad_quantization_flags(tmp_path: Path, fake_gpt2: Path, args, words) -> None:
    result = run_cli(str(fake_gpt2), "--output", str(tmp_path / "out"), *args)
    assert_one_sentence(result, *words)


def _export_fails_with(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> list[Path]:
    """Make the export step write a partial file and then fail; return where it wrote."""
    seen: list[Path] = []

    def export_onnx(checkpoint: Path, work_dir: Path, opset=None) -> Path:
        work_dir.mkdir(parents=True)
        (work_dir / "model.onnx").write_bytes(b"half a graph")
        seen.append(work_dir)
        raise exc

    monkeypatch.setattr(onnx_export, "export_onnx", export_onnx)
    return seen


def test_disk_full_leaves_nothing(tmp_path: Path, fake_gpt2: Path, monkeypatch) -> None:
    seen = _export_fails_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "out"
    result = run_cli(str(fake_gpt2), "--output", str(out))
    assert_one_sentence(result, "no space left", str(out))
    assert seen and not seen[0].exists()
    assert_nothing_left(out)


def test_permission_denied_leaves_nothing(tmp_path: Path, fake_gpt2: Path, monkeypatch) -> None:
    _export_fails_with(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    out = tmp_path / "out"
    assert_one_sentence(run_cli(str(fake_gpt2), "--output", str(out)), "permission")
    assert_nothing_left(out)


def test_output_under_a_file(tmp_path: Path, fake_gpt2: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli(str(fake_gpt2), "--output", str(blocker / "bundle"))
    assert_one_sentence(result, "cannot write the bundle", "a file is in the way")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_parent(tmp_path: Path, fake_gpt2: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        result = run_cli(str(fake_gpt2), "--output", str(parent / "bundle"))
        assert_one_sentence(result, "permission")
    finally:
        parent.chmod(0o700)


def test_ctrl_c_leaves_nothing(tmp_path: Path, fake_gpt2: Path, monkeypatch) -> None:
    _export_fails_with(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "out"
    result = run_cli(str(fake_gpt2), "--output", str(out))
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == "Interrupted; no bundle was written."
    assert_nothing_left(out)


def test_force_keeps_old_bundle_when_export_fails(tmp_path, fake_gpt2, monkeypatch) -> None:
    _export_fails_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "out"
    out.mkdir()
    old = '{"format": "gpt2-edge-bundle"}'  # --force replaces only a bundle
    (out / "bundle.json").write_text(old)
    assert_one_sentence(run_cli(str(fake_gpt2), "--output", str(out), "--force"), "no space")
    assert (out / "bundle.json").read_text() == old  # the old bundle survives a failed export


def test_abandoned_partial_folder_is_removed(tmp_path: Path, fake_gpt2: Path, monkeypatch) -> None:
    """A SIGKILLed export leaves a hidden partial folder; the next export removes it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    abandoned = tmp_path / f".out.partial-{dead.pid}-abc"
    abandoned.mkdir()
    staging.mark(abandoned)  # only a folder the export marked as its own is removed
    alive = tmp_path / f".out.partial-{os.getpid()}-xyz"  # a live export: leave it alone
    alive.mkdir()
    _export_fails_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    run_cli(str(fake_gpt2), "--output", str(out))
    assert not abandoned.exists()
    assert alive.exists()


def test_not_enough_free_space(tmp_path: Path, fake_gpt2: Path, monkeypatch) -> None:
    import shutil

    from gpt2_edge.exporter.writing import staging

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: usage._replace(free=5))
    out = tmp_path / "out"
    assert_one_sentence(run_cli(str(fake_gpt2), "--output", str(out)), "not enough free space")
    assert_nothing_left(out)


def test_output_is_the_checkpoint(fake_gpt2: Path) -> None:
    result = run_cli(str(fake_gpt2), "--output", str(fake_gpt2), "--force")
    assert_one_sentence(result, "is the checkpoint folder itself")
    assert (fake_gpt2 / "config.json").is_file()
