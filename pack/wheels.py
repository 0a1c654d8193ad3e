"""The wheels of a pack: gpt2-edge's own, and every runtime dependency's for the device, by pip.

gpt2-edge's own wheel is the code this command runs from, whatever way it was installed:

- from a checkout (an editable install): ``pip wheel --no-deps`` builds it from that source
  tree, copied first, so that setuptools' ``build/`` leftovers never reach the wheel;
- any other install (from PyPI, a wheel, a folder): the installed files, as ``RECORD`` lists them,
  are packed back into a wheel with the installed metadata, which is exactly what a user who
  installed from PyPI has (no source tree needed, no network).

The dependencies come from ``pip download`` with ``--platform/--python-version/--only-binary``, so
pip resolves them for the device, not for this machine; pip's own configuration (index, proxy,
``PIP_FIND_LINKS``) applies.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from gpt2_edge import runtime
from gpt2_edge.runtime import EdgeError

from .platforms import MANYLINUX, MIN_ONNXRUNTIME, Target

DISTRIBUTION = "gpt2-edge"
# Installer-written files in a .dist-info that a wheel does not carry (RECORD is rewritten).
_INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
# Top-level entries of a source tree that a wheel build never needs (and that can be large).
_NOT_SOURCE = {".git", ".venv", "venv", "build", "dist", "models", "benchmarks", "tests", ".ci"}
_CACHES = ("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "*.pyc")


def own_wheel(dest: Path) -> Path:
    """Write gpt2-edge's own wheel into ``dest``; return its path.

    Raises:
        EdgeError: gpt2-edge's installed files cannot be found, or its source cannot be built.
    """
    source = source_tree()
    if source is not None:
        return build_wheel(source, dest)
    return repack_installed(installed_distribution(), dest)


def source_tree(package: Path = Path(runtime.__file__).parent) -> Path | None:
    """The checkout this code runs from (an editable install), or None when it is installed.

    In a checkout the runtime is ``<root>/runtime`` beside ``pyproject.toml``; installed, it is
    ``site-packages/gpt2_edge/runtime``.
    """
    root = package.resolve().parent
    return root if (root / "pyproject.toml").is_file() and (root / "pack").is_dir() else None


def installed_distribution() -> metadata.Distribution:
    """The installed distribution whose files are the ones this code was imported from.

    Not simply ``metadata.distribution("gpt2-edge")``: that may find a stray ``.egg-info`` in
    the current folder first.
    """
    here = Path(runtime.__file__).resolve()
    for dist in metadata.distributions():
        if (dist.metadata["Name"] or "").lower().replace("_", "-") != DISTRIBUTION:
            continue
        if any(_located(dist, f).resolve() == here for f in dist.files or []):
            return dist
    raise EdgeError(
        f"No installed {DISTRIBUTION} distribution lists {here}; reinstall it with pip "
        "(pip install gpt2-edge) and run gpt2-pack from there."
    )


def _located(dist: metadata.Distribution, entry: str | metadata.PackagePath) -> Path:
    """``dist.locate_file(entry)``: typed as a ``SimplePath``, a ``pathlib.Path`` for a
    distribution installed in a folder (``str`` of it is the same path)."""
    return Path(str(dist.locate_file(entry)))


def build_wheel(source: Path, dest: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the source tree at ``source`` into ``dest``."""
    with tempfile.TemporaryDirectory(prefix="gpt2-pack-src-") as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(source, tree, ignore=_source_ignore(source))
        before = set(dest.glob("*.whl"))
        run_pip(["wheel", "--no-deps", "--wheel-dir", str(dest), str(tree)], "build the wheel")
    built = [p for p in dest.glob("gpt2_edge-*.whl") if p not in before]
    if len(built) != 1:
        raise RuntimeError(f"pip wheel wrote {built} into {dest}")
    return built[0]


def _source_ignore(root: Path) -> Callable[[str, list[str]], set[str]]:
    """shutil.copytree's ``ignore``: caches anywhere, and what a build never needs at the top."""
    caches = shutil.ignore_patterns(*_CACHES)

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = set(caches(folder, names))
        if Path(folder) == root:
            skipped |= _NOT_SOURCE & set(names)
        return skipped

    return ignore


def repack_installed(dist: metadata.Distribution, dest: Path) -> Path:
    """Pack an installed (non-editable) distribution back into a wheel in ``dest``.

    Only files under the install location are taken (console scripts in ``bin/`` are remade by
    pip from ``entry_points.txt``), no bytecode, and a fresh ``RECORD`` with every hash.
    """
    site = _located(dist, "").resolve()
    wheel_meta = dist.read_text("WHEEL") or ""
    tags = [
        line.split(":", 1)[1].strip() for line in wheel_meta.splitlines() if line.startswith("Tag:")
    ]
    if not tags or not dist.files:
        raise EdgeError(
            f"The installed {DISTRIBUTION} has no WHEEL or RECORD metadata to repack (installed "
            "by an old tool?); reinstall it with pip."
        )
    name = dist.metadata["Name"].replace("-", "_")
    version = dist.version
    info_dir = f"{name}-{version}.dist-info"
    wheel = dest / f"{name}-{version}-{tags[0]}.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as out:
        for entry in dist.files:
            path = _located(dist, entry).resolve()
            if not path.is_relative_to(site) or path.suffix == ".pyc" or not path.is_file():
                continue
            arcname = path.relative_to(site).as_posix()
            if arcname.startswith(f"{info_dir}/") and path.name in _INSTALLER_FILES:
                continue
            data = path.read_bytes()
            out.writestr(arcname, data)
            records.append((arcname, _record_hash(data), str(len(data))))
        records.append((f"{info_dir}/RECORD", "", ""))
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(records)
        out.writestr(f"{info_dir}/RECORD", buffer.getvalue())
    return wheel


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def download_dependencies(target: Target, own: Path, dest: Path) -> None:
    """Download every wheel ``own`` needs on ``target``, and pip itself, into ``dest``.

    Raises:
        EdgeError: pip found no wheel for a dependency on that platform and Python, or could
            not reach the package index.
    """
    args = [
        "download",
        "--only-binary=:all:",
        *(arg for tag in target.platform.pip_platforms() for arg in ("--platform", tag)),
        "--python-version", target.python,
        "--implementation", "cp",
        "--abi", target.cpython_tag,
        "--dest", str(dest),
        str(own),
        f"onnxruntime>={MIN_ONNXRUNTIME}",
        "pip",  # install.sh runs pip from its wheel: the device needs no pip of its own
    ]  # fmt: skip
    what = f"the wheels for {target.platform.name} and Python {target.python}"
    run_pip(args, f"download {what}", target)


def run_pip(args: list[str], doing: str, target: Target | None = None) -> str:
    """Run this Python's pip; return its output, or raise its error as one sentence."""
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except OSError as exc:
        raise EdgeError(f"pip could not be started to {doing} ({exc.strerror}).") from None
    if proc.returncode == 0:
        return proc.stdout
    raise EdgeError(pip_failure(proc.stdout + proc.stderr, doing, target))


# An OSError's message as Python shows it: "[Errno 28] No space left on device".
_OS_ERROR = re.compile(r"\[Errno \d+\] ([^:'\n]+)")


def pip_failure(output: str, doing: str, target: Target | None) -> str:
    """One sentence for a failed pip run, from pip's own last error line."""
    if "No module named pip" in output:
        return f"gpt2-pack needs pip in this Python ({sys.executable} -m ensurepip)."
    errors = [
        line.removeprefix("ERROR:").strip() for line in output.splitlines() if "ERROR" in line
    ]
    lines = errors or output.strip().splitlines() or ["no output"]
    reason = lines[-1].rstrip(".")
    os_errors = _OS_ERROR.findall(output)
    if reason.endswith(":") and os_errors:  # "ERROR: Exception:" heads pip's own traceback
        reason = os_errors[-1]  # a full disk: "No space left on device"
    elif reason.endswith(":"):
        reason = output.strip().splitlines()[-1]  # the traceback's last line says what failed
    missing = "No matching distribution found for "
    if missing in reason and target is not None:
        package = reason.split(missing, 1)[1].strip()
        return (
            f"pip found no wheel of {package} for {target.platform.words} and CPython "
            f"{target.python} ({MANYLINUX} or older), so no pack can be "
            "made for that device; try another --python."
        )
    network = ("Could not fetch", "connection", "Network is unreachable", "Max retries")
    hint = ""
    if any(word.lower() in output.lower() for word in network):
        hint = "; gpt2-pack needs the package index (PyPI, or PIP_INDEX_URL / PIP_FIND_LINKS)"
    return f"pip could not {doing}: {reason}{hint}."
