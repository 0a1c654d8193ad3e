"""The JavaScript runtime (web/) under Node's test runner: its unit tests, and its runs of the
trained fixture's bundles held to the Python runtime's figures (``web_support.build_reference``).

Skipped with a reason where node or web/node_modules is missing (``.ci/run`` installs them with
``npm ci --ignore-scripts``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from web_support import NODE, WEB, need_node

pytestmark = pytest.mark.skipif(need_node() is not None, reason=need_node() or "")


def node_test(*files: str, env: dict[str, str] | None = None) -> str:
    """Run ``node --test`` on ``files`` under web/test; the output (TAP), failing the test if
    any JavaScript test failed or was skipped where it should have run."""
    paths = [str(WEB / "test" / f) for f in files]
    done = subprocess.run(
        [str(NODE), "--test", "--test-reporter=tap", *paths],
        cwd=WEB,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return done.stdout


def test_units() -> None:
    """Sampling filters, the seeded draw, settings, stop strings, SHA-256: no model needed."""
    out = node_test("sampling.test.mjs", "stop.test.mjs", "files.test.mjs")
    assert "# fail 0" in out and "# skipped 0" in out


def test_against_the_python_runtime(web_reference: Path) -> None:
    """Tokenizer, greedy tokens, perplexity, seeds, stop strings, EOS and refusals on the
    fixture's bundles."""
    out = node_test(
        "tokenizer.test.mjs",
        "runtime.test.mjs",
        "refusals.test.mjs",
        env={"GPT2_EDGE_WEB_REFERENCE": str(web_reference)},
    )
    assert "# fail 0" in out and "# skipped 0" in out, out[-3000:]
