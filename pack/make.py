"""``make_pack``: a bundle and every wheel it needs on a device, in one folder to copy there.

The folder is assembled in a hidden staging folder beside the output and renamed into place at
the end, so an interrupted or failed run leaves nothing at the output (``staging.py``).
"""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpt2_edge.runtime import (
    MANIFEST,
    EdgeError,
    Manifest,
    Precision,
    load_bundle,
    sha256_of,
    verify_files,
)

from . import scripts
from .platforms import DEFAULT_PYTHON, Target, resolve_target
from .staging import staged
from .wheels import download_dependencies, own_wheel

MODELS = "models"  # gpt2-generate run from the pack folder finds the bundle here by itself
WHEELS = "wheels"
NAMED_AT_MOST = 5  # files left out, named in the note


@dataclass
class Pack:
    """What :func:`make_pack` wrote."""

    folder: Path
    target: Target
    bundle: str  # the bundle's folder name under models/
    wheels: dict[str, str]  # distribution name -> version
    notices: list[str] = field(default_factory=list)  # one-line warnings for the user


def make_pack(
    bundle: str | os.PathLike[str],
    platform: str,
    python: str = DEFAULT_PYTHON,
    output: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Pack:
    """Write an offline install folder for ``bundle`` on a ``platform`` device with ``python``.

    Args:
        bundle: a gpt2-edge bundle folder (with ``bundle.json``; its checksums are verified).
        platform: ``linux_aarch64`` or ``linux_x86_64``.
        python: the device's CPython as ``3.X`` (default 3.11).
        output: the folder to write (default ``<bundle>-<platform>-cp3X`` here); must not exist.
        log: called with one line per step (default: silent).

    Raises:
        EdgeError: a platform or Python without onnxruntime wheels, a bundle that is not one or
            is corrupt, an output in the way, or pip failing to find or fetch a wheel.
    """
    say = log or (lambda line: None)
    if output is not None:  # the arguments' types first, as every check after them needs them
        path_argument(output, "output")
    target = resolve_target(platform, python)
    source = check_source(bundle)
    name = source.resolve().name
    default = f"{name}-{target.platform.name}-{target.cpython_tag}"
    out = Path(output if output is not None else default)
    check_output(out, source)
    say(f"Checking {source} (sizes and SHA-256)")
    manifest = check_bundle(source)
    with staged(out) as (staging, _):
        pack = _assemble(source, manifest, target, out, staging, say)
    say(f"Wrote {out}: copy it to the device and run sh install.sh there")
    return pack


def _assemble(
    source: Path,
    manifest: Manifest,
    target: Target,
    out: Path,
    staging: Path,
    say: Callable[[str], None],
) -> Pack:
    """Write the pack in ``staging`` (:func:`.staging.staged` renames it to ``out``)."""
    name = source.resolve().name
    wheels = staging / WHEELS
    wheels.mkdir()
    say("Building gpt2-edge's wheel")
    own = own_wheel(wheels)
    say(f"Downloading the wheels for {target.platform.name} and CPython {target.python}")
    download_dependencies(target, own, wheels)
    say(f"Copying the bundle to {out / MODELS / name}")
    copy_bundle(source, manifest, staging / MODELS / name)
    found = [*left_out(source, manifest), *notices(manifest, target)]
    pack = Pack(out, target, name, wheel_versions(wheels), found)
    write_texts(staging, pack, manifest)
    return pack


def check_source(bundle: str | os.PathLike[str]) -> Path:
    """``bundle`` as a path, refused unless it is a bundle folder (checked before the output)."""
    path_argument(bundle, "bundle")
    if not os.fspath(bundle):
        raise EdgeError("The bundle path is empty; pass the folder that gpt2-export wrote.")
    source = Path(bundle)
    if not source.exists():
        raise EdgeError(f"Bundle folder {source} does not exist.")
    if not source.is_dir():
        raise EdgeError(f"{source} is a file, not a bundle folder; pass the folder that holds it.")
    manifest = source / MANIFEST
    if (manifest.exists() or manifest.is_symlink()) and not manifest.is_file():
        what = "a folder" if manifest.is_dir() else "not a regular file (a FIFO, a device, a link)"
        raise EdgeError(f"{manifest} is {what}; a bundle's {MANIFEST} is a file gpt2-export wrote.")
    if not manifest.is_file():
        raise EdgeError(
            f"{source} has no {MANIFEST}; gpt2-pack ships gpt2-edge bundles, whose files carry "
            "checksums: export it with gpt2-export first."
        )
    return source


def path_argument(value: object, name: str) -> None:
    """Refuse a path argument of the Python API that is no path (a number, None)."""
    if not isinstance(value, (str, os.PathLike)):
        raise EdgeError(
            f"{name} must be a folder path (str or os.PathLike), got {type(value).__name__}."
        )


def check_output(out: Path, source: Path) -> None:
    """Refuse an output that exists or lies inside the bundle, before anything is done."""
    if out.exists() or out.is_symlink():
        raise EdgeError(f"{out} already exists; pass another --output or remove it first.")
    if out.resolve().is_relative_to(source.resolve()):
        raise EdgeError(f"The pack {out} cannot be written inside the bundle folder {source}.")


def check_bundle(source: Path) -> Manifest:
    """The bundle's manifest, after checking every file's size and SHA-256 against it."""
    return load_bundle(source, check_hashes=True).manifest


def copy_bundle(source: Path, manifest: Manifest, dest: Path) -> None:
    """Copy the manifest and the files it lists, then check the copies' checksums."""
    dest.mkdir(parents=True)
    for name in (MANIFEST, *manifest.files):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target)
    verify_files(dest, manifest, check_hashes=True)


def left_out(source: Path, manifest: Manifest) -> list[str]:
    """A note naming the files in the bundle folder that bundle.json does not list.

    Only listed files carry checksums, so only they are copied; the user should know the rest
    stays behind.
    """
    listed = {MANIFEST, *manifest.files}
    extra = sorted(
        path.relative_to(source).as_posix()
        for path in source.rglob("*")
        if not path.is_dir() and path.relative_to(source).as_posix() not in listed
    )
    if not extra:
        return []
    named = ", ".join(extra[:NAMED_AT_MOST])
    more = f" and {len(extra) - NAMED_AT_MOST} more" if len(extra) > NAMED_AT_MOST else ""
    return [
        f"{source} holds files that {MANIFEST} does not list, which are not in the pack: "
        f"{named}{more}."
    ]


def wheel_versions(wheels: Path) -> dict[str, str]:
    """Distribution name -> version of every wheel in ``wheels`` (from the file names)."""
    found = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        found[name.replace("_", "-").lower()] = version
    return found


def notices(manifest: Manifest, target: Target) -> list[str]:
    """Warnings about a bundle that will run on the device, but not at its best."""
    precision = Precision.from_json(manifest.precision)
    found = []
    full_bytes = precision.weights.get("reduce_range", precision.extra.get("reduce_range")) is False
    if precision.dtype == "int8" and full_bytes and target.platform.machine == "x86_64":
        found.append(
            f"This bundle's int8 weights use all 8 bits (target {precision.target}), which can "
            "saturate on x86 CPUs without AVX-512 VNNI; export with the default --target "
            "portable for a device you do not know."
        )
    if precision.dtype == "float16":
        found.append(
            "This bundle is float16, which is for GPUs; on a CPU an int8 or int4 bundle is "
            "smaller and faster."
        )
    return found


def write_texts(folder: Path, pack: Pack, manifest: Manifest) -> None:
    """``requirements.txt`` (every wheel pinned, with its SHA-256), ``install.sh``, README."""
    lines = [
        f"{_requirement(wheel)} --hash=sha256:{sha256_of(wheel)}"
        for wheel in sorted((folder / WHEELS).glob("*.whl"))
    ]
    (folder / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    version = pack.wheels.get("gpt2-edge", "?")
    install = folder / "install.sh"
    install.write_text(scripts.install_script(pack.target, version), encoding="utf-8")
    install.chmod(0o755)
    check = scripts.device_check(pack.target)
    (folder / "check_device.py").write_text(check, encoding="utf-8")
    sizes = sum(entry.get("size", 0) for entry in manifest.files.values())
    listed = ", ".join(f"{n} {v}" for n, v in pack.wheels.items())
    listed = textwrap.fill(listed, 96, initial_indent=" " * 4, subsequent_indent=" " * 4,
                           break_on_hyphens=False)  # fmt: skip
    text = scripts.readme(
        pack.target,
        bundle=pack.bundle,
        precision=Precision.from_json(manifest.precision).dtype,
        version=version,
        folder=pack.folder.name,
        wheel_count=len(pack.wheels),
        wheel_list=listed,
        bundle_mib=sizes / (1 << 20),
    )
    (folder / "README.txt").write_text(text, encoding="utf-8")


def _requirement(wheel: Path) -> str:
    name, version = wheel.name.split("-")[:2]
    return f"{name}=={version}"
