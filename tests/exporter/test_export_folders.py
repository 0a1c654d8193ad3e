"""gpt2-export removes only folders it made and marked as its own, and no signal stops the
removal half done: a user's folder named like an abandoned staging folder stays, a user's
file in a bundle's ``.work`` keeps the bundle from being replaced, the folders made above the
output go again on failure, and a second SIGTERM on the way to the cleanup is only recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gpt2_edge.exporter import ExportError
from gpt2_edge.exporter.writing import staging

MANIFEST = '{"format": "gpt2-edge-bundle", "name": "older"}'


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_users_folder_named_like_an_abandoned_one_stays(tmp_path: Path) -> None:
    mine = tmp_path / f".out.partial-{dead_pid()}-notes"
    mine.mkdir()
    (mine / "thesis.md").write_text("mine")
    with staging.staging(tmp_path / "out", force=False) as tmp:
        (tmp / "bundle.json").write_text(MANIFEST)
    assert (mine / "thesis.md").read_text() == "mine"
    assert (tmp_path / "out" / "bundle.json").exists()


def test_an_abandoned_marked_folder_goes_and_the_bundle_holds_no_mark(tmp_path: Path) -> None:
    abandoned = tmp_path / f".out.partial-{dead_pid()}-abc"
    abandoned.mkdir()
    staging.mark(abandoned)
    (abandoned / "model.onnx").write_bytes(b"half")
    with staging.staging(tmp_path / "out", force=False) as tmp:
        assert staging.is_marked(tmp)
        (tmp / "bundle.json").write_text(MANIFEST)
    assert not abandoned.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bundle.json"]


def test_force_keeps_a_users_file_in_a_bundles_work_folder(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    (out / ".work").mkdir(parents=True)
    (out / "bundle.json").write_text(MANIFEST)
    (out / ".work" / "draft.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"also holds \.work"):
        staging.check_output(out, force=True)
    assert (out / ".work" / "draft.txt").read_text() == "mine"


def test_force_replaces_a_bundle_with_the_exports_own_work_folder(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    (out / ".work" / "fp32").mkdir(parents=True)
    staging.mark(out / ".work")
    (out / "bundle.json").write_text(MANIFEST)
    staging.check_output(out, force=True)
    with staging.staging(out, force=True) as tmp:
        (tmp / "bundle.json").write_text('{"format": "gpt2-edge-bundle", "name": "new"}')
    assert json.loads((out / "bundle.json").read_text())["name"] == "new"
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json"]


@pytest.mark.parametrize("error", [ExportError("no"), KeyboardInterrupt()], ids=repr)
def test_the_folders_made_above_the_output_go_again(tmp_path: Path, error: BaseException) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "kept.txt").write_text("there before")
    out = tmp_path / "a" / "b" / "c" / "out"
    with pytest.raises(type(error)):
        with staging.staging(out, force=False) as tmp:
            (tmp / "model.onnx").write_bytes(b"half")
            raise error
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["kept.txt"]


SECOND_SIGNAL = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from gpt2_edge.exporter.writing import staging

    real = staging.signals_ignored

    def late(*signums):  # a second kill as the cleanup starts, before it shields itself
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*signums)

    staging.signals_ignored = late
    out = Path(sys.argv[1]) / "made" / "out"
    try:
        with staging.staging(out, force=False) as tmp:
            (tmp / "model.onnx").write_bytes(b"w" * (1 << 20))
            os.kill(os.getpid(), signal.SIGTERM)
    except KeyboardInterrupt as exc:
        print("interrupted", getattr(exc, "signum", None))
        sys.exit(143)
    """
)


def test_a_second_sigterm_on_the_way_to_the_cleanup_is_only_recorded(tmp_path: Path) -> None:
    """The issue's two SIGTERMs 5 ms apart, made deterministic: the second lands just as the
    cleanup starts. Before, the default handler was back by then and the process died (-15),
    leaving the partial folder and the folder made above it."""
    done = subprocess.run(
        [sys.executable, "-c", SECOND_SIGNAL, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (143, f"interrupted {int(signal.SIGTERM)}")
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []
