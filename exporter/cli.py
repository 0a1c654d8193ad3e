"""``gpt2-export``'s entry point: Ctrl-C and a missing export extra, before the command loads.

This module imports only the standard library, so the console script reaches :func:`main` at
once. There the command (``command.py``, which needs onnx, and then torch) is imported under
the same guard as the export itself: Ctrl-C at any moment exits 130 without a traceback, and a
base install without the export extra gets one sentence saying what to install.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
from typing import Any

# What ``pip install 'gpt2-edge[export]'`` brings: the four the command cannot start without,
# and the ones a step imports later (a half-installed extra fails there).
EXTRA_MODULES = ("torch", "transformers", "optimum", "onnx")
EXTRA_PACKAGES = frozenset(
    {*EXTRA_MODULES, "onnx_ir", "accelerate", "safetensors", "huggingface_hub", "onnxscript"}
)
INSTALL = "pip install 'gpt2-edge[export]'"
EXIT_USER_ERROR = 1  # as runtime/cli/errors.py, which this module must not import before main
EXIT_INTERRUPTED = 130
INTERRUPTED = "Interrupted; no bundle was written."


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run ``gpt2-export`` on ``argv`` (default: ``sys.argv``)."""
    try:
        missing = missing_extra()
        if missing:
            _fail(extra_sentence(missing))
        from .command import app

        app(args=argv if argv is not None else sys.argv[1:], prog_name="gpt2-export")
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt this
        sys.stderr.write(f"\n{INTERRUPTED}\n")
        sys.exit(EXIT_INTERRUPTED)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in EXTRA_PACKAGES:
            raise
        _fail(extra_sentence([exc.name or "?"]))


def missing_extra() -> list[str]:
    """The export extra's modules that cannot be found (found, not imported: this is fast)."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # an import hook refused it, or a broken module
            found = False
        if not found:
            missing.append(name)
    return missing


def extra_sentence(missing: list[str]) -> str:
    return (
        f"gpt2-export needs the export extra, which is not installed (no {', '.join(missing)}): "
        f"{INSTALL}."
    )


def _fail(sentence: str) -> None:
    sys.stderr.write(f"Error: {sentence}\n")
    sys.exit(EXIT_USER_ERROR)


def __getattr__(name: str) -> Any:
    """``from gpt2_edge.exporter.cli import app`` (tests, callers) still finds the command."""
    if name in ("app", "export", "print_summary", "describe_verification"):
        from . import command

        return getattr(command, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
