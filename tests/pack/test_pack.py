"""gpt2-pack without network: the refusals, the folder it writes, gpt2-edge's own wheel, install.sh.

pip is replaced by fakes here (``own_wheel``/``download_dependencies``), except to install a
repacked wheel offline; packs with real wheels from the index are built and installed on
emulated devices in tests/devices/test_edge_arm.py.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import platform as host
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("gpt2_edge.pack", reason="gpt2_edge.pack is not installed: pip install -e .")

from gpt2_edge.pack import make as make_module  # noqa: E402
from gpt2_edge.pack import wheels as wheels_module  # noqa: E402
from gpt2_edge.pack.cli import app  # noqa: E402
from gpt2_edge.pack.make import make_pack, notices  # noqa: E402
from gpt2_edge.pack.platforms import MIN_ONNXRUNTIME, resolve_target  # noqa: E402
from gpt2_edge.runtime.contract.bundle import verify_files
from gpt2_edge.runtime.contract.manifest import read_manifest
from gpt2_edge.runtime.errors import EdgeError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


# --- platforms and Pythons: a sentence that says what exists -------------------------------------

ARM32 = ["linux_armv7l", "armv7l", "linux_armv6l", "armhf", "ARMV7L"]
OTHER_OS = ["win_amd64", "macosx_11_0_arm64", "musllinux_1_2_aarch64"]
UNKNOWN = [
    ("", "choose linux_aarch64 or linux_x86_64"),
    ("linux_riscv64", "choose"),
    ("aarch64", "pass --platform linux_aarch64"),
    ("amd64", "pass --platform linux_x86_64"),
]
BAD_PYTHONS = [
    ("3.10", "the last for 3.10 was 1.23.2"),
    ("3.9", "3.11 to 3.14"),
    ("3.15", r"3\.11 to 3\.14, not 3\.15 \(none is published"),
    ("3.99", "3.11 to 3.14, not 3.99"),
    *((bad, "3.X") for bad in ("2.7", "3", "3.11.4", "python", "")),
]


@pytest.mark.parametrize("name", ARM32)
def test_32_bit_arm_is_refused_with_what_to_do(name: str) -> None:
    with pytest.raises(EdgeError, match=r"no wheels for 32-bit ARM .*--platform linux_aarch64\.$"):
        resolve_target(name)


@pytest.mark.parametrize("name", OTHER_OS)
def test_other_systems_are_refused(name: str) -> None:
    with pytest.raises(EdgeError, match="packs for Linux devices with glibc"):
        resolve_target(name)


@pytest.mark.parametrize(("name", "says"), UNKNOWN)
def test_unknown_platform_names_the_choices(name: str, says: str) -> None:
    with pytest.raises(EdgeError, match=says):
        resolve_target(name)


@pytest.mark.parametrize(("python", "says"), BAD_PYTHONS)
@pytest.mark.parametrize("platform", ["linux_aarch64", "linux_x86_64"])
def test_pythons_without_onnxruntime_wheels_are_refused(platform: str, python: str, says: str):
    with pytest.raises(EdgeError, match=says) as caught:
        resolve_target(platform, python)
    assert "\n" not in str(caught.value) and str(caught.value).endswith(".")


@pytest.mark.parametrize(
    ("platform", "python", "tag"),
    [("linux_aarch64", "3.11", "cp311"), (" LINUX_X86_64 ", "3.14", "cp314"),
     ("linux_aarch64", "cp312", "cp312"), ("linux_x86_64", "313", "cp313")],
)  # fmt: skip
def test_supported_targets(platform: str, python: str, tag: str) -> None:
    target = resolve_target(platform, python)
    assert target.cpython_tag == tag
    tags = target.platform.pip_platforms()
    assert tags[0] == f"manylinux_2_28_{target.platform.machine}"
    assert f"manylinux2014_{target.platform.machine}" in tags  # tokenizers' wheels are 2014


# --- pip's failures become one sentence ----------------------------------------------------------

PIP_OUTPUTS = [
    ("ERROR: Could not find a version that satisfies the requirement onnxruntime>=1.23.2\n"
     "ERROR: No matching distribution found for onnxruntime>=1.23.2",
     r"pip found no wheel of onnxruntime>=1\.23\.2 for 64-bit ARM .* CPython 3\.11"),
    ("WARNING: Retrying ... Max retries exceeded with url: /simple/numpy/\n"
     "ERROR: Could not find a version that satisfies the requirement numpy",
     r"needs the package index \(PyPI, or PIP_INDEX_URL / PIP_FIND_LINKS\)\.$"),
    ("/usr/bin/python3: No module named pip", r"needs pip in this Python .* -m ensurepip\)\.$"),
    ("", r"pip could not download the wheels: no output\.$"),
]  # fmt: skip


@pytest.mark.parametrize(("output", "says"), PIP_OUTPUTS)
def test_pip_failures_are_one_sentence(output: str, says: str) -> None:
    target = resolve_target("linux_aarch64", "3.11")
    sentence = wheels_module.pip_failure(output, "download the wheels", target)
    assert "\n" not in sentence
    assert re.search(says, sentence), sentence


# --- the folder it writes, with pip faked --------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(gpt2_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx", reason="building the fused test graph needs onnx")
    from support.fused_bundle import build_fused_bundle

    tokenizer = gpt2_tokenizer_dir / "tokenizer.json"
    return build_fused_bundle(tmp_path_factory.mktemp("pack") / "tiny-int8", tokenizer)


def _fake_wheel(folder: Path, name: str, version: str) -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", f"# {name} {version}\n")
    return path


@pytest.fixture
def fake_pip(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace pip: own wheel and dependency wheels are tiny fakes; records the calls."""
    calls = []

    def own(dest: Path) -> Path:
        calls.append(("own", dest))
        return _fake_wheel(dest, "gpt2_edge", "0.1.0")

    def download(target, own_path: Path, dest: Path) -> None:
        calls.append(("download", target, own_path))
        for name, version in (("onnxruntime", "1.32.0"), ("numpy", "2.4.6"), ("pip", "26.3")):
            _fake_wheel(dest, name, version)

    monkeypatch.setattr(make_module, "own_wheel", own)
    monkeypatch.setattr(make_module, "download_dependencies", download)
    return calls


def test_pack_layout(bundle: Path, tmp_path: Path, fake_pip: list) -> None:
    pack = make_pack(bundle, "linux_aarch64", "3.12", tmp_path / "out")
    out = pack.folder
    assert sorted(p.name for p in out.iterdir()) == [
        "README.txt", "check_device.py", "install.sh", "models", "requirements.txt", "wheels"
    ]  # fmt: skip
    assert [c[0] for c in fake_pip] == ["own", "download"]
    assert fake_pip[1][1].cpython_tag == "cp312"
    copied = out / "models" / bundle.name
    verify_files(copied, read_manifest(copied), check_hashes=True)
    lines = (out / "requirements.txt").read_text().splitlines()
    assert len(lines) == 4 and all(" --hash=sha256:" in line for line in lines)
    for line in lines:
        requirement, digest = line.split(" --hash=sha256:")
        name, version = requirement.split("==")
        wheel = out / "wheels" / f"{name}-{version}-py3-none-any.whl"
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() == digest
    install = out / "install.sh"
    assert install.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(install)], check=True)  # valid POSIX sh
    text = (out / "README.txt").read_text()
    assert "sh install.sh" in text and f"models/{bundle.name}" in text and "CPython 3.12" in text
    versions = {"gpt2-edge": "0.1.0", "numpy": "2.4.6", "onnxruntime": "1.32.0", "pip": "26.3"}
    assert pack.wheels == versions
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left


def test_default_output_name(bundle: Path, tmp_path: Path, fake_pip: list, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    pack = make_pack(bundle, "linux_x86_64", "3.11")
    assert pack.folder == Path(f"{bundle.name}-linux_x86_64-cp311") and pack.folder.is_dir()


def test_a_failed_download_leaves_nothing(bundle: Path, tmp_path: Path, fake_pip, monkeypatch):
    def fail(*args):
        raise EdgeError("pip found no wheel of numpy for 64-bit ARM Linux (aarch64).")

    monkeypatch.setattr(make_module, "download_dependencies", fail)
    with pytest.raises(EdgeError, match="no wheel of numpy"):
        make_pack(bundle, "linux_aarch64", output=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_leaves_nothing(bundle: Path, tmp_path: Path, fake_pip, monkeypatch) -> None:
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(make_module, "copy_bundle", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_pack(bundle, "linux_aarch64", output=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_output_is_one_sentence(bundle: Path, tmp_path: Path, fake_pip) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(EdgeError, match=r"^The pack cannot be written to .*file/out \(Not a dir"):
        make_pack(bundle, "linux_aarch64", output=blocked / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def _corrupt(bundle: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(bundle, tmp_path / "corrupt")
    data = bytearray((copy / "tokenizer.json").read_bytes())
    data[-3] ^= 1  # same size, other bytes
    (copy / "tokenizer.json").write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize(
    ("case", "says"),
    [("existing output", "already exists; pass another --output"),
     ("output in the bundle", "cannot be written inside the bundle folder"),
     ("not a bundle", "has no bundle.json; gpt2-pack ships gpt2-edge bundles"),
     ("no such folder", "does not exist"),
     ("corrupt file", "does not match its SHA-256")],
)  # fmt: skip
def test_bad_bundles_and_outputs_are_refused_before_any_download(
    case: str, says: str, bundle: Path, tmp_path: Path, fake_pip: list
) -> None:
    source, out = bundle, tmp_path / "out"
    if case == "existing output":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "output in the bundle":
        out = bundle / "pack"
    elif case == "not a bundle":
        source = tmp_path / "folder"
        source.mkdir()
    elif case == "no such folder":
        source = tmp_path / "missing"
    else:
        source = _corrupt(bundle, tmp_path)
    with pytest.raises(EdgeError, match=says):
        make_pack(source, "linux_aarch64", output=out)
    assert fake_pip == []  # nothing downloaded
    if case == "existing output":
        assert (out / "keep.txt").read_text() == "mine"
    assert not (bundle / "pack").exists()


@pytest.mark.parametrize(
    ("source", "says"),
    [("/", "^/ has no bundle.json; gpt2-pack ships"),
     ("", "^The bundle path is empty"),
     ("file", "is a file, not a bundle folder")],
)  # fmt: skip
def test_a_source_that_is_no_bundle_is_named_before_the_output(
    source: str, says: str, tmp_path: Path, fake_pip: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # "" and "/" hold the output: the bundle is what is wrong
    if source == "file":
        source = str(tmp_path / "file")
        Path(source).write_text("not a bundle")
    with pytest.raises(EdgeError, match=says):
        make_pack(source, "linux_x86_64", output="o1")
    assert fake_pip == []


def test_files_the_manifest_does_not_list_are_named_in_a_note(
    bundle: Path, tmp_path: Path, fake_pip: list
) -> None:
    source = shutil.copytree(bundle, tmp_path / "mine")
    (source / "notes.txt").write_text("mine")
    (source / "extra").mkdir()
    (source / "extra" / "lora.bin").write_bytes(b"weights")
    out = tmp_path / "p"
    result = runner.invoke(app, [str(source), "--platform", "linux_aarch64", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("Note: ")]
    assert len(notes) == 1
    assert "does not list, which are not in the pack: extra/lora.bin, notes.txt." in notes[0]
    assert (out / "models" / "mine").is_dir() and not (
        out / "models" / "mine" / "notes.txt"
    ).exists()


def test_a_bundle_of_listed_files_only_gets_no_note(bundle: Path) -> None:
    assert make_module.left_out(bundle, read_manifest(bundle)) == []


_SLOW_PACK = """
import sys, time
from gpt2_edge.pack import cli, make

def own(dest):
    wheel = dest / "gpt2_edge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    return wheel

def slow_download(target, own, dest):
    (dest / "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"part")
    print("fake download started", file=sys.stderr, flush=True)
    time.sleep(120)

make.own_wheel, make.download_dependencies = own, slow_download
sys.argv[0] = "gpt2-pack"
cli.main()
"""


@pytest.mark.parametrize(("signum", "code"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_during_the_download_leaves_nothing(
    signum: str, code: int, bundle: Path, tmp_path: Path
) -> None:
    import signal

    out = tmp_path / "work"
    out.mkdir()
    command = [sys.executable, "-c", _SLOW_PACK, str(bundle), "--platform", "linux_x86_64"]
    proc = subprocess.Popen(
        [*command, "-o", str(out / "o")], stderr=subprocess.PIPE, text=True, cwd=out
    )
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "fake download started" in line:
                break
        assert list(out.glob(".o.partial-*/wheels/onnxruntime-*")), lines
        proc.send_signal(getattr(signal, signum))
        assert proc.wait(timeout=60) == code, lines + proc.stderr.readlines()
    finally:
        proc.kill()
        proc.wait()
    assert list(out.iterdir()) == []  # no partial folder left beside the output


def test_notice_for_full_8_bit_weights_on_x86_only(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    vnni = {"dtype": "int8", "target": "avx512_vnni", "weights": {"reduce_range": False}}
    portable = {"dtype": "int8", "target": "portable", "weights": {"reduce_range": True}}
    x86, arm = resolve_target("linux_x86_64"), resolve_target("linux_aarch64")
    assert "saturate" in notices(dataclasses.replace(manifest, precision=vnni), x86)[0]
    assert notices(dataclasses.replace(manifest, precision=vnni), arm) == []
    assert notices(dataclasses.replace(manifest, precision=portable), x86) == []
    fp16 = dataclasses.replace(manifest, precision={"dtype": "float16"})
    assert "for GPUs" in notices(fp16, arm)[0]


# --- on the device: check_device.py and install.sh -----------------------------------------------


def _script(target_platform: str, python: str, tmp_path: Path) -> Path:
    from gpt2_edge.pack import scripts

    path = tmp_path / "check_device.py"
    path.write_text(scripts.device_check(resolve_target(target_platform, python)))
    return path


@pytest.mark.skipif(host.machine() != "x86_64" or sys.version_info < (3, 11), reason="x86-64 host")
def test_check_device_passes_here_and_refuses_what_does_not_match(tmp_path: Path) -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    other = "3.12" if here != "3.12" else "3.13"
    cases = [
        ("linux_x86_64", here, 0, ""),
        ("linux_aarch64", here, 1, "is for 64-bit ARM Linux (aarch64) but this machine is x86_64"),
        ("linux_x86_64", other, 1, f"this pack holds wheels for Python {other} but"),
    ]  # fmt: skip
    for platform, python, code, says in cases:
        script = _script(platform, python, tmp_path)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        assert proc.returncode == code, proc.stderr
        assert says in proc.stderr and proc.stderr.count("\n") <= 1


def test_install_sh_without_python_says_so(tmp_path: Path) -> None:
    from gpt2_edge.pack import scripts

    install = tmp_path / "install.sh"
    install.write_text(scripts.install_script(resolve_target("linux_aarch64"), "0.1.0"))
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "python-that-is-not-there"}
    proc = subprocess.run(["sh", str(install)], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr == (
        "Error: python-that-is-not-there was not found; install Python 3.11 or pass "
        "PYTHON=/path/to/it.\n"
    )
    assert not (tmp_path / "venv").exists()


# --- gpt2-edge's own wheel -----------------------------------------------------------------------


def test_source_tree_is_this_checkout_only() -> None:
    assert wheels_module.source_tree(ROOT / "runtime") == ROOT
    assert wheels_module.source_tree(ROOT / "tests") == ROOT  # any folder of the checkout
    installed = Path("/usr/lib/python3/dist-packages/gpt2_edge/runtime")
    assert wheels_module.source_tree(installed) is None


def _installed(site: Path) -> metadata.Distribution:
    """A distribution installed by pip into ``site`` (RECORD, INSTALLER, a script in bin/)."""
    info = site / "gpt2_edge-0.1.0.dist-info"
    meta = "gpt2_edge-0.1.0.dist-info"
    files = {
        "gpt2_edge/runtime/__init__.py": b"# runtime\n",
        "gpt2_edge/exporter/data/text.txt": b"package data\n",
        "gpt2_edge/runtime/__pycache__/__init__.cpython-311.pyc": b"bytecode",
        f"{meta}/METADATA": b"Metadata-Version: 2.1\nName: gpt2-edge\nVersion: 0.1.0\n",
        f"{meta}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{meta}/entry_points.txt": b"[console_scripts]\ngpt2-generate = gpt2_edge.cli:main\n",
        f"{meta}/INSTALLER": b"pip\n",
        f"{meta}/direct_url.json": b'{"url": "file:///somewhere", "dir_info": {}}',
        "../../../bin/gpt2-generate": b"#!/usr/bin/python\n",
    }  # fmt: skip
    for name, data in files.items():
        path = (site / name).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    rows = [(name, "", "") for name in files] + [("gpt2_edge-0.1.0.dist-info/RECORD", "", "")]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    (info / "RECORD").write_text(buffer.getvalue())
    return metadata.PathDistribution(info)


def test_an_installed_distribution_is_repacked_into_a_wheel_pip_installs(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    dist = _installed(site)
    dest = tmp_path / "wheels"
    dest.mkdir()
    wheel = wheels_module.repack_installed(dist, dest)
    assert wheel.name == "gpt2_edge-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = list(csv.reader(io.StringIO(zf.read("gpt2_edge-0.1.0.dist-info/RECORD").decode())))
        for name, digest, size in record:
            if name.endswith("RECORD"):
                continue
            data = zf.read(name)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, size) == (f"sha256={want}", str(len(data)))
    assert names == {
        "gpt2_edge/runtime/__init__.py",
        "gpt2_edge/exporter/data/text.txt",
        "gpt2_edge-0.1.0.dist-info/METADATA",
        "gpt2_edge-0.1.0.dist-info/WHEEL",
        "gpt2_edge-0.1.0.dist-info/entry_points.txt",
        "gpt2_edge-0.1.0.dist-info/RECORD",
    }  # fmt: skip  (no bytecode, no installer files, no script from bin/)
    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         "--target", str(target), str(wheel)],
        check=True,
    )  # fmt: skip
    assert (target / "gpt2_edge/exporter/data/text.txt").read_bytes() == b"package data\n"
    assert (target / "bin" / "gpt2-generate").is_file()  # pip made the script from entry points


def test_repack_refuses_a_distribution_without_wheel_metadata(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    dist = _installed(site)
    (site / "gpt2_edge-0.1.0.dist-info" / "WHEEL").unlink()
    with pytest.raises(EdgeError, match="has no WHEEL or RECORD metadata"):
        wheels_module.repack_installed(dist, tmp_path)


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [(["b"], 2, "Missing option '--platform'"),
     (["b", "--platform", "linux_armv7l"], 1, "Error: onnxruntime publishes no wheels for 32-bit"),
     (["b", "--platform", "linux_aarch64", "--python", "3.10"], 1, "Error: onnxruntime's current"),
     (["b", "--platform", "linux_x86_64", "--python", "3.99"], 1, "for CPython 3.11 to 3.14, not"),
     (["", "--platform", "linux_x86_64"], 1, "Error: The bundle path is empty"),
     (["b", "--platform", "linux_aarch64", "--bogus"], 2, "No such option")],
)  # fmt: skip
def test_command_errors_are_one_line(args: list[str], code: int, says: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code
    assert says in result.stderr and result.stderr.count("\n") == 1


def test_command_prints_the_pack_folder(bundle: Path, tmp_path: Path, fake_pip: list) -> None:
    result = runner.invoke(
        app, [str(bundle), "--platform", "linux_aarch64", "-o", str(tmp_path / "p")]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'p'}\n"
    assert "Downloading the wheels for linux_aarch64 and CPython 3.11" in result.stderr


def test_minimum_onnxruntime_is_pinned_in_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(
        wheels_module, "run_pip", lambda args, doing, target=None: seen.extend(args)
    )
    wheels_module.download_dependencies(resolve_target("linux_aarch64"), Path("own.whl"), Path("w"))
    assert f"onnxruntime>={MIN_ONNXRUNTIME}" in seen and "--only-binary=:all:" in seen
    assert seen[seen.index("--python-version") + 1] == "3.11" and "cp311" in seen
