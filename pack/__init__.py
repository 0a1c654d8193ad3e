"""gpt2_edge.pack: ``gpt2-pack``, an offline install folder for a device (base install, needs pip).

A pack holds a bundle, gpt2-edge's wheel and every runtime dependency's wheel for the device's
platform and CPython, ``install.sh`` and a README: copy it to a board with no network and run
``sh install.sh`` there.
"""

from __future__ import annotations

from importlib import import_module

# typing.TYPE_CHECKING without importing typing (100 ms at a cold start, before the command's
# Ctrl-C guard: runtime/cli/startup.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .make import Pack, make_pack
    from .platforms import MIN_ONNXRUNTIME, PLATFORMS

_WHERE = {"Pack": "make", "make_pack": "make", "MIN_ONNXRUNTIME": "platforms"}
_WHERE["PLATFORMS"] = "platforms"
__all__ = ["MIN_ONNXRUNTIME", "PLATFORMS", "Pack", "make_pack"]


def __getattr__(name: str) -> Any:
    # Imported on first use: gpt2-pack imports this package before its Ctrl-C guard is in place.
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
