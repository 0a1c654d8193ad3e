"""A loaded model's life as a user sees it: ``with load(path) as gen:`` closes it, a closed
generator says so in one sentence, and ``gpt2-eval`` picks its bundle as the other commands do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gpt2_edge.runtime import EdgeError, load
from gpt2_edge.runtime.cli.evaluate import app as eval_app
from typer.testing import CliRunner


def test_a_generator_closes_and_says_so(shipped_bundles) -> None:
    with load(shipped_bundles["int8"], provider="cpu", threads=1) as gen:
        text = gen.generate("The city", max_new_tokens=4, temperature=0).text
        assert text
    with pytest.raises(EdgeError, match="This generator is closed"):
        gen.generate("The city", max_new_tokens=4, temperature=0)
    gen.close()  # closing twice is harmless
    again = load(shipped_bundles["int8"], provider="cpu", threads=1)
    assert again.generate("The city", max_new_tokens=4, temperature=0).text == text
    again.close()


def test_gpt2_eval_picks_the_bundle_in_models_as_gpt2_generate_does(
    shipped_bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wikitext_dir: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(shipped_bundles["fp32"], tmp_path / "models" / "tiny-fp32")
    shutil.copytree(shipped_bundles["int8"], tmp_path / "models" / "tiny-int8")
    text = tmp_path / "text.txt"
    text.write_text((wikitext_dir / "test.txt").read_text(encoding="utf-8")[:3000])
    runner = CliRunner()
    picked = runner.invoke(eval_app, ["--text", str(text), "--json", "--max-tokens", "300"])
    assert picked.exit_code == 0, picked.output
    assert "Using models/tiny-int8 (int8), one of the 2 bundles" in picked.stderr
    named = runner.invoke(
        eval_app, ["--text", str(text), "--json", "--max-tokens", "300", "-m", "tiny-fp32"]
    )
    assert named.exit_code == 0, named.output
    picked_ppl = json.loads(picked.stdout)["perplexity"]
    named_ppl = json.loads(named.stdout)["perplexity"]
    assert json.loads(named.stdout)["model"] == "models/tiny-fp32"
    assert picked_ppl == pytest.approx(named_ppl, rel=0.05)  # int8 against fp32, the same text
    wrong = runner.invoke(eval_app, ["--text", str(text), "-m", "tiny-fp16"])
    assert wrong.exit_code == 1 and "holds tiny-fp32, tiny-int8" in wrong.stderr
