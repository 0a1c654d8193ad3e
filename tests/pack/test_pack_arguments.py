"""make_pack from Python: an argument of the wrong type is one EdgeError sentence (a number
for the bundle had raised TypeError, None for the platform AttributeError)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gpt2_edge.pack", reason="gpt2_edge.pack is not installed: pip install -e .")

from gpt2_edge.pack import make_pack  # noqa: E402
from gpt2_edge.runtime import EdgeError  # noqa: E402


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((5, "linux_x86_64"), "bundle must be a folder path (str or os.PathLike), got int."),
        (("b", None), "platform must be a string, got NoneType."),
        (("b", "linux_x86_64", 3.11), "python must be a string, got float."),
    ],
)
def test_a_wrong_argument_is_one_sentence(tmp_path: Path, args: tuple, says: str) -> None:
    with pytest.raises(EdgeError) as caught:
        make_pack(*args, output=tmp_path / "o")
    assert str(caught.value) == says


def test_an_output_that_is_no_path(tmp_path: Path) -> None:
    with pytest.raises(EdgeError, match="output must be a folder path"):
        make_pack(tmp_path, "linux_x86_64", output=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_manifest_that_is_no_file_is_named(tmp_path: Path, kind: str) -> None:
    import os

    bundle = tmp_path / "b"
    bundle.mkdir()
    if kind == "fifo":
        os.mkfifo(bundle / "bundle.json")
    elif kind == "folder":
        (bundle / "bundle.json").mkdir()
    else:
        (bundle / "bundle.json").symlink_to("/dev/zero")
    with pytest.raises(EdgeError, match=r"bundle\.json is (a folder|not a regular file)"):
        make_pack(bundle, "linux_x86_64", output=tmp_path / "o")
