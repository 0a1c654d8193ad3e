"""Which CPUs an int8 bundle is meant for, and what that changes in the recipe.

A bundle is exported on one machine and run on others: a laptop with AVX2 only, an ARM board.
On x86 CPUs without VNNI, onnxruntime's uint8 x int8 kernels add pairs of products in 16 bits
(``vpmaddubsw``), which saturates when both factors are large; weights kept to 7 bits
(``reduce_range``) cannot saturate there. So the default target, ``portable``, uses 7-bit weights
and is right on every x86-64 CPU with AVX2 and on ARM64; ``avx512_vnni`` and ``arm64`` use the full
8 bits for CPUs whose kernels accumulate in 32 bits, and ``auto`` picks for the export machine.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError

DEFAULT_TARGET = "portable"


@dataclass(frozen=True)
class Target:
    name: str
    reduce_range: bool  # 7-bit weights: no saturation on CPUs without VNNI
    cpus: str  # who the bundle is for, in words (bundle.json and the summary)


TARGETS = {
    "portable": Target("portable", True, "any x86-64 CPU with AVX2, and ARM64"),
    "avx2": Target("avx2", True, "x86-64 CPUs with AVX2"),
    "avx512": Target("avx512", True, "x86-64 CPUs with AVX-512"),
    "avx512_vnni": Target(
        "avx512_vnni",
        False,
        "x86-64 CPUs with AVX-512 VNNI (on x86 CPUs without VNNI, full 8-bit weights can saturate)",
    ),
    "arm64": Target(
        "arm64",
        False,
        "ARM64 CPUs (on x86 CPUs without VNNI, full 8-bit weights can saturate)",
    ),
}
CHOICES = ("auto", *TARGETS)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The instruction-set flags of the first CPU in ``/proc/cpuinfo`` (empty when unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 says flags, arm says Features
            return set(value.split())
    return set()


def detect_target(machine: str | None = None, flags: set[str] | None = None) -> str:
    """The best target for this CPU: arm64, avx512_vnni, avx512 or avx2."""
    machine = (machine or platform.machine()).lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv8"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags and ("avx512_vnni" in flags or "avx512vnni" in flags):
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"  # also the safe default for x86 CPUs whose flags cannot be read


def resolve_target(target: str) -> Target:
    """``auto`` -> this machine's target; a known name -> itself; anything else -> a sentence."""
    if target not in CHOICES:
        raise ExportError(f"Unknown target '{target}'; choose one of {', '.join(CHOICES)}.")
    return TARGETS[detect_target() if target == "auto" else target]
