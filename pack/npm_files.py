"""The npm packages a web pack vendors (onnxruntime-web, the tokenizer, SHA-256), at the versions
web/package-lock.json pins, each file read from one of two places:

1. ``node_modules`` beside the lockfile, where ``npm ci --ignore-scripts`` in a checkout's web/
   put them, when its version is the pinned one;
2. else the package's tarball from the npm registry (the lockfile's ``resolved`` URL, or the
   registry's usual tarball address where the lockfile omits it, as npm's
   ``omit-lockfile-registry-resolved`` does; ``npm_config_registry`` names a mirror, as for npm),
   checked against the lockfile's ``integrity`` (SHA-512) and kept in gpt2-edge's cache folder.

Making a web pack thus needs the npm registry once, as a device pack needs PyPI; the pack itself
needs no network. Nothing from the registry is trusted unchecked: a tarball that does not match
its lockfile hash is refused.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gpt2_edge.runtime import EdgeError, cache_dir

DEFAULT_REGISTRY = "https://registry.npmjs.org/"
TIMEOUT_S = 60
# A tarball's files are read into memory; onnxruntime-web 1.31.1's is 27 MiB.
MAX_TARBALL_BYTES = 512 << 20


@dataclass(frozen=True)
class NpmPackage:
    """One locked package: where its files come from, and how to read one."""

    name: str
    version: str
    origin: str  # the node_modules folder or the tarball, for messages
    _folder: Path | None = None
    _tarball: bytes | None = None

    def read(self, path: str) -> bytes:
        """The file ``path`` of the package (as in the package, e.g. ``dist/ort.min.mjs``)."""
        if self._folder is not None:
            try:
                return (self._folder / path).read_bytes()
            except OSError as exc:
                raise EdgeError(
                    f"{self._folder / path} cannot be read ({exc.strerror or exc}); run npm ci "
                    "--ignore-scripts in gpt2-edge's web/ folder again."
                ) from None
        assert self._tarball is not None
        with tarfile.open(fileobj=io.BytesIO(self._tarball), mode="r:gz") as tar:
            try:
                member = tar.getmember(f"package/{path}")
            except KeyError:
                raise EdgeError(
                    f"{self.name} {self.version} has no {path}; gpt2-edge expects another version."
                ) from None
            handle = tar.extractfile(member)
            if handle is None:
                raise EdgeError(f"{self.name} {self.version}'s {path} is not a regular file.")
            return handle.read()


def read_lock(lockfile: Path) -> dict[str, dict]:
    """The locked packages of ``package-lock.json``: name -> {version, resolved, integrity}."""
    data = json.loads(lockfile.read_text(encoding="utf-8"))
    found = {}
    for key, entry in data.get("packages", {}).items():
        if key.startswith("node_modules/") and "node_modules/" not in key[len("node_modules/") :]:
            found[key[len("node_modules/") :]] = entry
    return found


def npm_package(name: str, web: Path, say=lambda line: None) -> NpmPackage:
    """The package ``name`` at the version ``web/package-lock.json`` pins.

    Args:
        name: the npm package (``onnxruntime-web``).
        web: the folder with ``package-lock.json`` (and maybe ``node_modules``).
        say: called with one line when the package is downloaded.

    Raises:
        EdgeError: the lockfile does not pin it, or it is neither installed at that version nor
            downloadable, or the download does not match the lockfile's integrity hash.
    """
    locked = read_lock(web / "package-lock.json").get(name)
    if locked is None:
        raise EdgeError(f"web/package-lock.json does not pin {name}; reinstall gpt2-edge.")
    version = locked["version"]
    installed = web / "node_modules" / name
    if _installed_version(installed) == version:
        return NpmPackage(name, version, str(installed), _folder=installed)
    url = tarball_url(name, locked)
    return NpmPackage(name, version, url, _tarball=_tarball(name, locked, url, say))


def _installed_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def tarball_url(name: str, locked: dict) -> str:
    """Where the registry keeps the locked version's tarball."""
    resolved = locked.get("resolved")
    if not resolved:  # npm's layout: <registry>/<name>/-/<name without its scope>-<version>.tgz
        resolved = f"{DEFAULT_REGISTRY}{name}/-/{name.rsplit('/', 1)[-1]}-{locked['version']}.tgz"
    return _registry_url(resolved)


def _tarball(name: str, locked: dict, url: str, say) -> bytes:
    """The package's tarball, from the cache or ``url``, checked against its integrity."""
    version, integrity = locked["version"], locked["integrity"]
    file_name = f"{name.replace('/', '+')}-{version}.tgz"
    root = cache_dir()
    cached = root / "npm" / file_name if root is not None else None
    if cached is not None and cached.is_file():
        data = cached.read_bytes()
        if _matches(data, integrity):
            return data
    say(f"Downloading {name} {version} from {url}")
    data = _download(url, name, version)
    if not _matches(data, integrity):
        raise EdgeError(
            f"The {name} {version} tarball from {url} does not match its hash in "
            "web/package-lock.json; the registry or a proxy changed it, so it is not used."
        )
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".partial")
            partial.write_bytes(data)
            os.replace(partial, cached)
        except OSError:
            pass  # a read-only cache costs a download next time, nothing else
    return data


def _registry_url(resolved: str) -> str:
    """The lockfile's URL, moved to ``npm_config_registry`` when that names a mirror."""
    mirror = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY")
    if not mirror or not resolved.startswith(DEFAULT_REGISTRY):
        return resolved
    return mirror.rstrip("/") + "/" + resolved[len(DEFAULT_REGISTRY) :]


def _download(url: str, name: str, version: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            data = response.read(MAX_TARBALL_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise EdgeError(
            f"{name} {version} is not installed in gpt2-edge's web/node_modules and cannot be "
            f"downloaded from {url} ({reason}); connect to the npm registry once, or run npm ci "
            "--ignore-scripts in a checkout's web/ folder."
        ) from None
    if len(data) > MAX_TARBALL_BYTES:
        raise EdgeError(f"{url} is larger than {MAX_TARBALL_BYTES >> 20} MiB; it is not {name}.")
    return data


def _matches(data: bytes, integrity: str) -> bool:
    """Whether ``data`` has the lockfile's Subresource-Integrity hash (``sha512-<base64>``)."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm not in ("sha512", "sha384", "sha256"):
        return False
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode() == expected
