"""The text files of a pack: ``install.sh`` (run on the device) and ``README.txt`` (read there).

``install.sh`` needs only a POSIX shell and the device's CPython: it checks the device first (one
sentence and exit 1 when the Python, the CPU or glibc does not match the wheels), makes a
virtual environment ``--without-pip`` (so Debian's separate ``python3-venv`` package is not
needed) and runs pip from the pack's own pip wheel, offline, with every wheel's SHA-256 checked
against ``requirements.txt``.
"""

from __future__ import annotations

from .platforms import MANYLINUX, Target

INSTALL_SH = """\
#!/bin/sh
# Install gpt2-edge {version} from this folder, with no network: a virtual environment with
# gpt2-edge and every dependency from wheels/ ({platform}, CPython {python}), each wheel checked
# against its SHA-256 in requirements.txt.
#
#   sh install.sh [VENV]        VENV defaults to ./venv beside this script
#
# PYTHON picks the interpreter (default: python{python}, else python3). EMULATOR runs it under
# an emulator, to try a pack on another machine first, e.g. on an x86 PC with an arm64 sysroot:
#   EMULATOR="qemu-aarch64-static -L /srv/arm64" PYTHON=/srv/arm64/usr/bin/python{python} \\
#     sh install.sh
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${{1:-"$HERE/venv"}}
EMULATOR=${{EMULATOR:-}}
if [ -z "${{PYTHON:-}}" ]; then
  PYTHON=python3
  if command -v python{python} >/dev/null 2>&1; then PYTHON=python{python}; fi
fi
if [ -z "$EMULATOR" ] && ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "Error: $PYTHON was not found; install Python {python} or pass PYTHON=/path/to/it." >&2
  exit 1
fi
# The device must run the wheels in wheels/: one sentence and exit 1 when it cannot.
$EMULATOR "$PYTHON" "$HERE/check_device.py"
$EMULATOR "$PYTHON" -m venv --without-pip "$VENV"
PIP_WHEEL=$(ls "$HERE"/wheels/pip-*.whl | head -n 1)
$EMULATOR "$VENV/bin/python" "$PIP_WHEEL/pip" install --disable-pip-version-check --no-index \\
  --find-links "$HERE/wheels" --require-hashes --requirement "$HERE/requirements.txt"
echo "Installed gpt2-edge {version} in $VENV. Try:"
echo "  cd $HERE && $VENV/bin/gpt2-generate 'The meaning of life is' --max-new-tokens 40"
"""

CHECK_DEVICE = """\
\"\"\"Exit 1 with one sentence when this machine cannot run the wheels of this pack.\"\"\"

import platform
import sys

PYTHON, MACHINE, GLIBC = "{python}", "{machine}", ({glibc_major}, {glibc_minor})


def problem():
    have = "%d.%d" % sys.version_info[:2]
    machine = platform.machine()
    libc, version = platform.libc_ver()
    numbers = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    if have != PYTHON:
        return (
            "this pack holds wheels for Python %s but %s is Python %s; pass "
            "PYTHON=/path/to/python%s, or make a pack with gpt2-pack --python %s"
            % (PYTHON, sys.executable, have, PYTHON, have)
        )
    if machine != MACHINE:
        return (
            "this pack is for {words} but this machine is %s; make one with "
            "gpt2-pack --platform linux_%s" % (machine, machine)
        )
    if libc != "glibc" or numbers < GLIBC:
        return "the wheels need glibc %d.%d or newer but this system has %s %s" % (
            GLIBC + (libc or "no glibc", version or "")
        )
    return None


REASON = problem()
if REASON:
    sys.exit("Error: " + REASON + ".")
"""

README = """\
gpt2-edge offline pack: {bundle} ({precision}) for {words}, CPython {python}
Made by gpt2-pack {version}. Everything the device needs is in this folder; it needs no network.

On the device (after copying this folder there, e.g. with scp -r or a USB stick):

  cd {folder}
  sh install.sh
  ./venv/bin/gpt2-generate "The meaning of life is" --max-new-tokens 40

From this folder gpt2-generate finds models/{bundle} by itself; from elsewhere pass
--model /path/to/{folder}/models/{bundle}. The bundle's files are checked against their SHA-256
in models/{bundle}/bundle.json each time it is opened, and the wheels against requirements.txt
when they are installed. Other commands: ./venv/bin/gpt2-eval --help, ./venv/bin/python -m
gpt2_edge.runtime --help; or `. venv/bin/activate` to have them on the PATH.

The device needs:
  - {words}: {boards};
  - glibc {glibc} or newer (Debian 10+, Ubuntu 20.04+, Raspberry Pi OS 10+): the wheels are
    {manylinux}; musl systems (Alpine) cannot run them;
  - CPython {python} (python3 --version). Debian's python3-venv and pip are not needed: the venv
    is made --without-pip and pip runs from wheels/. Another Python needs another pack
    (gpt2-pack --python 3.X);
  - memory: see "Deploying to a device" in gpt2-edge's README (GPT-2 124M int8 generates in a
    192 MiB memory cgroup).

Contents:
  install.sh          the installer (POSIX sh); sh install.sh VENV puts the venv elsewhere
  check_device.py     what install.sh runs first: the Python, CPU and glibc must match
  requirements.txt    every wheel, pinned, with its SHA-256
  models/             the bundle {bundle} ({bundle_mib:.1f} MiB), checksums verified when packed
  wheels/             {wheel_count} wheels:
{wheel_list}
"""


def install_script(target: Target, version: str) -> str:
    return INSTALL_SH.format(version=version, platform=target.platform.name, python=target.python)


def device_check(target: Target) -> str:
    major, minor = (int(x) for x in MANYLINUX.removeprefix("manylinux_").split("_"))
    return CHECK_DEVICE.format(
        python=target.python,
        machine=target.platform.machine,
        words=target.platform.words,
        glibc_major=major,
        glibc_minor=minor,
    )


def readme(target: Target, **facts: object) -> str:
    glibc = MANYLINUX.removeprefix("manylinux_").replace("_", ".")
    return README.format(
        words=target.platform.words,
        boards=target.platform.boards,
        python=target.python,
        glibc=glibc,
        manylinux=MANYLINUX,
        **facts,
    )
