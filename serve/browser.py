"""The page's "in this browser" mode: the model's bundle and the browser runtime, served read-only.

- ``GET /bundle/{name}``: ``bundle.json`` and the files it lists, nothing else (any other name is
  a 404 sentence). Each carries its SHA-256 as ``ETag`` and ``Cache-Control: no-cache``: a browser
  keeps the file and revalidates it (a 304 costs no download; a re-exported bundle is seen at
  once). The API key, when the server has one, is needed here as for the API: these are the
  model's weights. The page sends it.
- ``GET /browser/{path}``: gpt2-edge's JavaScript runtime (the package data ``gpt2_edge.web``),
  onnxruntime-web, the tokenizer library and the SHA-256 fallback: what ``gpt2-pack --platform
  web`` vendors, at the same paths and from the same place (web/node_modules, or the npm registry
  once and then the cache, checked against web/package-lock.json), and ``pack.json``, which gives
  their SHA-256 (the page checks onnxruntime-web's binary against it). Public: it is code, and a
  module import cannot send a key.

Both send the cross-origin isolation headers (as the page does) that WASM threads need. The
runtime's files are read on the first request for one (in a worker thread: that may download
them), then kept in memory (44 MiB); a server that is only an API never reads them.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import threading
from pathlib import Path
from typing import Any

from gpt2_edge.runtime import MANIFEST, EdgeError, Generator, sha256_of
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from .errors import ApiError

ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}
MEDIA_TYPES = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
}
RUNTIME_LISTING = "pack.json"


def media_type(name: str) -> str:
    suffix = Path(name).suffix
    return MEDIA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _headers(sha256: str) -> dict[str, str]:
    return {"ETag": f'"{sha256}"', "Cache-Control": "no-cache", **ISOLATION}


def _unchanged(request: Request, sha256: str) -> bool:
    """Whether the browser's copy (``If-None-Match``) is this version."""
    given = request.headers.get("if-none-match", "")
    return any(tag.strip().removeprefix("W/") == f'"{sha256}"' for tag in given.split(","))


class BrowserFiles:
    """The two routes' handlers for one loaded model."""

    def __init__(self, gen: Generator):
        self._folder = Path(gen.session.bundle.path)
        self._files = gen.manifest.files
        self._manifest_sha: str | None = None
        self._runtime: dict[str, tuple[bytes, str]] | None = None  # path -> (bytes, sha256)
        self._lock = threading.Lock()

    async def bundle_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not (self._folder / MANIFEST).is_file():
            raise ApiError(
                404,
                "The server's model is a plain Optimum folder, without the bundle.json whose "
                "checksums a browser checks; export it with gpt2-export to run it in a browser.",
            )
        if name == MANIFEST:
            if self._manifest_sha is None:
                self._manifest_sha = await run_in_threadpool(sha256_of, self._folder / MANIFEST)
            sha256 = self._manifest_sha
        elif name in self._files and "sha256" in self._files[name]:
            sha256 = self._files[name]["sha256"]
        else:
            raise ApiError(
                404,
                f"The bundle has no file {name[:200]!r}; only {MANIFEST} and the files it lists "
                "are served.",
            )
        if _unchanged(request, sha256):
            return Response(status_code=304, headers=_headers(sha256))
        return FileResponse(
            self._folder / name, media_type=media_type(name), headers=_headers(sha256)
        )

    async def runtime_file(self, request: Request) -> Response:
        files = await run_in_threadpool(self._runtime_files)
        path = request.path_params["path"]
        if path not in files:
            raise ApiError(404, f"The browser runtime has no file {path[:200]!r}.")
        data, sha256 = files[path]
        if _unchanged(request, sha256):
            return Response(status_code=304, headers=_headers(sha256))
        return Response(data, media_type=media_type(path), headers=_headers(sha256))

    def _runtime_files(self) -> dict[str, tuple[bytes, str]]:
        """Every file of the browser runtime, read once (an ApiError 503 while it cannot be)."""
        with self._lock:
            if self._runtime is None:
                try:
                    self._runtime = runtime_files()
                except EdgeError as exc:
                    message = f"The browser runtime is not available here: {exc}"
                    raise ApiError(503, message) from None
            return self._runtime


def runtime_files() -> dict[str, tuple[bytes, str]]:
    """The browser runtime as a web pack lays it out (``js/``, ``vendor/``), and ``pack.json``
    with each file's size and SHA-256 and onnxruntime-web's builds.

    Raises:
        EdgeError: onnxruntime-web (or another vendored package) is neither installed in
            web/node_modules nor downloadable at the pinned version.
    """
    from gpt2_edge.pack.npm_files import npm_package
    from gpt2_edge.pack.web import ORT, ORT_BUILDS, VENDORED, assets

    web = assets()
    found: dict[str, bytes] = {
        f"js/{module.name}": module.read_bytes() for module in sorted((web / "src").glob("*.mjs"))
    }
    packages = {name: npm_package(name, web) for name in VENDORED}
    for name, files in VENDORED.items():
        for inside, target in files:
            found[target] = packages[name].read(inside)
    listing: dict[str, Any] = {
        "format": "gpt2-edge-web-runtime",
        "onnxruntime_web": {
            "version": packages[ORT].version,
            "builds": {
                build: {
                    "module": f"vendor/onnxruntime-web/{module}",
                    "glue": f"vendor/onnxruntime-web/{glue}",
                    "wasm": f"vendor/onnxruntime-web/{binary}",
                }
                for build, (module, glue, binary) in ORT_BUILDS.items()
            },
        },
        "files": {
            path: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in sorted(found.items())
        },
    }
    found[RUNTIME_LISTING] = (json.dumps(listing, indent=2) + "\n").encode()
    return {path: (data, hashlib.sha256(data).hexdigest()) for path, data in found.items()}
