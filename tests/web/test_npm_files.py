"""Where a web pack's npm files come from (pack/npm_files.py): web/node_modules at the locked
version, else the registry's tarball checked against the lockfile's hash and cached. The
"registry" here is a local server; nothing leaves the machine."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from gpt2_edge.pack.npm_files import npm_package
from gpt2_edge.runtime import EdgeError
from web_support import static_server

MODULE = b"export const answer = 42;\n"


def tarball(version: str = "1.0.0") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in (
            ("package/package.json", json.dumps({"name": "fake", "version": version}).encode()),
            ("package/dist/fake.mjs", MODULE),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def lock_folder(folder: Path, url: str, data: bytes) -> Path:
    """A web/ folder whose package-lock.json pins fake 1.0.0 with ``data``'s hash at ``url``."""
    folder.mkdir(parents=True, exist_ok=True)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    entry = {"version": "1.0.0", "resolved": url, "integrity": integrity}
    lock = {"lockfileVersion": 3, "packages": {"": {}, "node_modules/fake": entry}}
    (folder / "package-lock.json").write_text(json.dumps(lock))
    return folder


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPT2_EDGE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_checked_tarball_is_downloaded_once_then_read_from_the_cache(
    tmp_path: Path, cache: Path
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    data = tarball()
    (registry / "fake-1.0.0.tgz").write_bytes(data)
    said: list[str] = []
    with static_server(registry, isolate=False) as url:
        web = lock_folder(tmp_path / "web", f"{url}/fake-1.0.0.tgz", data)
        package = npm_package("fake", web, said.append)
        assert package.read("dist/fake.mjs") == MODULE
    assert said == [f"Downloading fake 1.0.0 from {url}/fake-1.0.0.tgz"]
    assert (cache / "npm" / "fake-1.0.0.tgz").read_bytes() == data
    again = npm_package("fake", web, said.append)  # the server is gone: the cache serves it
    assert again.read("dist/fake.mjs") == MODULE and len(said) == 1
    with pytest.raises(EdgeError, match=r"^fake 1\.0\.0 has no dist/other\.mjs"):
        again.read("dist/other.mjs")


def test_a_tarball_that_does_not_match_the_lockfile_is_refused(tmp_path: Path, cache: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "fake-1.0.0.tgz").write_bytes(tarball("6.6.6"))  # not what was locked
    with static_server(registry, isolate=False) as url:
        web = lock_folder(tmp_path / "web", f"{url}/fake-1.0.0.tgz", tarball())
        with pytest.raises(EdgeError, match="does not match its hash in web/package-lock.json"):
            npm_package("fake", web)
    assert not (cache / "npm" / "fake-1.0.0.tgz").exists()


def test_installed_node_modules_at_the_locked_version_come_first(
    tmp_path: Path, cache: Path
) -> None:
    web = lock_folder(tmp_path / "web", "http://127.0.0.1:9/fake-1.0.0.tgz", tarball())
    installed = web / "node_modules" / "fake"
    (installed / "dist").mkdir(parents=True)
    (installed / "package.json").write_text(json.dumps({"version": "1.0.0"}))
    (installed / "dist" / "fake.mjs").write_bytes(MODULE)
    assert npm_package("fake", web).read("dist/fake.mjs") == MODULE
    (installed / "package.json").write_text(json.dumps({"version": "0.9.0"}))  # not the locked one
    with pytest.raises(EdgeError, match=r"^fake 1\.0\.0 is not installed .* cannot be downloaded"):
        npm_package("fake", web)  # port 9 (discard) refuses: one sentence, no traceback


def test_a_lockfile_without_urls_downloads_from_the_registry_npm_names(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """npm's omit-lockfile-registry-resolved leaves the URL out: the tarball is then at the
    registry's usual address, on the mirror that npm_config_registry names."""
    data = tarball()
    registry = tmp_path / "registry"
    (registry / "fake" / "-").mkdir(parents=True)
    (registry / "fake" / "-" / "fake-1.0.0.tgz").write_bytes(data)
    web = lock_folder(tmp_path / "web", "", data)
    lock = json.loads((web / "package-lock.json").read_text())
    del lock["packages"]["node_modules/fake"]["resolved"]
    (web / "package-lock.json").write_text(json.dumps(lock))
    with static_server(registry, isolate=False) as url:
        monkeypatch.setenv("npm_config_registry", url + "/")
        said: list[str] = []
        assert npm_package("fake", web, said.append).read("dist/fake.mjs") == MODULE
    assert said == [f"Downloading fake 1.0.0 from {url}/fake/-/fake-1.0.0.tgz"]
