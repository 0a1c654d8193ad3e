"""The browser runtime's tests share the trained fixture's bundles, exported once per session,
and the Python runtime's figures on them (``web_support.build_reference``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.tiny_models import HAS_EXPORT_EXTRA
from web_support import build_reference, export_bundles


@pytest.fixture(scope="session")
def web_bundles(trained_fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not HAS_EXPORT_EXTRA:
        pytest.skip("exporting the fixture needs the export extra: pip install '.[export]'")
    return export_bundles(trained_fixture_dir, tmp_path_factory.mktemp("web-bundles"))


@pytest.fixture(scope="session")
def web_reference(
    web_bundles: dict, wikitext_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The reference figures as a JSON file (the Node tests read it); its path."""
    folder = tmp_path_factory.mktemp("web-reference")
    path = folder / "reference.json"
    path.write_text(json.dumps(build_reference(web_bundles, wikitext_dir, folder)))
    return path
