"""export_bundle from Python: an option of the wrong type, or one that no export has, is one
ExportError sentence before any work (a number for a path, a misspelt option had raised
TypeError from deep inside)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpt2_edge.exporter import ExportError, export_bundle


@pytest.mark.parametrize(
    ("model", "options", "says"),
    [
        (5, {}, "model must be a string, got 5."),
        ("ckpt", {"output": 5}, "output must be a path or None, got 5."),
        ("ckpt", {"quantise": True}, "Unknown option 'quantise'; the options are model,"),
        ("ckpt", {"bits": "8"}, "bits must be an integer, got '8'."),
        ("ckpt", {"force": 1}, "force must be True or False, got 1."),
        ("ckpt", {"max_ppl_increase": "0.1"}, "max_ppl_increase must be a number or None"),
        ("ckpt", {"eval_text": 3.5}, "eval_text must be a path or None, got 3.5."),
    ],
)
def test_a_wrong_argument_is_one_sentence(
    tmp_path: Path, model: object, options: dict, says: str
) -> None:
    with pytest.raises(ExportError) as caught:
        export_bundle(model, **{"output": tmp_path / "out", **options}, progress=False)  # type: ignore[arg-type]
    assert str(caught.value).startswith(says), caught.value
    assert list(tmp_path.iterdir()) == []
