"""Packs on devices this machine is not: ARM64 boards and an AVX2-only x86 CPU, under qemu-user.

For linux_aarch64, a pack of the trained fixture's int8 bundle (plus its fp32 and int4 bundles)
installs offline into an arm64 Debian 12 sysroot under an emulated Cortex-A72 (Raspberry Pi 4),
then generates under Cortex-A72 and Cortex-A76 (Raspberry Pi 5, RK3588): fp32 greedy tokens
equal this machine's, int8 and int4 perplexity is within 1% of this machine's for the same
bundle. For linux_x86_64, a pack installs here, and its interpreter binary runs under
``qemu-x86_64 -cpu Haswell`` (AVX2, no AVX-512, no VNNI): the int8 bundle exported with the
default ``portable`` target keeps its perplexity within 1% of the native run.

Each emulated CPU runs once (every bundle in one process), on a short text: emulation is ~50
times slower than this machine, and its timings mean nothing, so none are compared or reported.
Skips with the reason when qemu-user-static or mmdebstrap is missing, or the Debian archive or
the package index cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import edge_env
import edge_probe
import pytest
from edge_env import ARM_CPUS, HASWELL, QEMU_ARM, QEMU_X86, arm_emulator, x86_emulator
from gpt2_edge.runtime.errors import EdgeError

pytest.importorskip("gpt2_edge.pack", reason="gpt2_edge.pack is not installed: pip install -e .")

# The fixture's fp32, int8 and int4 bundles come from gpt2-export; the devices from qemu-user.
pytestmark = [pytest.mark.export, pytest.mark.emulation]

PROMPT = "The history of the city"
NEW_TOKENS = 12
PRECISIONS = ("fp32", "int8", "int4")  # shipped bundles (support/shipped.py)
PPL_TOLERANCE = 0.01  # the bound: within 1% of the x86 figure
PROBE = Path(edge_probe.__file__)
# No network on the device: any attempt to reach an index through a proxy fails at once.
NOWHERE = "http://127.0.0.1:9"
OFFLINE = {"PIP_NO_INDEX": "1", "http_proxy": NOWHERE, "https_proxy": NOWHERE}


@pytest.fixture(scope="module")
def bundles(shipped_bundles) -> dict:
    """The shipped fp32, int8 and int4 bundles of the trained fixture."""
    return {name: shipped_bundles[name] for name in PRECISIONS}


@pytest.fixture(scope="module")
def eval_text(wikitext_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edge-text") / "wiki.txt"
    path.write_text((wikitext_dir / "test.txt").read_text(encoding="utf-8")[:4000])
    return path


@pytest.fixture(scope="module")
def native(bundles: dict, eval_text: Path) -> dict:
    """This machine's figures for each bundle, from the same probe in this process."""
    text = eval_text.read_text(encoding="utf-8")
    return {n: edge_probe.probe(text, PROMPT, NEW_TOKENS, str(b)) for n, b in bundles.items()}


def _pack(bundle: Path, platform: str, python: str, out: Path) -> Path:
    from gpt2_edge.pack import make_pack

    try:
        return make_pack(bundle, platform, python, out).folder
    except EdgeError as exc:
        if "package index" in str(exc):
            pytest.skip(f"no network to the package index: {exc}")
        raise


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    where = " ".join(map(str, command[:4]))
    assert proc.returncode == 0, f"{where}... exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def _probe(prefix: list[str], python: Path, text: Path, folders: dict) -> dict:
    command = [*prefix, str(python), str(PROBE), str(text), PROMPT, str(NEW_TOKENS)]
    report = json.loads(_run([*command, *map(str, folders.values())]).stdout)
    runs = dict(zip(folders, report["bundles"].values(), strict=True))
    return {"cpu": report["cpu"], "bundles": runs}


@pytest.fixture(scope="module")
def arm(bundles: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An arm64 sysroot with the int8 pack installed offline in a venv, and the other bundles."""
    reason = edge_env.missing_tools(QEMU_ARM, "mmdebstrap")
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("arm64")
    try:
        sysroot = edge_env.make_arm64_sysroot(root / "sysroot")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no arm64 sysroot from the Debian archive: {exc}")
    pack = _pack(bundles["int8"], "linux_aarch64", edge_env.PYTHON, root / "pack")
    for name in ("fp32", "int4"):  # the device may hold several; the CLI picks int8 among them
        shutil.copytree(bundles[name], pack / "models" / bundles[name].name)
    emulator = arm_emulator(sysroot, ARM_CPUS["cortex-a72"])
    env = {
        **os.environ,
        **OFFLINE,
        "EMULATOR": " ".join(emulator),
        "PYTHON": str(sysroot / "usr/bin" / f"python{edge_env.PYTHON}"),
        "PIP_NO_COMPILE": "1",  # byte-compiling the wheels is most of the emulated install
    }
    venv = root / "venv"
    installed = _run(["sh", str(pack / "install.sh"), str(venv)], env=env)
    folders = {n: pack / "models" / bundles[n].name for n in PRECISIONS}
    return {
        "sysroot": sysroot, "pack": pack, "venv": venv, "log": installed.stdout, "models": folders
    }  # fmt: skip


@pytest.fixture(scope="module")
def arm_reports(arm: dict, eval_text: Path) -> dict:
    python = arm["venv"] / "bin" / "python"
    return {
        name: _probe(arm_emulator(arm["sysroot"], cpu), python, eval_text, arm["models"])
        for name, cpu in ARM_CPUS.items()
    }


def test_pack_installs_offline_into_an_arm64_sysroot(arm: dict) -> None:
    assert "Installed gpt2-edge" in arm["log"]
    site = arm["venv"] / "lib" / f"python{edge_env.PYTHON}" / "site-packages"
    (ort,) = site.glob("onnxruntime-*.dist-info")
    binary = next((site / "onnxruntime" / "capi").glob("onnxruntime_pybind11_state*.so"))
    assert binary.read_bytes()[18] == 0xB7  # ELF e_machine 183: AArch64, not this machine's
    assert (arm["venv"] / "bin" / "gpt2-generate").is_file(), ort


@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_emulated_arm_cpu_is_the_one_asked_for(cpu: str, arm_reports: dict) -> None:
    features = arm_reports[cpu]["cpu"]
    assert features["ASIMD"] is True
    # Dot-product instructions: Cortex-A76 has them (int8 kernels use them), Cortex-A72 not.
    assert features["ASIMDDP"] is (cpu == "cortex-a76")


@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_arm_fp32_greedy_tokens_equal_x86(cpu: str, arm_reports: dict, native: dict) -> None:
    got = arm_reports[cpu]["bundles"]["fp32"]["tokens"]
    assert got == native["fp32"]["tokens"] and len(got) == NEW_TOKENS


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_arm_quantized_perplexity_within_1pct_of_x86(
    cpu: str, precision: str, arm_reports: dict, native: dict
) -> None:
    got = arm_reports[cpu]["bundles"][precision]["perplexity"]
    want = native[precision]["perplexity"]
    assert abs(got / want - 1) <= PPL_TOLERANCE, (cpu, precision, got, want)


def test_arm_cli_in_the_pack_picks_int8_and_checks_hashes(
    arm: dict, arm_reports: dict, bundles: dict
) -> None:
    """What a user runs on the board: the console script, from the pack folder, no --model."""
    venv = arm["venv"]
    command = [
        *arm_emulator(arm["sysroot"], ARM_CPUS["cortex-a72"]),
        str(venv / "bin" / "python"),
        str(venv / "bin" / "gpt2-generate"),
        PROMPT,
        "--max-new-tokens", str(NEW_TOKENS), "--temperature", "0", "--ignore-eos",
        "--threads", "2", "--json",
    ]  # fmt: skip
    proc = _run(command, cwd=arm["pack"], env={**os.environ, **OFFLINE})
    assert bundles["int8"].name in proc.stderr  # named among the three bundles in models/
    tokens = json.loads(proc.stdout)["tokens"]
    assert tokens == arm_reports["cortex-a72"]["bundles"]["int8"]["tokens"]


@pytest.fixture(scope="module")
def x86_venv(bundles: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The linux_x86_64 pack installed here, offline, with this machine's real interpreter."""
    if sys.version_info < (3, 11):
        pytest.skip("packs need CPython 3.11 or newer (onnxruntime's current wheels)")
    python = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    if not edge_env.is_elf(python):
        pytest.skip(f"{python} is not an executable binary that qemu could run")
    root = tmp_path_factory.mktemp("x86")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    pack = _pack(bundles["int8"], "linux_x86_64", version, root / "pack")
    venv = root / "venv"
    env = {**os.environ, **OFFLINE, "PYTHON": str(python)}
    _run(["sh", str(pack / "install.sh"), str(venv)], env=env)
    return venv


def test_x86_pack_installs_offline_and_generates_natively(
    x86_venv: Path, bundles: dict, eval_text: Path, native: dict
) -> None:
    report = _probe([], x86_venv / "bin" / "python", eval_text, {"int8": bundles["int8"]})
    got, want = report["bundles"]["int8"], native["int8"]
    assert got["tokens"] == want["tokens"]
    # The pack's wheels are PyPI's newest, which may be newer than this environment's.
    assert got["perplexity"] == pytest.approx(want["perplexity"], rel=1e-3)


def test_haswell_keeps_portable_int8_within_1pct(
    x86_venv: Path, bundles: dict, eval_text: Path, native: dict
) -> None:
    reason = edge_env.missing_tools(QEMU_X86)
    if reason:
        pytest.skip(reason)
    report = _probe(x86_emulator(HASWELL), x86_venv / "bin" / "python", eval_text, bundles)
    assert report["cpu"]["AVX2"] is True and report["cpu"]["AVX512F"] is False
    runs = report["bundles"]
    assert runs["fp32"]["tokens"] == native["fp32"]["tokens"]
    for precision in ("int8", "int4"):
        got, want = runs[precision]["perplexity"], native[precision]["perplexity"]
        assert abs(got / want - 1) <= PPL_TOLERANCE, (precision, got, want)


def _wheel_files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith("dist-info/RECORD")}


def test_gpt2_pack_installed_from_a_wheel_repacks_the_same_wheel(
    x86_venv: Path, tmp_path: Path
) -> None:
    """What a user who installed gpt2-edge from PyPI has: no source tree, only installed files."""
    code = "import sys; from pathlib import Path; from gpt2_edge.pack.wheels import own_wheel; "
    code += "print(own_wheel(Path(sys.argv[1])))"
    proc = _run([str(x86_venv / "bin" / "python"), "-c", code, str(tmp_path)], cwd=tmp_path)
    repacked = Path(proc.stdout.strip())
    (original,) = (x86_venv.parent / "pack" / "wheels").glob("gpt2_edge-*.whl")
    assert repacked.name == original.name
    assert _wheel_files(repacked) == _wheel_files(original)
