"""Emulated devices for the tests: an arm64 Debian sysroot run by qemu-user, and other x86 CPUs.

No ARM hardware and no binfmt_misc here, so no chroot: ``mmdebstrap --variant=extract`` unpacks
Debian's arm64 Python and its libraries into a folder without running anything (about 10 s,
75 MB), and ``qemu-aarch64-static -cpu MODEL -L SYSROOT`` runs its interpreter, with the
sysroot's libraries found through ``-L``. qemu-user 7.2 shows programs the host's x86
``/proc/cpuinfo``, on which onnxruntime's CPU detection crashes at import; ``-L`` also remaps
``/proc/cpuinfo`` and ``/sys/devices/system/cpu/*``, so the sysroot carries an ARM one for the
CPU being emulated (written before each run). The features a program sees come from qemu's
model (``getauxval``/CPUID) either way.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"  # Debian 12: Python 3.11
PYTHON = "3.11"
SYSROOT_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
QEMU_ARM, QEMU_X86 = "qemu-aarch64-static", "qemu-x86_64-static"
# Haswell without what TCG cannot emulate (system features qemu warns about once per thread).
HASWELL = "Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-rtm,-invpcid"


@dataclass(frozen=True)
class ArmCpu:
    model: str  # qemu's -cpu name
    part: str  # MIDR part number, as /proc/cpuinfo shows it
    features: str  # /proc/cpuinfo's Features line on the real core
    boards: str


ARM_CPUS = {
    "cortex-a72": ArmCpu(
        "cortex-a72", "0xd08", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4, RK3399"
    ),
    "cortex-a76": ArmCpu(
        "cortex-a76",
        "0xd0b",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
        "dcpop asimddp",
        "Raspberry Pi 5, RK3588",
    ),
}


def missing_tools(*tools: str) -> str | None:
    """Why the emulated tests cannot run here, or None."""
    absent = [t for t in tools if shutil.which(t) is None]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install qemu-user-static mmdebstrap)"
    return None


def make_arm64_sysroot(folder: Path) -> Path:
    """An arm64 Debian 12 folder with python3.11; raises RuntimeError with mmdebstrap's reason."""
    command = [
        "mmdebstrap", "--variant=extract", "--arch=arm64", "--quiet",
        f"--include={','.join(SYSROOT_PACKAGES)}", SUITE, str(folder), MIRROR,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"mmdebstrap exited {proc.returncode}")
    (folder / "proc").mkdir(exist_ok=True)
    (folder / "sys/devices/system/cpu").mkdir(parents=True, exist_ok=True)
    return folder


def show_cpu(sysroot: Path, cpu: ArmCpu, cores: int = 4) -> None:
    """Write the ARM ``/proc/cpuinfo`` and CPU lists that qemu's ``-L`` shows the program."""
    block = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 3\n\n"
    )
    text = "".join(block.format(n=n, features=cpu.features, part=cpu.part) for n in range(cores))
    (sysroot / "proc/cpuinfo").write_text(text)
    for name in ("possible", "present"):
        (sysroot / "sys/devices/system/cpu" / name).write_text(f"0-{cores - 1}\n")


def arm_emulator(sysroot: Path, cpu: ArmCpu) -> list[str]:
    """The command prefix that runs an arm64 program of ``sysroot`` on ``cpu``."""
    show_cpu(sysroot, cpu)
    return [QEMU_ARM, "-cpu", cpu.model, "-L", str(sysroot)]


def x86_emulator(cpu: str = HASWELL) -> list[str]:
    return [QEMU_X86, "-cpu", cpu]


def is_elf(path: Path) -> bool:
    """Whether ``path`` is a real executable (qemu cannot run a shim script)."""
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"
