"""gpt2-serve's "in this browser" mode: the read-only routes a page runs the model from
(``/bundle/``: only the files bundle.json lists, with their SHA-256 as ETag; ``/browser/``: the
JavaScript runtime and onnxruntime-web, with pack.json), the cross-origin isolation headers, the
API key on the model's files, and the page generating in Debian's chromium the tokens the server
generates for the same request.

The routes' tests need web/node_modules (``npm ci --ignore-scripts`` in web/), the page's test
chromium and Playwright; each skips with the reason where they are missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")

from gpt2_edge.runtime import Generator, load  # noqa: E402
from serve_support import running  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ISOLATED = {
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-embedder-policy": "require-corp",
}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lowercase names) and body of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@pytest.fixture(scope="module")
def need_runtime() -> None:
    if not (ROOT / "web" / "node_modules" / "onnxruntime-web").is_dir():
        pytest.skip("web/node_modules is missing: run npm ci --ignore-scripts in web/")


def test_bundle_route_serves_only_the_listed_files_with_their_sha256(
    gen: Generator, bundle: Path
) -> None:
    listed = json.loads((bundle / "bundle.json").read_text())["files"]
    (bundle / "notes.txt").write_text("not listed")
    with running(gen) as server:
        for name, entry in listed.items():
            status, headers, body = get(f"{server.url}/bundle/{name}")
            assert status == 200 and hashlib.sha256(body).hexdigest() == entry["sha256"]
            assert headers["etag"] == f'"{entry["sha256"]}"'
            assert headers["cache-control"] == "no-cache"
            assert {k: headers[k] for k in ISOLATED} == ISOLATED
            again, _, empty = get(
                f"{server.url}/bundle/{name}", **{"If-None-Match": headers["etag"]}
            )
            assert (again, empty) == (304, b"")
        status, headers, body = get(f"{server.url}/bundle/bundle.json")
        assert status == 200 and body == (bundle / "bundle.json").read_bytes()
        for name in ("notes.txt", "../bundle.json", "model.onnx.data"):
            status, _, body = get(f"{server.url}/bundle/{name}")
            assert status == 404, name
            message = json.loads(body)["error"]["message"]
            assert message.endswith("only bundle.json and the files it lists are served.")


def test_the_model_s_files_need_the_key_and_the_runtime_does_not(
    gen: Generator, need_runtime: None
) -> None:
    with running(gen, api_key="secret") as server:
        assert get(f"{server.url}/bundle/bundle.json")[0] == 401
        assert get(f"{server.url}/bundle/bundle.json", Authorization="Bearer secret")[0] == 200
        status, headers, body = get(f"{server.url}/browser/pack.json")
        assert status == 200
        listing = json.loads(body)
        for path, entry in listing["files"].items():
            status, headers, data = get(f"{server.url}/browser/{path}")
            assert status == 200 and hashlib.sha256(data).hexdigest() == entry["sha256"], path
            if path.endswith(".mjs"):
                assert headers["content-type"].startswith("text/javascript")
        wasm = listing["onnxruntime_web"]["builds"]["wasm"]["wasm"]
        assert get(f"{server.url}/browser/{wasm}")[1]["content-type"] == "application/wasm"
        assert get(f"{server.url}/browser/nothing.mjs")[0] == 404
        _, headers, _ = get(f"{server.url}/")
        assert {k: headers[k] for k in ISOLATED} == ISOLATED  # the page is isolated: threads


def test_a_plain_optimum_folder_has_no_bundle_to_serve(tiny_optimum_export: Path) -> None:
    with running(load(tiny_optimum_export, provider="cpu", threads=1)) as server:
        status, _, body = get(f"{server.url}/bundle/bundle.json")
    assert status == 404
    assert json.loads(body)["error"]["message"] == (
        "The server's model is a plain Optimum folder, without the bundle.json whose checksums a "
        "browser checks; export it with gpt2-export to run it in a browser."
    )


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.mark.browser
def test_the_page_generates_in_this_browser_what_the_server_generates(
    gen: Generator, need_runtime: None, browser: Any
) -> None:
    from playwright.sync_api import expect

    prompt, tokens = "The history of the city", 12
    with running(gen, api_key="secret") as server:
        body = json.dumps(
            {"model": "tiny", "prompt": prompt, "max_tokens": tokens, "temperature": 0}
        ).encode()
        request = urllib.request.Request(
            f"{server.url}/v1/completions",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": "Bearer secret"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            expected = json.loads(response.read())["choices"][0]["text"]
        page = browser.new_page()
        asked: list[str] = []
        page.on("request", lambda r: asked.append(r.url))
        page.goto(server.url + "/")
        page.fill("#api-key", "secret")
        page.dispatch_event("#api-key", "change")
        page.select_option("#where", "browser")
        expect(page.locator("#model")).to_contain_text("in this browser (WASM", timeout=60_000)
        facts = page.evaluate(
            "async () => ({isolated: crossOriginIsolated,"
            " threads: (await window.gpt2edge).threads})"
        )
        assert facts["isolated"] and facts["threads"] >= 1
        page.fill("#prompt", prompt)
        page.fill("#max-tokens", str(tokens))
        page.fill("#temperature", "0")
        page.click("#generate")
        expect(page.locator("#output")).to_have_attribute("data-state", "done", timeout=60_000)
        assert page.locator("#completion").text_content() == expected
        expect(page.locator("#status")).to_contain_text("in this browser")
        # The generation ran here: the page asked the server for files, never for a completion.
        assert not [u for u in asked if u.endswith("/v1/completions")]
        assert all(u.startswith(server.url) for u in asked), asked
        page.select_option("#where", "server")  # and back: the server answers again
        page.click("#generate")
        expect(page.locator("#output")).to_have_attribute("data-state", "done", timeout=60_000)
        assert page.locator("#completion").text_content() == expected
        assert [u for u in asked if u.endswith("/v1/completions")]
        page.close()
