"""``gpt2-pack BUNDLE --platform web``: a static folder that runs the bundle in a web page.

The folder holds the page (``index.html``), gpt2-edge's browser runtime (``js/``, the ES modules
of web/src), onnxruntime-web's WASM and WebGPU builds, the tokenizer library and a SHA-256
fallback (``vendor/``, at the versions web/package-lock.json pins, see ``npm_files.py``), the
bundle (``model/``), ``serve.py`` (a static server with the headers WASM threads need), a README
and ``pack.json``, which lists every file with its SHA-256.

The runtime and the page are package data of gpt2-edge (the package ``gpt2_edge.web`` is the
web/ folder); onnxruntime-web's 44 MiB of WebAssembly are not: they come from web/node_modules
in a checkout, or from the npm registry once (then a cache), checked against the lockfile.

As for a device pack, the folder is assembled in a hidden staging folder and renamed into place
at the end, so a failed or interrupted run leaves nothing at the output.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from gpt2_edge.runtime import Manifest, Precision, sha256_of

from .make import (
    check_bundle,
    check_output,
    check_source,
    copy_bundle,
    left_out,
    path_argument,
)
from .npm_files import NpmPackage, npm_package
from .staging import staged

WEB = "web"  # the --platform name
MODEL = "model"  # the bundle's folder in the pack; index.html loads it from there
PACK_MANIFEST = "pack.json"
PACK_FORMAT = "gpt2-edge-web-pack"
ORT = "onnxruntime-web"
# Files taken from each npm package: (path in the package, path in the pack). The paths in the
# pack are the ones index.html's import map names.
VENDORED = {
    ORT: (
        ("dist/ort.wasm.min.mjs", "vendor/onnxruntime-web/ort.wasm.min.mjs"),
        ("dist/ort-wasm-simd-threaded.mjs", "vendor/onnxruntime-web/ort-wasm-simd-threaded.mjs"),
        ("dist/ort-wasm-simd-threaded.wasm", "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"),
        ("dist/ort.webgpu.min.mjs", "vendor/onnxruntime-web/ort.webgpu.min.mjs"),
        (
            "dist/ort-wasm-simd-threaded.asyncify.mjs",
            "vendor/onnxruntime-web/ort-wasm-simd-threaded.asyncify.mjs",
        ),
        (
            "dist/ort-wasm-simd-threaded.asyncify.wasm",
            "vendor/onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm",
        ),
        ("package.json", "vendor/onnxruntime-web/package.json"),  # its version and MIT license
    ),
    "@huggingface/tokenizers": (
        ("dist/tokenizers.min.mjs", "vendor/tokenizers/tokenizers.min.mjs"),
        ("LICENSE", "vendor/tokenizers/LICENSE"),
    ),
    "@noble/hashes": tuple(
        (name, f"vendor/noble-hashes/{name}")
        for name in ("sha2.js", "_md.js", "_u64.js", "utils.js", "LICENSE")
    ),
}
# What each onnxruntime-web build loads: its module (which imports its glue) and its binary.
ORT_BUILDS = {
    "wasm": ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
    "webgpu": (
        "ort.webgpu.min.mjs",
        "ort-wasm-simd-threaded.asyncify.mjs",
        "ort-wasm-simd-threaded.asyncify.wasm",
    ),
}
PAGE_FILES = ("index.html", "serve.py")
README = "README.txt"


@dataclass
class WebPack:
    """What :func:`make_web_pack` wrote."""

    folder: Path
    bundle: str  # the bundle's name
    versions: dict[str, str]  # npm package -> version vendored
    download: dict[str, int]  # build (wasm, webgpu) -> bytes a browser downloads with it
    notices: list[str] = field(default_factory=list)  # one-line warnings for the user


def make_web_pack(
    bundle: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> WebPack:
    """Write a static folder that runs ``bundle`` in a web page, offline.

    Args:
        bundle: a gpt2-edge bundle folder (with ``bundle.json``; its checksums are verified).
        output: the folder to write (default ``<bundle>-web`` here); must not exist.
        log: called with one line per step (default: silent).

    Raises:
        EdgeError: a bundle that is not one or is corrupt, an output in the way, or
            onnxruntime-web neither installed nor downloadable at the pinned version.
    """
    say = log or (lambda line: None)
    if output is not None:  # the arguments' types first, as every check after them needs them
        path_argument(output, "output")
    source = check_source(bundle)
    out = Path(output if output is not None else f"{source.resolve().name}-web")
    check_output(out, source)
    say(f"Checking {source} (sizes and SHA-256)")
    manifest = check_bundle(source)
    web = assets()
    packages = {name: npm_package(name, web, say) for name in VENDORED}
    with staged(out) as (staging, pending):
        pack = _assemble(source, manifest, web, packages, out, staging, say, pending)
    say(f"Wrote {out}: serve it (cd {out} && python3 serve.py) and open http://127.0.0.1:8000/")
    return pack


def assets() -> Path:
    """The web/ folder as installed: the package ``gpt2_edge.web``'s data."""
    return Path(str(importlib.resources.files("gpt2_edge.web")))


def _assemble(
    source: Path,
    manifest: Manifest,
    web: Path,
    packages: dict[str, NpmPackage],
    out: Path,
    staging: Path,
    say: Callable[[str], None],
    pending: Callable[[], None],
) -> WebPack:
    """Write the pack in ``staging`` (:func:`.staging.staged` renames it to ``out``).

    ``pending()`` raises for a signal that came while the pack was written (its exception may
    have been swallowed), so that no pack is renamed into place after one."""
    say(f"Copying the page, the runtime and {ORT} {packages[ORT].version}")
    for name in PAGE_FILES:
        shutil.copyfile(web / "page" / name, staging / name)
    (staging / "js").mkdir()
    for module in sorted((web / "src").glob("*.mjs")):
        shutil.copyfile(module, staging / "js" / module.name)
    for name, copies in VENDORED.items():
        for inside, target in copies:
            (staging / target).parent.mkdir(parents=True, exist_ok=True)
            (staging / target).write_bytes(packages[name].read(inside))
    say(f"Copying the bundle to {out / MODEL}")
    copy_bundle(source, manifest, staging / MODEL)
    versions = {name: package.version for name, package in packages.items()}
    pack = WebPack(out, manifest.name, versions, {}, left_out(source, manifest))
    files = _inventory(staging)  # every file is hashed once
    pack.download = _download_sizes(files)
    _write_readme(staging, manifest, pack, files, out)
    files[README] = _entry(staging / README)
    _write_pack_manifest(staging, manifest, pack, dict(sorted(files.items())))
    listing = (staging / PACK_MANIFEST).stat().st_size  # the page reads it too
    pack.download = {build: size + listing for build, size in pack.download.items()}
    return pack


def _inventory(folder: Path) -> dict[str, dict]:
    """Every file under ``folder`` (a POSIX path relative to it) with its size and SHA-256."""
    return {
        path.relative_to(folder).as_posix(): _entry(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _entry(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": sha256_of(path)}


def _write_pack_manifest(
    folder: Path, manifest: Manifest, pack: WebPack, files: dict[str, dict]
) -> None:
    """``pack.json``: versions, onnxruntime-web's builds, and every file's size and SHA-256."""
    ort_folder = "vendor/onnxruntime-web"
    builds = {
        build: {"module": f"{ort_folder}/{module}", "glue": f"{ort_folder}/{glue}",
                "wasm": f"{ort_folder}/{binary}"}
        for build, (module, glue, binary) in ORT_BUILDS.items()
    }  # fmt: skip
    data = {
        "format": PACK_FORMAT,
        "format_version": 1,
        "gpt2_edge": _own_version(),
        "bundle": {
            "name": manifest.name,
            "folder": MODEL,
            "precision": Precision.from_json(manifest.precision).dtype,
        },
        "onnxruntime_web": {"version": pack.versions[ORT], "builds": builds},
        "libraries": {n: v for n, v in pack.versions.items() if n != ORT},
        "files": files,
    }
    text = json.dumps(data, indent=2) + "\n"
    (folder / PACK_MANIFEST).write_text(text, encoding="utf-8")


def _download_sizes(files: dict[str, dict]) -> dict[str, int]:
    """Bytes a browser fetches with each build: the page, the runtime, the tokenizer library,
    that build's onnxruntime-web files and the model (not the other build, nor the SHA-256
    fallback, which only a page without crypto.subtle loads); pack.json is added after."""
    common = sum(
        entry["size"]
        for name, entry in files.items()
        if name == "index.html"
        or name.startswith(("js/", f"{MODEL}/"))
        or name == "vendor/tokenizers/tokenizers.min.mjs"
    )
    return {
        build: common + sum(files[f"vendor/onnxruntime-web/{name}"]["size"] for name in names)
        for build, names in ORT_BUILDS.items()
    }


def _write_readme(
    folder: Path, manifest: Manifest, pack: WebPack, files: dict[str, dict], out: Path
) -> None:
    mib = 1 << 20
    model = sum(e["size"] for n, e in files.items() if n.startswith(f"{MODEL}/"))
    total = sum(e["size"] for e in files.values())
    template = (assets() / "page" / README).read_text(encoding="utf-8")
    text = string.Template(template).substitute(
        bundle=manifest.name,
        precision=Precision.from_json(manifest.precision).dtype,
        ort_version=pack.versions[ORT],
        folder=out.name,
        download_wasm=f"{pack.download['wasm'] / mib:.1f}",
        download_webgpu=f"{pack.download['webgpu'] / mib:.1f}",
        runtime_wasm=f"{(pack.download['wasm'] - model) / mib:.1f}",
        model=f"{model / mib:.1f}",
        total=f"{total / mib:.1f}",
        version=_own_version(),
    )
    (folder / README).write_text(text, encoding="utf-8")


def _own_version() -> str:
    try:
        return version("gpt2-edge")
    except PackageNotFoundError:
        return "?"
