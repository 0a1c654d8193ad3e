"""Which devices a pack can be made for, and the sentence for each that cannot.

Facts behind the rules (checked with pip against PyPI and under qemu-user emulation, 2026-11-30):

- onnxruntime publishes Linux wheels for 64-bit ARM (``manylinux_2_28_aarch64``) and x86-64
  (``manylinux_2_28_x86_64``) only: none for 32-bit ARM (armv7l, armv6l) or musl (Alpine).
- Its current releases (1.24 to 1.32) have wheels for CPython 3.11 to 3.14; the last for 3.10 was
  1.23.2. The emulated-device tests prove packs with the current release only, so a pack for
  3.10 is refused with what exists rather than made with an older onnxruntime than CI runs.
- 1.21.0 dies with an illegal instruction at import on an emulated Cortex-A72 (Raspberry Pi 4),
  1.22.0 cannot load an int8 bundle (its GatherBlockQuantized has no ``bits`` attribute), and
  1.23.2 generates from fp32, int8 and int4 bundles there (checked by hand with the fixture):
  :data:`MIN_ONNXRUNTIME`, so that a pip configured to an older mirror fails at pack time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpt2_edge.runtime import EdgeError

MIN_ONNXRUNTIME = "1.23.2"
DEFAULT_PYTHON = "3.11"  # Debian 12 and Raspberry Pi OS 12 (bookworm) ship 3.11
OLDEST_PYTHON = (3, 11)  # onnxruntime's current releases start there
NEWEST_PYTHON = (3, 14)  # and end there (a newer CPython has no wheels yet)
# glibc 2.28: onnxruntime's wheels are manylinux_2_28 (Debian 10+, Ubuntu 20.04+, RHEL 8+);
# the other packages' wheels may be tagged for any older glibc down to 2.17 (manylinux2014), and
# pip (23.2) matches a --platform tag literally, so every one is passed.
MANYLINUX = "manylinux_2_28"
_OLDEST_MANYLINUX = 17


@dataclass(frozen=True)
class Platform:
    name: str  # linux_aarch64 | linux_x86_64
    machine: str  # what platform.machine() says on the device
    words: str  # the device, for people
    boards: str  # examples, for the README

    def pip_platforms(self) -> list[str]:
        """pip's ``--platform`` tags: manylinux_2_28 down to manylinux_2_17 and manylinux2014."""
        newest = int(MANYLINUX.rsplit("_", 1)[1])
        minors = range(newest, _OLDEST_MANYLINUX - 1, -1)
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in minors]
        return [*tags, f"manylinux2014_{self.machine}"]


PLATFORMS = {
    "linux_aarch64": Platform(
        "linux_aarch64",
        "aarch64",
        "64-bit ARM Linux (aarch64)",
        "Raspberry Pi 3/4/5 with a 64-bit OS, RK3588 boards, Jetson, AWS Graviton",
    ),
    "linux_x86_64": Platform(
        "linux_x86_64", "x86_64", "x86-64 Linux", "PCs, laptops and servers with AVX2"
    ),
}
# Not a device with CPython: a static folder that runs the bundle in a web browser (pack/web.py).
WEB = "web"
_ARM32 = re.compile(r"^(linux_)?(armv[5-7]\w*|armhf|armel|arm|arm32)$")
_OTHER_OS = re.compile(r"^(win|macosx|darwin|musllinux|ios|android)")


@dataclass(frozen=True)
class Target:
    """A device kind and the CPython it runs, validated."""

    platform: Platform
    python: str  # "3.11"

    @property
    def cpython_tag(self) -> str:
        return "cp" + self.python.replace(".", "")  # cp311


def resolve_target(platform: str, python: str = DEFAULT_PYTHON) -> Target:
    """Check ``platform`` and ``python`` before anything is downloaded.

    Raises:
        EdgeError: a platform or Python that onnxruntime publishes no wheels for, in a sentence
            that says what exists; either of them not a string.
    """
    for name, value in (("platform", platform), ("python", python)):
        if not isinstance(value, str):
            raise EdgeError(f"{name} must be a string, got {type(value).__name__}.")
    return Target(resolve_platform(platform), resolve_python(python))


def is_web(name: str) -> bool:
    """Whether ``--platform`` names the web pack (any case, spaces around ignored)."""
    return name.strip().lower() == WEB


def resolve_platform(name: str) -> Platform:
    key = name.strip().lower()
    if key in PLATFORMS:
        return PLATFORMS[key]
    choices = " or ".join(PLATFORMS)
    if key == WEB:
        raise EdgeError(
            "make_pack writes device packs; a web pack is written by "
            "gpt2_edge.pack.web.make_web_pack (gpt2-pack --platform web)."
        )
    if _ARM32.match(key):
        raise EdgeError(
            f"onnxruntime publishes no wheels for 32-bit ARM ({name}); install a 64-bit OS on the "
            "board (Raspberry Pi OS 64-bit runs on a Pi 3, 4 and 5) and pass --platform "
            "linux_aarch64."
        )
    if key in ("aarch64", "arm64", "armv8", "linux_arm64"):
        raise EdgeError(f"Unknown platform '{name}'; for 64-bit ARM pass --platform linux_aarch64.")
    if key in ("x86_64", "amd64", "x64", "linux_amd64"):
        raise EdgeError(f"Unknown platform '{name}'; for x86-64 pass --platform linux_x86_64.")
    if _OTHER_OS.match(key):
        raise EdgeError(
            f"gpt2-pack makes packs for Linux devices with glibc ({choices}), not {name}; on "
            "such a machine install gpt2-edge with pip directly, or pass --platform web to run "
            "the model in its browser."
        )
    raise EdgeError(
        f"Unknown platform '{name}'; choose {choices} (a device), or {WEB} (a browser)."
    )


def resolve_python(version: str) -> str:
    match = re.fullmatch(r"\s*(?:cp|python)?\s*3\.?(\d{1,2})\s*", version.lower())
    if not match:
        raise EdgeError(
            f"--python takes the device's CPython version as 3.X (e.g. 3.11), got '{version}'."
        )
    minor = int(match.group(1))
    oldest, newest = (".".join(map(str, v)) for v in (OLDEST_PYTHON, NEWEST_PYTHON))
    if (3, minor) > NEWEST_PYTHON:  # refused here, not after building and a pip run
        raise EdgeError(
            f"onnxruntime's current releases publish wheels for CPython {oldest} to {newest}, "
            f"not 3.{minor} (none is published for it yet); install Python {oldest} to {newest} on "
            "the device and pass its version as --python."
        )
    if (3, minor) < OLDEST_PYTHON:
        raise EdgeError(
            f"onnxruntime's current releases publish wheels for CPython {oldest} to {newest}, not "
            f"3.{minor} (the last for 3.10 was 1.23.2); install Python {oldest} or newer on the "
            f"device (Debian 12 and Raspberry Pi OS 12 ship 3.11) and pass --python {oldest}."
        )
    return f"3.{minor}"
