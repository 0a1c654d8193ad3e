"""gpt2_edge.serve: an OpenAI-compatible local server for a gpt2-edge bundle, with continuous
batching and a small offline page (needs the ``serve`` extra: Starlette, uvicorn,
prometheus-client).

The runtime never imports this package. ``create_app(generator, ServeConfig(...))`` builds the
ASGI app; ``gpt2-serve`` (``python -m gpt2_edge.serve``) loads a bundle and serves it.
"""

from __future__ import annotations

from importlib import import_module

# typing.TYPE_CHECKING without importing typing (100 ms at a cold start, before the command's
# Ctrl-C guard: runtime/cli/startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .app import create_app
    from .config import ServeConfig

_WHERE = {"create_app": "app", "ServeConfig": "config"}
__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `gpt2-serve` can say the extra is missing in one sentence.
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
