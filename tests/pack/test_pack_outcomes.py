"""gpt2-pack ends either with a pack and its path on stdout (exit 0), or with one sentence and
nothing left behind: not the pack when its path cannot be printed (a full stdout had exited 1
with the pack written, so that a retry met "already exists"), not the folders made above the
output on Ctrl-C, and a full disk under pip in words ("pip could not download ...: No space
left on device", not "Exception:")."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("gpt2_edge.pack", reason="gpt2_edge.pack is not installed: pip install -e .")

from gpt2_edge.pack.wheels import pip_failure  # noqa: E402

# gpt2-pack with pip faked (a tiny wheel for each) and, with FAIL set, an interrupt mid-copy.
PACK = textwrap.dedent(
    """
    import os, sys, zipfile
    from gpt2_edge.pack import cli, make

    def wheel(dest, name):
        path = dest / f"{name}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{name}/__init__.py", "")
        return path

    def download(target, own, dest):
        for name in ("onnxruntime", "numpy", "pip"):
            wheel(dest, name)

    def interrupted(*args):
        raise KeyboardInterrupt

    make.own_wheel = lambda dest: wheel(dest, "gpt2_edge")
    make.download_dependencies = download
    if os.environ.get("FAIL"):
        make.copy_bundle = interrupted
    sys.argv[0] = "gpt2-pack"
    cli.main()
    """
)


@pytest.fixture(scope="module")
def bundle(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="building the fused test graph needs onnx")
    from support.fused_bundle import build_fused_bundle

    folder = tmp_path_factory.mktemp("pack") / "tiny"
    return build_fused_bundle(folder, gpt2_tokenizer_dir / "tokenizer.json")


def pack(bundle: Path, out: Path, stdout=subprocess.PIPE, fail: bool = False):
    env = {**__import__("os").environ, **({"FAIL": "1"} if fail else {})}
    command = [sys.executable, "-c", PACK, str(bundle), "--platform", "linux_x86_64"]
    return subprocess.run(
        [*command, "-o", str(out)], stdout=stdout, stderr=subprocess.PIPE, text=True, env=env,
        timeout=120,
    )  # fmt: skip


def test_a_full_stdout_leaves_no_pack_and_a_retry_works(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    with open("/dev/full", "w") as full:
        done = pack(bundle, out, stdout=full)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: Cannot write to standard output (No space left on device)."
    )
    assert list(tmp_path.iterdir()) == []
    again = pack(bundle, out)
    assert again.returncode == 0 and again.stdout == f"{out}\n", again.stderr
    assert (out / "install.sh").is_file()


def test_ctrl_c_removes_the_folders_made_for_the_output(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    done = pack(bundle, tmp_path / "there" / "new" / "deeper" / "o", fail=True)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["there"]
    assert list((tmp_path / "there").iterdir()) == []


PIP_FULL_DISK = """\
ERROR: Exception:
Traceback (most recent call last):
  File "pip/_internal/cli/base_command.py", line 180, in exc_logging_wrapper
    status = run_func(*args)
OSError: [Errno 28] No space left on device: '/tmp/x/wheels/numpy-2.4.6.whl'
"""


def test_a_full_disk_under_pip_is_said_in_words() -> None:
    assert pip_failure(PIP_FULL_DISK, "download the wheels", None) == (
        "pip could not download the wheels: No space left on device."
    )
