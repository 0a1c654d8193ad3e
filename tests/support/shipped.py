"""The bundles ``gpt2-export`` ships: the trained fixture
(``../shared/fixtures/gpt2-wikitext-tiny``) exported by the command itself with its default flags,
one precision flag apart, verification and quality gate included. Tests of what ships (parity,
batch invariance, the server's batching, the devices, the browser, onnxruntime-genai) run on
these, not on hand-built neighbours.

Each is exported on first use and kept for the session (``ShippedBundles``, the
``shipped_bundles`` fixture of tests/conftest.py): an export takes 10-30 s on 2 cores, so only
those a test asks for are made.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# name -> gpt2-export's flags besides SOURCE --output FOLDER (every other flag at its default).
# The default graph is the fused one (a shared-buffer KV cache); --graph optimum keeps Optimum's
# (a growing past): the runtime's two decoders.
SHIPPED: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "int8": ("--quantize",),
    "int4": ("--bits", "4"),
    "fp16": ("--dtype", "fp16"),
    "optimum-fp32": ("--graph", "optimum"),
    "optimum-int8": ("--graph", "optimum", "--quantize"),
    "optimum-int4": ("--graph", "optimum", "--bits", "4"),
    "optimum-fp16": ("--graph", "optimum", "--dtype", "fp16"),
}
EXPORT_TIMEOUT_S = 900  # ~30 s idle; minutes when the 2 cores are shared


class ShippedBundles:
    """``shipped["int8"]``: the folder of that shipped bundle, exported on first use.

    Args:
        source: the checkpoint folder (the trained fixture).
        root: where the bundles go (one folder per name).
        missing: why they cannot be made here (None: they can); every use skips with it.
    """

    def __init__(self, source: Path, root: Path, missing: str | None):
        self.source, self.root, self.missing = source, root, missing
        self.seconds: dict[str, float] = {}  # each export's wall time, for the CI budget
        self._failed: dict[str, str] = {}  # name -> why its export failed (not tried again)
        self._generators: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Path:
        """The bundle's folder, named as gpt2-export names its output (gpt2-wikitext-tiny-int8)."""
        if name not in SHIPPED:
            raise KeyError(f"no shipped bundle {name!r}; the names are {', '.join(SHIPPED)}")
        if self.missing:
            pytest.skip(self.missing)
        if name in self._failed:
            raise RuntimeError(self._failed[name])
        folder = self.root / f"{self.source.name}-{name}"
        if not (folder / "bundle.json").is_file():
            self._export(name, folder)
        return folder

    def load(self, name: str) -> Any:
        """A Generator on the bundle (CPU, one thread), shared by the session's tests: do not
        patch it; load your own for that."""
        if name not in self._generators:
            from gpt2_edge.runtime import load

            self._generators[name] = load(self[name], provider="cpu", threads=1)
        return self._generators[name]

    def _export(self, name: str, folder: Path) -> None:
        command = [sys.executable, "-m", "gpt2_edge.exporter", str(self.source)]
        command += ["--output", str(folder), *SHIPPED[name]]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        start = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=EXPORT_TIMEOUT_S
        )
        self.seconds[name] = time.perf_counter() - start
        if done.returncode:  # the shipped command failing is a failure, never a skip
            self._failed[name] = (
                f"gpt2-export {' '.join(SHIPPED[name])} of the trained fixture exited "
                f"{done.returncode}:\n{done.stderr[-3000:]}"
            )
            raise RuntimeError(self._failed[name])
