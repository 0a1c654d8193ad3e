"""gpt2-export's user errors, through the CLI: one sentence, the right exit code, no traceback,
nothing left, and the user's files byte for byte. Sources that are no GPT-2 checkpoint and the hub,
what --force may delete, full disks and denied permissions at every step, damaged checkpoints, bad
flags and options the export would ignore, Ctrl-C while it starts, a base install without the
export extra, usage errors, sizes in words, and a quality gate that reads more than perplexity.

Most cases run on a fake checkpoint whose Optimum export step is a spy or a stand-in: a refusal
must come before it (the spy records any call), and a step that fails fails the way the real one
can. Only the quality-gate cases at the end export for real (the tiny model, a short gate text).
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpt2_edge.exporter import ExportError, pipeline
from gpt2_edge.exporter.checks import quality
from gpt2_edge.exporter.cli import app
from gpt2_edge.exporter.graphs import optimum as onnx_export
from gpt2_edge.exporter.progress import human_size
from gpt2_edge.exporter.writing import staging
from support.checkpoints import gpt2_safetensors
from typer.testing import CliRunner

runner = CliRunner()
GPT2_CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "n_layer": 2,
    "n_head": 4,
    "n_embd": 64,
    "n_positions": 128,
    "vocab_size": 400,
}
# Every tensor GPT2_CONFIG asks for (zeros): the checks of the config against the weights pass.
GPT2_WEIGHTS = gpt2_safetensors(GPT2_CONFIG)
# Free space in a "nearly full" file system: above the fake export's needs (2.6 x its 264 KiB
# of weights), far below the 64 MiB under which a failed write is put down to a full disk.
NEARLY_FULL = 1 << 20
BUNDLE_MANIFEST = '{"format": "gpt2-edge-bundle", "name": "older"}'


# ---------------------------------------------------------------- helpers and fixtures


def make_fake_checkpoint(folder: Path) -> Path:
    """A folder that passes every pre-check; its export is replaced in these tests."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(GPT2_CONFIG))
    (folder / "model.safetensors").write_bytes(GPT2_WEIGHTS)
    (folder / "vocab.json").write_text('{"a": 0, "b": 1}')
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def write_config(folder: Path, config: dict, weights: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if weights:
        (folder / "model.safetensors").write_bytes(GPT2_WEIGHTS)
        (folder / "vocab.json").write_text('{"a": 0}')
        (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def user_folder(folder: Path) -> Path:
    """Someone's files: a text, binary data, a subfolder and a hidden file."""
    (folder / "thesis").mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("do not lose me\n")
    (folder / "photo.jpg").write_bytes(bytes(range(256)) * 4)
    (folder / "thesis" / "chapter1.md").write_text("# One\n")
    (folder / ".env").write_text("SECRET=1\n")
    return folder


def snapshot(root: Path) -> dict[str, object]:
    """Every path under ``root`` (links not followed) with its bytes, link target or 'dir'."""
    seen: dict[str, object] = {}
    for top, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(top) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                seen[key] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                seen[key] = "dir"
            else:
                seen[key] = path.read_bytes()
    return seen


def one_sentence(result, *words: str, code: int = 1) -> str:
    """The exit code, no traceback, and a last stderr line that is the one ``Error:`` sentence."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert errors[0].endswith("."), errors[0]
    for word in words:
        assert word.lower() in errors[0].lower(), errors[0]
    return errors[0]


def assert_nothing_left(out: Path) -> None:
    """No bundle, and no hidden staging or swap folder beside where it would have been."""
    assert not out.exists()
    name = staging.absolute(out).name
    parent = staging.absolute(out).parent
    if parent.exists():
        leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]
        assert leftovers == []


@pytest.fixture
def fake_ckpt(tmp_path: Path) -> Path:
    return make_fake_checkpoint(tmp_path / "ckpt")


@pytest.fixture
def export_spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the first slow step (Optimum's export) with a recorder that fails if reached."""
    calls: list[Path] = []

    def export_onnx(checkpoint: Path, work_dir: Path, opset=None) -> Path:
        calls.append(work_dir)
        raise AssertionError("the export step ran; the check should have come before it")

    monkeypatch.setattr(onnx_export, "export_onnx", export_onnx)
    return calls


def run_cli(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- sources and the hub


def test_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    out = tmp_path / "out"
    result = run_cli(str(folder), "--output", str(out))
    one_sentence(result, "not a transformers checkpoint", "config.json")
    assert_nothing_left(out)


def test_config_without_weights(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "no-weights", GPT2_CONFIG, weights=False)
    result = run_cli(str(folder), "--output", str(tmp_path / "out"))
    one_sentence(result, "no model weights")


def test_missing_local_folder(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nowhere" / "ckpt"), "--output", str(tmp_path / "out"))
    one_sentence(result, "does not exist")


BERT = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 768}
LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096}


@pytest.mark.parametrize("config, kind", [(BERT, "bert"), (LLAMA, "llama")])
def test_checkpoint_that_is_not_gpt2(tmp_path: Path, config: dict, kind: str) -> None:
    folder = write_config(tmp_path / kind, config)
    out = tmp_path / "out"
    result = run_cli(str(folder), "--output", str(out))
    one_sentence(result, f"'{kind}' model, not GPT-2")
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
        one_sentence(result, "not GPT-2")


def test_gpt2_without_lm_head(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "base", {**GPT2_CONFIG, "architectures": ["GPT2Model"]})
    one_sentence(run_cli(str(folder)), "GPT2LMHeadModel")


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
    one_sentence(result, "someone/no-such-gpt2", "neither a local folder nor a model")
    assert_nothing_left(tmp_path / "models" / "no-such-gpt2")


def test_hub_connection_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hub_raises(monkeypatch, ConnectionError("Failed to resolve huggingface.co"))
    result = run_cli("gpt2", "--output", str(tmp_path / "out"))
    one_sentence(result, "cannot reach the hugging face hub", "local checkpoint folder")
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


def test_full_hub_cache_is_one_sentence(tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    result = run_cli("someone/gpt2-big", "--output", tmp_path / "out")
    one_sentence(result, "hugging face cache", "no space left")


# ---------------------------------------------------------------- --force and data safety


def _folder_with_files(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    return user_folder(tmp / "mine"), []


def _checkpoint_parent(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    user_folder(ckpt.parent)  # the checkpoint sits among someone's files
    return ckpt.parent, []


def _checkpoint_itself(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    return ckpt, []


def _symlink_to_files(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    target = user_folder(tmp / "elsewhere")
    (tmp / "link").symlink_to(target, target_is_directory=True)
    return tmp / "link", []


def _symlink_to_bundle(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    bundle = tmp / "real-bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(BUNDLE_MANIFEST)
    (tmp / "link").symlink_to(bundle, target_is_directory=True)
    return tmp / "link", []


def _dangling_symlink(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    (tmp / "link").symlink_to(tmp / "nowhere")
    return tmp / "link", []


def _a_file(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    (tmp / "report.pdf").write_bytes(b"%PDF-1.4 precious")
    return tmp / "report.pdf", []


def _bundle_with_user_file(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    out = tmp / "bundle"
    out.mkdir()
    (out / "bundle.json").write_text(BUNDLE_MANIFEST)
    (out / "model.onnx").write_bytes(b"old graph")
    (out / "notes.txt").write_text("mine")
    return out, ["notes.txt"]


def _bundle_with_folder_named_like_a_file(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    out = tmp / "bundle"
    user_folder(out / "model.onnx")  # a folder where a bundle has a file
    (out / "bundle.json").write_text(BUNDLE_MANIFEST)
    return out, ["model.onnx"]


def _foreign_bundle_json(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    out = user_folder(tmp / "app")
    (out / "bundle.json").write_text('{"format": "webpack-bundle"}')
    return out, []


def _broken_bundle_json(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    out = tmp / "half"
    out.mkdir()
    (out / "bundle.json").write_text('{"format": "gpt2-edge-bun')
    (out / "model.onnx").write_bytes(b"graph")
    return out, []


def _only_hidden_file(tmp: Path, ckpt: Path) -> tuple[Path, list[str]]:
    out = tmp / "config"
    out.mkdir()
    (out / ".env").write_text("TOKEN=1\n")
    return out, []


FORCE_REFUSALS = {
    "folder-with-files": (_folder_with_files, "not a gpt2-edge bundle"),
    "checkpoint-parent": (_checkpoint_parent, "a folder that holds it"),
    "checkpoint-itself": (_checkpoint_itself, "the checkpoint folder itself"),
    "symlink-to-files": (_symlink_to_files, "symbolic link"),
    "symlink-to-bundle": (_symlink_to_bundle, "symbolic link"),
    "dangling-symlink": (_dangling_symlink, "symbolic link"),
    "a-file": (_a_file, "is a file"),
    "bundle-plus-user-file": (_bundle_with_user_file, "also holds notes.txt"),
    "folder-named-model.onnx": (_bundle_with_folder_named_like_a_file, "also holds model.onnx"),
    "foreign-bundle.json": (_foreign_bundle_json, "not a gpt2-edge bundle"),
    "broken-bundle.json": (_broken_bundle_json, "not a gpt2-edge bundle"),
    "only-a-hidden-file": (_only_hidden_file, "not a gpt2-edge bundle"),
}


@pytest.mark.parametrize("case", sorted(FORCE_REFUSALS))
def test_force_refuses_and_touches_nothing(
    case: str, tmp_path: Path, fake_ckpt: Path, export_spy: list[Path]
) -> None:
    make, words = FORCE_REFUSALS[case]
    out, _ = make(tmp_path, fake_ckpt)
    before = snapshot(tmp_path)
    result = run_cli(fake_ckpt, "--output", out, "--force")
    one_sentence(result, words)
    assert snapshot(tmp_path) == before  # every file, byte for byte; no hidden folder added
    assert export_spy == []  # refused before the first slow step
    # Without --force the same output must not be answered with "pass --force".
    message = one_sentence(run_cli(fake_ckpt, "--output", out), "choose another --output")
    assert "pass --force" not in message
    assert snapshot(tmp_path) == before and export_spy == []


def test_a_user_folder_that_appears_during_the_export_is_not_offered_to_force(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ExportError) as caught:
        with staging.staging(out, force=False):
            user_folder(out)  # someone's folder, created while the export ran
    assert "pass --force" not in str(caught.value) and "not replace it" in str(caught.value)
    assert (out / "notes.txt").read_text() == "do not lose me\n"


@pytest.mark.parametrize("where", [".", "..", "subdir-of-cwd/.."])
def test_force_refuses_the_working_folder(
    where: str, tmp_path: Path, fake_ckpt: Path, export_spy: list[Path], monkeypatch
) -> None:
    """`--output . --force` (or a folder holding the cwd) once deleted the user's folder."""
    cwd = user_folder(tmp_path / "project")
    (cwd / "subdir-of-cwd").mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)
    one_sentence(run_cli(fake_ckpt, "--output", where, "--force"), "current folder")
    assert snapshot(tmp_path) == before
    assert export_spy == []


def test_force_refuses_the_root_folder(fake_ckpt: Path, export_spy: list[Path]) -> None:
    one_sentence(run_cli(fake_ckpt, "--output", "/", "--force"), "root folder")
    assert export_spy == []


def test_deleted_working_folder_is_one_sentence(
    tmp_path: Path, fake_ckpt: Path, export_spy: list[Path], monkeypatch
) -> None:
    def deleted() -> str:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(os, "getcwd", deleted)  # the shell's folder was removed meanwhile
    one_sentence(run_cli(fake_ckpt, "--output", tmp_path / "out"), "cannot check the output")
    assert export_spy == []


def test_unreadable_output_parent_is_one_sentence(
    tmp_path: Path, fake_ckpt: Path, export_spy: list[Path], monkeypatch
) -> None:
    """As root a chmod does not stop anyone, so the lstat that would fail is made to fail."""
    out = tmp_path / "locked" / "out"
    real_is_symlink = Path.is_symlink

    def is_symlink(self: Path) -> bool:
        if self == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_is_symlink(self)

    monkeypatch.setattr(Path, "is_symlink", is_symlink)
    one_sentence(run_cli(fake_ckpt, "--output", out), "permission is denied", str(out))
    assert export_spy == []


def test_without_force_a_bundle_is_not_replaced(
    tmp_path: Path, fake_ckpt: Path, export_spy: list[Path]
) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "bundle.json").write_text(BUNDLE_MANIFEST)
    before = snapshot(tmp_path)
    one_sentence(run_cli(fake_ckpt, "--output", out), "already exists", "--force")
    assert snapshot(tmp_path) == before and export_spy == []


@pytest.mark.parametrize(
    "contents",
    [
        {},
        {"bundle.json": BUNDLE_MANIFEST, "model.onnx": "g", "model.onnx.data": "w"},
        {"bundle.json": BUNDLE_MANIFEST, "tokenizer.json": "{}", "genai_config.json": "{}"},
        {
            "bundle.json": BUNDLE_MANIFEST,
            ".work/fp32/model.onnx": "left by a killed export",
            f".work/{staging.MARKER}": staging.MARKER_TEXT,  # the export's own: marked
        },
    ],
    ids=["empty", "bundle", "bundle-genai", "bundle-with-staging-leftover"],
)
def test_force_replaces_a_bundle_or_an_empty_folder(tmp_path: Path, contents: dict) -> None:
    """The positive side: what --force may replace is replaced, and nothing else is left."""
    out = tmp_path / "bundle"
    out.mkdir()
    for name, text in contents.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    staging.check_output(out, force=True)
    with staging.staging(out, force=True) as tmp:
        (tmp / "bundle.json").write_text('{"format": "gpt2-edge-bundle", "name": "new"}')
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json"]
    assert json.loads((out / "bundle.json").read_text())["name"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no .old-* or .partial-*


def test_user_files_added_during_the_export_are_kept(tmp_path: Path) -> None:
    """The check runs again at the swap: the export can take minutes."""
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "bundle.json").write_text(BUNDLE_MANIFEST)
    with pytest.raises(ExportError, match="also holds draft.txt"):
        with staging.staging(out, force=True) as tmp:
            (tmp / "bundle.json").write_text(BUNDLE_MANIFEST)
            (out / "draft.txt").write_text("written while the export ran")
    assert (out / "draft.txt").read_text() == "written while the export ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_output_inside_the_checkpoint_leaves_the_checkpoint_alone(
    tmp_path: Path, fake_ckpt: Path, monkeypatch
) -> None:
    """Writing a new folder inside the checkpoint deletes nothing, so it is allowed."""
    before = snapshot(fake_ckpt)
    staging.check_output(fake_ckpt / "onnx", force=True, checkpoint=fake_ckpt)
    assert snapshot(fake_ckpt) == before


def test_default_output_exists(tmp_path: Path, fake_ckpt: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "ckpt-int8").mkdir(parents=True)
    result = run_cli(str(fake_ckpt), "--quantize")
    one_sentence(result, "models/ckpt-int8", "already exists", "pass --force")


def test_output_under_a_file(tmp_path: Path, fake_ckpt: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli(str(fake_ckpt), "--output", str(blocker / "bundle"))
    one_sentence(result, "cannot write the bundle", "a part of the path is a file, not a folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_parent(tmp_path: Path, fake_ckpt: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        result = run_cli(str(fake_ckpt), "--output", str(parent / "bundle"))
        one_sentence(result, "permission")
    finally:
        parent.chmod(0o700)


# ---------------------------------------------------------------- a step that fails


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


def test_disk_full_leaves_nothing(tmp_path: Path, fake_ckpt: Path, monkeypatch) -> None:
    seen = _export_fails_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "out"
    result = run_cli(str(fake_ckpt), "--output", str(out))
    one_sentence(result, "no space left", str(out))
    assert seen and not seen[0].exists()
    assert_nothing_left(out)


def test_permission_denied_leaves_nothing(tmp_path: Path, fake_ckpt: Path, monkeypatch) -> None:
    _export_fails_with(monkeypatch, PermissionError(errno.EACCES, "Permission denied"))
    out = tmp_path / "out"
    one_sentence(run_cli(str(fake_ckpt), "--output", str(out)), "permission")
    assert_nothing_left(out)


def test_ctrl_c_leaves_nothing(tmp_path: Path, fake_ckpt: Path, monkeypatch) -> None:
    _export_fails_with(monkeypatch, KeyboardInterrupt())
    out = tmp_path / "out"
    result = run_cli(str(fake_ckpt), "--output", str(out))
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == "Interrupted; no bundle was written."
    assert_nothing_left(out)


def test_force_keeps_old_bundle_when_export_fails(tmp_path, fake_ckpt, monkeypatch) -> None:
    _export_fails_with(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "out"
    out.mkdir()
    old = '{"format": "gpt2-edge-bundle"}'  # --force replaces only a bundle
    (out / "bundle.json").write_text(old)
    one_sentence(run_cli(str(fake_ckpt), "--output", str(out), "--force"), "no space")
    assert (out / "bundle.json").read_text() == old  # the old bundle survives a failed export


def test_abandoned_partial_folder_is_removed(tmp_path: Path, fake_ckpt: Path, monkeypatch) -> None:
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
    run_cli(str(fake_ckpt), "--output", str(out))
    assert not abandoned.exists()
    assert alive.exists()


# ---------------------------------------------------------------- a full disk in a later step


def _fake_export(checkpoint: Path, work_dir: Path, opset=None) -> Path:
    work_dir.mkdir(parents=True)
    (work_dir / "model.onnx").write_bytes(b"an fp32 graph")
    return work_dir / "model.onnx"


def _fake_place(source: Path, target: Path) -> list[Path]:
    os.replace(source, target)
    return [target]


def _decode_error() -> Exception:
    from google.protobuf.message import DecodeError

    return DecodeError("Error parsing message with type 'onnx.ModelProto'")


def _wrapped_enospc() -> Exception:
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as inner:
        try:
            raise RuntimeError("quantization failed") from inner
        except RuntimeError as outer:
            return outer


# step attribute of pipeline, the exception it raises, free bytes left, words of the sentence
DISK_FAILURES = {
    "quantize-enospc": ("apply_precision", lambda: OSError(errno.ENOSPC, "No space"), None),
    "quantize-protobuf-decode": ("apply_precision", _decode_error, NEARLY_FULL),
    "quantize-failed-to-serialize": (
        "apply_precision",
        lambda: ValueError("Failed to serialize the model to model.onnx"),
        20 * 2**20,
    ),
    "quantize-ort-runtime-error": (
        "apply_precision",
        lambda: RuntimeError("[ONNXRuntimeError] : 1 : FAIL : write: No space left on device"),
        None,
    ),
    "quantize-enospc-as-cause": ("apply_precision", _wrapped_enospc, None),
    "place-model-enospc": ("place_model", lambda: OSError(errno.ENOSPC, "No space"), None),
    "tokenizer-quota": ("write_tokenizer", lambda: OSError(errno.EDQUOT, "Quota"), None),
}
WORDS = {errno.EDQUOT: "quota", errno.ENOSPC: "no space left"}


def _break_step(monkeypatch, step: str, exc: Exception, free: int | None) -> None:
    monkeypatch.setattr(onnx_export, "export_onnx", _fake_export)
    monkeypatch.setattr(pipeline, "place_model", _fake_place)

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(pipeline, step, broken)
    if free is not None:  # the file system is (nearly) full when the step fails
        import shutil

        usage = shutil.disk_usage("/")
        monkeypatch.setattr(staging.shutil, "disk_usage", lambda path: usage._replace(free=free))


@pytest.mark.parametrize("case", sorted(DISK_FAILURES))
def test_full_disk_in_a_later_step_is_one_sentence(
    case: str, tmp_path: Path, fake_ckpt: Path, monkeypatch
) -> None:
    step, make, free = DISK_FAILURES[case]
    exc = make()
    _break_step(monkeypatch, step, exc, free)
    out = tmp_path / "out"
    args = ["--quantize"] if step == "apply_precision" else []
    result = run_cli(fake_ckpt, "--output", out, "--graph", "optimum", "--no-verify", *args)
    words = "quota" if "quota" in case else "no space left"
    message = one_sentence(result, "cannot write the bundle", str(out), words)
    if free is not None:
        assert f"only {human_size(free)} free" in message
    assert_nothing_left(out)


def test_full_disk_keeps_the_old_bundle(tmp_path: Path, fake_ckpt: Path, monkeypatch) -> None:
    _break_step(monkeypatch, "apply_precision", _decode_error(), NEARLY_FULL)
    out = tmp_path / "out"
    out.mkdir()
    (out / "bundle.json").write_text(BUNDLE_MANIFEST)
    result = run_cli(fake_ckpt, "-o", out, "--graph", "optimum", "--quantize", "--force")
    one_sentence(result, "no space left")
    assert (out / "bundle.json").read_text() == BUNDLE_MANIFEST
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out"]


def test_permission_denied_in_a_later_step(tmp_path: Path, fake_ckpt: Path, monkeypatch) -> None:
    exc = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))
    _break_step(monkeypatch, "write_tokenizer", exc, None)
    out = tmp_path / "out"
    result = run_cli(fake_ckpt, "--output", out, "--graph", "optimum", "--no-verify")
    one_sentence(result, "permission is denied", str(tmp_path / "x"))
    assert_nothing_left(out)


@pytest.mark.parametrize("free", [None, NEARLY_FULL], ids=["space-left", "disk-full"])
def test_a_bug_keeps_its_traceback(
    free: int | None, tmp_path: Path, fake_ckpt: Path, monkeypatch
) -> None:
    """Only write failures become sentences: a bug (here an IndexError) stays a bug, and a
    protobuf error with plenty of space is not blamed on the disk."""
    out = tmp_path / "out"
    exc = IndexError("list index out of range") if free else _decode_error()
    _break_step(monkeypatch, "apply_precision", exc, free)
    result = run_cli(fake_ckpt, "-o", out, "--graph", "optimum", "--quantize", "--no-verify")
    assert result.exception is exc  # CliRunner caught the traceback's exception
    assert_nothing_left(out)


# ---------------------------------------------------------------- checks before the slow steps


def _safetensors_bytes() -> bytes:
    numpy_st = pytest.importorskip("safetensors.numpy")
    import numpy as np

    return numpy_st.save({"wte": np.ones((16, 8), dtype=np.float32)})


def _torch_zip(folder: Path) -> Path:
    """A zip laid out as torch.save writes it (stored, uncompressed)."""
    path = folder / "pytorch_model.bin"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00." + b"w" * 4000)
        archive.writestr("archive/data/0", bytes(range(256)) * 16)
    return path


def _truncated_safetensors(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(_safetensors_bytes()[:-10])


def _garbage_safetensors(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(b"<html>404 Not Found</html>" * 20)


def _empty_safetensors(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(b"")


def _truncated_bin(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    path = _torch_zip(ckpt)
    path.write_bytes(path.read_bytes()[:3000])


def _flipped_bin(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    path = _torch_zip(ckpt)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a member's data: the zip still opens
    path.write_bytes(bytes(data))


def _missing_shard(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model-00001-of-00002.safetensors").write_bytes(GPT2_WEIGHTS)
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _broken_tokenizer_json(ckpt: Path) -> None:
    (ckpt / "tokenizer.json").write_text('{"version": "1.0", "model": ')


def _binary_tokenizer_json(ckpt: Path) -> None:
    (ckpt / "tokenizer.json").write_bytes(b"\xff\xfe\x00garbage")


def _no_tokenizer(ckpt: Path) -> None:
    (ckpt / "vocab.json").unlink()


def _broken_vocab(ckpt: Path) -> None:
    (ckpt / "vocab.json").write_text("[1, 2")


CHECKPOINT_DAMAGE = {
    "safetensors-truncated": (_truncated_safetensors, "corrupt or truncated"),
    "safetensors-garbage": (_garbage_safetensors, "not a readable safetensors file"),
    "safetensors-empty": (_empty_safetensors, "not a readable safetensors file"),
    "bin-truncated": (_truncated_bin, "not a readable PyTorch checkpoint"),
    "bin-damaged-data": (_flipped_bin, "checksum"),
    "shard-missing": (_missing_shard, "model-00002-of-00002.safetensors"),
    "tokenizer.json-broken": (_broken_tokenizer_json, "tokenizer file is not valid"),
    "tokenizer.json-binary": (_binary_tokenizer_json, "tokenizer file is not valid"),
    "no-tokenizer": (_no_tokenizer, "has no tokenizer"),
    "vocab.json-broken": (_broken_vocab, "tokenizer files are not valid"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_fails_before_the_export(
    case: str, tmp_path: Path, fake_ckpt: Path, export_spy: list[Path]
) -> None:
    damage, words = CHECKPOINT_DAMAGE[case]
    damage(fake_ckpt)
    out = tmp_path / "out"
    one_sentence(run_cli(fake_ckpt, "--output", out), words)
    assert export_spy == []
    assert_nothing_left(out)


def _eval_text(tmp: Path, data: bytes | None) -> Path:
    path = tmp / "eval.txt"
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    return path


BAD_FLAGS = {
    "opset-5": (["--opset", "5"], "too old"),
    "opset-13": (["--opset", "13"], "opset 14 or newer"),
    "opset-99": (["--opset", "99"], "newer than this torch"),
    "eval-text-latin1": (["--eval-text", b"caf\xe9 " * 100], "not UTF-8"),
    "eval-text-short": (["--eval-text", b"Hello world."], "holds only 12 characters"),
    "eval-text-blank": (["--eval-text", b" \n\t" * 200], "holds only 0 characters"),
    "eval-text-folder": (["--eval-text", None], "is not a file"),
    "eval-text-missing": (["--eval-text", "missing"], "does not exist"),
    "ppl-increase-negative": (["--max-ppl-increase", "-0.1"], "0 or more"),
    "ppl-increase-nan": (["--max-ppl-increase", "nan"], "0 or more"),
    "greedy-above-one": (["--min-greedy-agreement", "1.5"], "fraction from 0 to 1"),
    "greedy-negative": (["--min-greedy-agreement", "-0.2"], "fraction from 0 to 1"),
    "bits-3": (["--bits", "3"], "--bits 3"),
    "target-x86": (["--target", "x86"], "x86"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flags_fail_before_the_export(
    case: str, tmp_path: Path, fake_ckpt: Path, export_spy: list[Path]
) -> None:
    args, words = BAD_FLAGS[case]
    if args[0] == "--eval-text" and args[1] != "missing":
        args = [args[0], _eval_text(tmp_path, args[1])]
    elif args[0] == "--eval-text":
        args = [args[0], tmp_path / "missing.txt"]
    out = tmp_path / "out"
    one_sentence(run_cli(fake_ckpt, "--output", out, "--quantize", *args), words)
    assert export_spy == []
    assert_nothing_left(out)


@pytest.mark.parametrize(
    "exc, opset, words",
    [
        (RuntimeError("Unsupported onnx_opset_version: 24"), 24, "--opset 24"),
        (Exception("SafetensorError: Error while deserializing header"), None, "corrupt"),
        (OSError("Unable to load weights from pytorch checkpoint file"), None, "corrupt"),
        (RuntimeError("PytorchStreamReader failed reading zip archive"), None, "corrupt"),
        (RuntimeError("shape mismatch in aten::addmm"), None, None),
        (RuntimeError("opset mentioned but no --opset given"), None, None),
    ],
)
def test_export_step_failures_the_checks_cannot_see(exc, opset, words, tmp_path: Path) -> None:
    """Damage the pre-checks cannot find (a safetensors file whose data is garbage) still ends in
    a sentence when the loader trips on it; any other failure of the step stays a bug."""
    sentence = onnx_export.export_error_sentence(exc, tmp_path, opset)
    if words is None:
        assert sentence is None
    else:
        assert sentence is not None and words in sentence and sentence.endswith(".")


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--kv-cache", "int3", "--quantize"], ["unknown --kv-cache", "auto"]),
        (["--kv-cache", "float16"], ["--quantize", "float32"]),
        (["--kv-cache", "float32", "--dtype", "fp16"], ["fp16", "float16"]),
        (["--kv-cache", "float16", "--quantize", "--graph", "optimum"], ["fused"]),
    ],
    ids=["unknown", "fp32-weights", "fp16-weights", "optimum-graph"],
)
def test_kv_cache_flags_that_cannot_be_honoured(
    tmp_path: Path, flags: list[str], words: list[str]
) -> None:
    out = tmp_path / "out"
    result = run_cli(tmp_path / "no-such-checkpoint", "-o", out, *flags)
    one_sentence(result, *words)
    assert_nothing_left(out)


# ---------------------------------------------------------------- options an export would ignore


@pytest.fixture
def gate_text(tmp_path: Path) -> Path:
    path = tmp_path / "gate.txt"
    path.write_text("It was a bright cold day in April, and the clocks were striking. " * 8)
    return path


# Each given for an export that would not read it: refused, naming the flag (default values too:
# a flag typed on the command line is a request).
IGNORED_OPTIONS = {
    "target-fp32": (["--target", "avx512", "--no-verify"], ["--target", "int8", "fp32"]),
    "target-default-fp32": (["--target", "portable"], ["--target", "fp32"]),
    "target-int4": (["--bits", "4", "--target", "avx512"], ["--target", "int4"]),
    "target-fp16": (["--dtype", "fp16", "--target", "auto"], ["--target", "fp16"]),
    "accuracy-level-fp32": (["--accuracy-level", "2"], ["--accuracy-level", "int4"]),
    "accuracy-level-int8": (["-q", "--accuracy-level", "0"], ["--accuracy-level", "int8"]),
    "block-size-fp16": (["--dtype", "fp16", "--block-size", "64"], ["--block-size", "fp16"]),
    "eval-text-no-verify": (["-q", "--no-verify", "--eval-text", "GATE"], ["--no-verify"]),
    "ppl-no-verify": (["--bits", "4", "--no-verify", "--max-ppl-increase", "0.1"], ["skips"]),
    "greedy-no-verify": (["--dtype", "fp16", "--no-verify", "--min-greedy-agreement", "0"], []),
    "eval-text-fp32": (["--eval-text", "GATE"], ["--eval-text", "quality gate", "fp32"]),
    "ppl-fp32": (["--max-ppl-increase", "0.1"], ["--max-ppl-increase", "quality gate"]),
}


@pytest.mark.parametrize("case", sorted(IGNORED_OPTIONS))
def test_options_the_export_would_ignore_are_refused(
    case: str, tmp_path: Path, fake_ckpt: Path, export_spy: list[Path], gate_text: Path
) -> None:
    args, words = IGNORED_OPTIONS[case]
    args = [gate_text if arg == "GATE" else arg for arg in args]
    out = tmp_path / "out"
    one_sentence(run_cli(fake_ckpt, "--output", out, *args), *words)
    assert export_spy == []
    assert_nothing_left(out)


# Options that do apply, and --kv-cache asking for the cache the precision has anyway: the plan
# accepts them, so the run reaches the export step (the spy).
APPLYING_OPTIONS = {
    "fp16-optimum-kv-float16": ["--dtype", "fp16", "--graph", "optimum", "--kv-cache", "float16"],
    "fp16-fused-kv-float16": ["--dtype", "fp16", "--kv-cache", "float16"],
    "fp32-kv-float32": ["--kv-cache", "float32"],
    "int8-optimum-kv-float32": ["-q", "--graph", "optimum", "--kv-cache", "float32"],
    "int8-fused-kv-float16": ["-q", "--kv-cache", "float16"],
    "int8-target-gate": ["-q", "--target", "avx512", "--eval-text", "GATE"],
    "int4-options": ["--bits", "4", "--accuracy-level", "0", "--block-size", "64"],
    "fp16-gate": ["--dtype", "fp16", "--min-greedy-agreement", "0", "--max-ppl-increase", "0.1"],
}


@pytest.mark.parametrize("case", sorted(APPLYING_OPTIONS))
def test_options_that_apply_are_accepted(
    case: str, tmp_path: Path, fake_ckpt: Path, export_spy: list[Path], gate_text: Path
) -> None:
    args = [gate_text if arg == "GATE" else arg for arg in APPLYING_OPTIONS[case]]
    result = run_cli(fake_ckpt, "--output", tmp_path / "out", *args)
    assert "Error: " not in result.stderr, result.stderr
    assert len(export_spy) == 1  # past every check, at the first slow step


def test_kv_cache_help_says_when_auto_is_float16() -> None:
    """auto gives float16 only on the fused graph for quantized bundles, and always for fp16."""
    import typer.main

    [param] = [p for p in typer.main.get_command(app).params if p.name == "kv_cache"]
    words = " ".join((param.help or "").split())
    assert "quantized bundles (--quantize, --bits) on the fused graph" in words, words
    assert "float32 for them on --graph optimum" in words, words
    assert "fp16 bundle's cache is always float16" in words, words


# ---------------------------------------------------------------- start-up: Ctrl-C, the extra

INTERRUPT_AT = """
import importlib.abc, os, signal, sys
class Interrupt(importlib.abc.MetaPathFinder):
    fired = False
    def find_spec(self, name, path=None, target=None):
        if name == {target!r} and not Interrupt.fired:
            Interrupt.fired = True
            sys.stderr.write("ctrl-c while importing " + name + "\\n")
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, as the terminal sends it
        return None
sys.meta_path.insert(0, Interrupt())
from gpt2_edge.exporter.cli import main
main({args!r})
"""


@pytest.mark.parametrize(
    "target",
    [
        "typer",
        "gpt2_edge.runtime.cli.errors",
        "gpt2_edge.exporter.command",
        "onnx",
        "onnxruntime",
        "safetensors",  # the pre-checks
        "optimum.exporters.onnx",  # the first slow step: inside the staging folder
    ],
)
def test_ctrl_c_at_any_import_exits_130(target: str, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    ckpt = make_fake_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "out"
    code = INTERRUPT_AT.format(target=target, args=[str(ckpt), "-o", str(out), "--no-verify"])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"ctrl-c while importing {target}" in proc.stderr  # the interrupt did happen
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_nothing_left(out)


def test_importing_the_entry_point_loads_nothing_heavy() -> None:
    """The console script imports cli.py before main's guard exists: it must be instant."""
    code = (
        "import sys\n"
        "from gpt2_edge.exporter.cli import main\n"
        "heavy = ('typer', 'rich', 'onnx', 'onnxruntime', 'numpy', 'torch', 'gpt2_edge.runtime')\n"
        "print([m for m in sys.modules if m.startswith(heavy)])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, Block())
from gpt2_edge.exporter.cli import main
main({args!r})
"""
BASE_INSTALL = ("torch", "transformers", "optimum", "onnx")


@pytest.mark.parametrize(
    "blocked, args",
    [
        (BASE_INSTALL, ["--help"]),
        (BASE_INSTALL, ["gpt2", "-o", "OUT"]),
        (BASE_INSTALL, ["--version"]),
        (("onnx",), ["--help"]),
        (("torch",), ["CKPT", "-o", "OUT"]),
    ],
    ids=["base-help", "base-export", "base-version", "no-onnx", "no-torch"],
)
def test_without_the_export_extra(blocked: tuple[str, ...], args: list[str], tmp_path) -> None:
    ckpt = make_fake_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else str(ckpt) if a == "CKPT" else a for a in args]
    code = BLOCK.format(blocked=set(blocked), args=args)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: gpt2-export needs the export extra")
    assert lines[0].endswith("pip install 'gpt2-edge[export]'.")
    assert all(name in lines[0] for name in blocked)
    assert not out.exists()


# ---------------------------------------------------------------- usage errors, --version


@pytest.mark.parametrize(
    "args",
    [
        ["--frobnicate"],
        ["--bits", "four"],
        ["--output"],
        ["gpt2", "gpt2-medium"],
        ["--max-ppl-increase", "lots"],
    ],
    ids=["unknown-flag", "not-an-int", "missing-value", "extra-argument", "not-a-float"],
)
def test_usage_errors_are_one_line(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "--help" in lines[0] and not set("╭╰│─") & set(lines[0])


def test_usage_error_through_the_entry_point() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gpt2_edge.exporter", "--bits", "four"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_version() -> None:
    from gpt2_edge.runtime.cli.errors import package_version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"gpt2-export {package_version()}"


# ---------------------------------------------------------------- sizes in the unit that fits


@pytest.mark.parametrize(
    "size, text",
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (6_000, "5.9 KiB"),
        (20 * 2**20, "20.0 MiB"),
        (int(1.5 * 2**30), "1.5 GiB"),
        (3 * 2**40, "3.0 TiB"),
        (5000 * 2**40, "5,000.0 TiB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_free_space_error_uses_the_unit_that_fits(
    tmp_path: Path, fake_ckpt: Path, export_spy: list[Path], monkeypatch
) -> None:
    import shutil

    from gpt2_edge.exporter.source import Source

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(staging.shutil, "disk_usage", lambda p: usage._replace(free=20 * 2**20))
    monkeypatch.setattr(Source, "weight_bytes", lambda self: 2**30)
    message = one_sentence(run_cli(fake_ckpt, "-o", tmp_path / "out"), "not enough free space")
    assert "20.0 MiB is free" in message and "2.1 GiB" in message
    assert export_spy == []
    assert_nothing_left(tmp_path / "out")


def test_summary_sizes_in_the_unit_that_fits(tmp_path: Path, capsys) -> None:
    from gpt2_edge.exporter.command import print_summary

    files = {"model.onnx": {"size": 6_000}, "model.onnx.data": {"size": 3 * 2**30}}
    manifest = {"files": files, "precision": {"dtype": "float32"}, "verification": {}}
    (tmp_path / "bundle.json").write_text(json.dumps(manifest))
    print_summary(tmp_path)
    out = capsys.readouterr().out
    assert "5.9 KiB" in out and "3.0 GiB" in out and "0.0 MiB" not in out


# ---------------------------------------------------------------- the gate reads more than ppl

INT4_TRAINED = {  # the shipped int4 export of the trained fixture, as measured at export
    "max_ppl_increase": 0.05,
    "min_greedy_agreement": 0.25,
    "builtin": {
        "ref_perplexity": 4708.06,
        "perplexity": 4682.19,
        "ppl_increase": -0.0055,
        "top1_agreement": 0.9362,
        "max_logit_diff": 3.09,
        "mean_logit_diff": 0.234,
        "tokens": 2902,
    },
    "greedy": {
        "greedy_exact": 0.25,
        "greedy_prefix_agreement": 0.4583,
        "greedy_prompts": 4,
        "greedy_new_tokens": 24,
    },
}


def test_summary_states_the_gate_figures_in_words() -> None:
    from gpt2_edge.exporter.summary import describe_quality

    rows = dict(describe_quality(INT4_TRAINED))
    assert rows["greedy vs fp32"].startswith("1 of 4 prompts give the same 24 tokens")
    assert "first 46% of tokens match (limit 25%)" in rows["greedy vs fp32"]
    assert rows["logits vs fp32 (built-in text)"] == "differ by 3.09 at most, 0.234 on average"
    assert rows["verdict"].startswith("differs from fp32: greedy text departs after about 11")


@pytest.mark.parametrize(
    "min_greedy, passes", [(0.0, True), (0.25, True), (0.45, True), (0.5, False), (1.0, False)]
)
def test_greedy_agreement_gates(min_greedy: float, passes: bool) -> None:
    report = {k: dict(v) if isinstance(v, dict) else v for k, v in INT4_TRAINED.items()}
    if passes:
        quality.gate_report(report, 0.05, "The int4 export", min_greedy)
    else:
        with pytest.raises(ExportError, match=r"follows fp32 for only 46% of its tokens"):
            quality.gate_report(report, 0.05, "The int4 export", min_greedy)


@pytest.fixture(scope="module")
def short_gate_text() -> Iterator[None]:
    """The gate's built-in text cut to one window, as tests/test_export_precisions.py does."""
    text = quality.builtin_text()[:1500]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quality, "builtin_text", lambda: text)
        yield


@pytest.mark.export
def test_int4_export_summary_reports_the_gate(
    tiny_checkpoint: Path, tmp_path: Path, short_gate_text: None
) -> None:
    out = tmp_path / "int4"
    args = [str(tiny_checkpoint), "-o", str(out), "--bits", "4"]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})  # no wrapped table cells
    assert result.exit_code == 0, result.output
    greedy = json.loads((out / "bundle.json").read_text())["verification"]["quality"]["greedy"]
    same = round(greedy["greedy_exact"] * 4)
    text = " ".join(result.stdout.split())  # the table may wrap
    assert f"{same} of 4 prompts give the same 24 tokens" in text
    assert f"the first {greedy['greedy_prefix_agreement']:.0%} of tokens match" in text
    assert "verdict" in text and "logits vs fp32" in text
    assert re.search(r"\d\.\d (KiB|MiB)", text)  # sizes in the unit that fits


@pytest.mark.export
def test_greedy_gate_failure_leaves_no_bundle(
    tiny_checkpoint: Path, tmp_path: Path, short_gate_text: None
) -> None:
    """int4 of the tiny model follows fp32 for ~72% of the greedy tokens; demand all of them."""
    out = tmp_path / "gated"
    args = [str(tiny_checkpoint), "-o", str(out), "--bits", "4", "--min-greedy-agreement", "1"]
    result = runner.invoke(app, args)
    one_sentence(result, "The int4 export's greedy text follows fp32 for only", "required 100%")
    assert_nothing_left(out)
