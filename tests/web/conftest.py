"""The browser runtime's tests run on the bundles gpt2-export ships (the trained fixture in fp32
and int8 on the fused graph, fp32 on Optimum's graph: ``shipped_bundles``, exported once per
session and shared with the other suites), and hold the JavaScript runtime to the Python
runtime's figures on them (``web_support.build_reference``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from web_support import build_reference


@pytest.fixture(scope="session")
def web_bundles(shipped_bundles) -> dict[str, Path]:
    return {
        "fp32": shipped_bundles["fp32"],
        "int8": shipped_bundles["int8"],
        "optimum": shipped_bundles["optimum-fp32"],
    }


@pytest.fixture(scope="session")
def web_reference(
    web_bundles: dict, wikitext_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference figures as a JSON file (the Node tests read it); its path."""
    folder = tmp_path_factory.mktemp("web-reference")
    path = folder / "reference.json"
    path.write_text(json.dumps(build_reference(web_bundles, wikitext_dir, folder)))
    return path
