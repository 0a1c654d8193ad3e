"""Shared fixtures: paths into ../shared, tiny random GPT-2 checkpoints, and the bundles
``gpt2-export`` ships (the trained fixture at each precision, exported once per session).

Everything that needs torch/transformers/optimum skips when the export extra is missing, and
everything that needs ../shared skips with a reason when that folder is absent. Helpers that test
modules import live in ``tests/support/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.shipped import ShippedBundles
from support.tiny_models import HAS_EXPORT_EXTRA, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
NEEDS_EXPORT_EXTRA = "needs the export extra: pip install '.[export]'"
SHIPPED_KEY = pytest.StashKey[ShippedBundles]()
# Marked groups that need machinery besides Python (qemu-user and mmdebstrap, chromium, a writable
# memory cgroup) and skip, with the reason, where it is missing. With GPT2_EDGE_GROUP_REPORT set
# to a file, each group's outcomes are written there (.ci/run checks that each group ran).
GROUPS = ("emulation", "browser", "cgroup")
GROUP_REPORT = "GPT2_EDGE_GROUP_REPORT"
_group_outcomes: dict[str, dict[str, str]] = {group: {} for group in GROUPS}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_export = pytest.mark.skip(reason=NEEDS_EXPORT_EXTRA)
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "export" in item.keywords and not HAS_EXPORT_EXTRA:
            item.add_marker(skip_export)


@pytest.fixture(scope="session", autouse=True)
def _verified_records_in_a_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The runtime remembers hashed files under ~/.cache (``runtime/contract/verified.py``); tests
    keep those records (and every subprocess's, through the environment) in a folder of their
    own."""
    os.environ["GPT2_EDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("verified-records"))


def _absent(path: Path) -> str | None:
    """Why ``path`` cannot be used here, or None."""
    return None if path.exists() else f"{path} is absent (../shared is not beside the checkout)"


def _need(path: Path) -> Path:
    reason = _absent(path)
    if reason:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    """The real GPT-2 BPE files (vocab.json, merges.txt, tokenizer.json)."""
    return _need(SHARED / "gpt2-tokenizer")


@pytest.fixture(scope="session")
def gpt2_vocabulary(gpt2_tokenizer_dir: Path) -> int:
    """GPT-2's vocabulary size, for tests whose sizes, token ids or messages assume the tiny
    checkpoint has it: it does only with ../shared (without, ``make_checkpoint`` trains a BPE of a
    few hundred tokens of its own), so they skip, with the reason, without ../shared."""
    return 50257


@pytest.fixture(scope="session")
def trained_fixture_dir() -> Path:
    """The small GPT-2 trained on WikiText-2 (4 layers, 128 wide, real vocabulary)."""
    return _need(SHARED / "fixtures" / "gpt2-wikitext-tiny")


@pytest.fixture(scope="session")
def wikitext_dir() -> Path:
    return _need(SHARED / "data" / "wikitext-2")


@pytest.fixture(scope="session")
def shipped_bundles(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ShippedBundles:
    """The trained fixture as ``gpt2-export`` ships it: ``shipped_bundles["int8"]`` is the
    folder of ``gpt2-export FIXTURE --quantize`` (see ``support/shipped.py`` for the names),
    exported on first use; a test that uses one skips, with the reason, without ../shared or
    the export extra."""
    source = SHARED / "fixtures" / "gpt2-wikitext-tiny"
    missing = _absent(source) or (None if HAS_EXPORT_EXTRA else NEEDS_EXPORT_EXTRA)
    shipped = ShippedBundles(source, tmp_path_factory.mktemp("shipped"), missing)
    request.config.stash[SHIPPED_KEY] = shipped
    return shipped


@pytest.fixture(scope="session")
def trained_optimum_folder(
    trained_fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The trained fixture as a plain Optimum ``text-generation-with-past`` export (no
    bundle.json: the runtime derives its description), the folder users bring from Optimum."""
    if not HAS_EXPORT_EXTRA:
        pytest.skip(NEEDS_EXPORT_EXTRA)
    from optimum.exporters.onnx import main_export

    out = tmp_path_factory.mktemp("trained-optimum") / "gpt2-wikitext-tiny-onnx"
    main_export(str(trained_fixture_dir), output=out, task="text-generation-with-past")
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer, 64-wide GPT-2 checkpoint folder (transformers format)."""
    if not HAS_EXPORT_EXTRA:
        pytest.skip(NEEDS_EXPORT_EXTRA)
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_checkpoint`` through gpt2-export's default recipe (the fused graph, fp32), without
    the verification step (the exporter's own tests run that)."""
    from gpt2_edge.exporter import export_bundle

    out = tmp_path_factory.mktemp("tiny-bundle") / "tiny-gpt2"
    return export_bundle(str(tiny_checkpoint), out, verify=False, progress=False)


@pytest.fixture(scope="session")
def tiny_optimum_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Optimum text-generation-with-past export of ``tiny_checkpoint``."""
    from optimum.exporters.onnx import main_export

    out = tmp_path_factory.mktemp("optimum") / "tiny-gpt2-onnx"
    main_export(str(tiny_checkpoint), output=out, task="text-generation-with-past")
    return out


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "slow" in report.keywords:  # not run without --runslow, by design
        return
    for group in GROUPS:
        if group not in report.keywords:
            continue
        seen = _group_outcomes[group]
        if report.failed:
            seen[report.nodeid] = "failed"
        elif report.skipped and seen.get(report.nodeid) != "failed":
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            seen[report.nodeid] = f"skipped: {reason}"
        elif report.when == "call" and report.nodeid not in seen:
            seen[report.nodeid] = "passed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(GROUP_REPORT)
    if path:
        Path(path).write_text(json.dumps(_group_outcomes, indent=1))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long each shipped bundle took to export (the CI budget's biggest fixed cost)."""
    shipped = terminalreporter.config.stash.get(SHIPPED_KEY, None)
    if shipped is not None and shipped.seconds:
        times = ", ".join(f"{name} {s:.0f} s" for name, s in shipped.seconds.items())
        terminalreporter.write_line(f"shipped bundles exported: {times}")
