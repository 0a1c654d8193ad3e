"""gpt2_edge.pack: ``gpt2-pack``, an offline install folder for a device (base install, needs pip).

A pack holds a bundle, gpt2-edge's wheel and every runtime dependency's wheel for the device's
platform and CPython, ``install.sh`` and a README: copy it to a board with no network and run
``sh install.sh`` there.
"""

from __future__ import annotations

from .make import Pack, make_pack
from .platforms import MIN_ONNXRUNTIME, PLATFORMS

__all__ = ["MIN_ONNXRUNTIME", "PLATFORMS", "Pack", "make_pack"]
