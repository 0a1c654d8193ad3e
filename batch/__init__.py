"""gpt2_edge.batch: OpenAI batch files through a gpt2-edge bundle, resumable, on one machine or
a Ray cluster (needs the ``serve`` extra; ``--ray`` also the ``ray`` extra).

``gpt2-batch INPUT --output OUTPUT`` (``python -m gpt2_edge.batch``) answers every request of
INPUT as ``gpt2-serve`` would answer it over HTTP, and :func:`run_batch` does the same from
Python. Running again with the same OUTPUT goes on where a run stopped.
"""

from __future__ import annotations

from importlib import import_module

# typing.TYPE_CHECKING without importing typing (100 ms at a cold start, before the command's
# Ctrl-C guard: runtime/cli/startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .job import run_batch
    from .progress import Counts

_WHERE = {"run_batch": "job", "Counts": "progress"}
__all__ = ["Counts", "run_batch"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `gpt2-batch` can say the serve extra is missing first.
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
