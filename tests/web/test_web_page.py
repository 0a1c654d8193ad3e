"""``gpt2-pack --platform web`` and its page in Debian's chromium, driven by Playwright.

The packs of the trained fixture's bundles are served from 127.0.0.1 with the cross-origin
isolation headers, as the pack's serve.py serves them, and driven through ``window.gpt2edge``
(the Promise of the page's generator) and through the page's own controls. The figures to match
are the Python runtime's (``web_support.build_reference``).

Skipped with a reason where chromium, Playwright, node's packages or ../shared are missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_support import WEB, outward_address, static_server

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
# Headless, sandbox-free (we run as root in a container), and quiet: no network of its own.
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
LOAD_MS = 60_000


def gpt2_pack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt2_edge.pack", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def packs(web_bundles: dict, web_reference: Path, tmp_path_factory: pytest.TempPathFactory):
    """Web packs of the fp32, int8 and EOS-changed bundles (the fp32 one through the CLI)."""
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.skip("web/node_modules is missing: run npm ci --ignore-scripts in web/")
    from gpt2_edge.pack.web import make_web_pack

    folder = tmp_path_factory.mktemp("web-packs")
    fp32 = folder / "fp32"
    done = gpt2_pack(str(web_bundles["fp32"]), "--platform", "web", "--output", str(fp32))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(fp32)
    reference = json.loads(web_reference.read_text())
    made = {"fp32": fp32}
    made["int8"] = make_web_pack(web_bundles["int8"], folder / "int8").folder
    made["eos"] = make_web_pack(reference["eos"]["bundle"], folder / "eos").folder
    return made


@pytest.fixture(scope="module")
def reference(web_reference: Path) -> dict:
    return json.loads(web_reference.read_text())


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    """One Playwright driver for the module's browsers (a second sync driver cannot start while
    one runs)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
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


def open_pack(browser: Any, url: str, query: str = "") -> tuple[Any, list[str]]:
    """The pack's page, loaded (its generator ready); and every URL it asks for."""
    page = browser.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(f"{url}/{query}")
    page.wait_for_function("document.getElementById('status').textContent !== ''")
    sync_api.expect(page.locator("#generate")).to_be_enabled(timeout=LOAD_MS)
    return page, asked


def run(page: Any, prompt: str, settings: dict) -> dict:
    """``generate(prompt, settings)`` of the page's generator."""
    return page.evaluate(
        "async ([p, s]) => (await window.gpt2edge).generate(p, s)", [prompt, settings]
    )


def greedy(reference: dict) -> dict:
    return {"max_new_tokens": reference["max_new_tokens"], "temperature": 0, "ignore_eos": True}


def test_pack_lists_every_file_with_its_sha256(packs: dict) -> None:
    folder = packs["fp32"]
    pack = json.loads((folder / "pack.json").read_text())
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {
        "pack.json"
    }
    assert set(pack["files"]) == on_disk
    for name, entry in pack["files"].items():
        data = (folder / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    lock = json.loads((WEB / "package-lock.json").read_text())["packages"]
    assert pack["onnxruntime_web"]["version"] == lock["node_modules/onnxruntime-web"]["version"]
    for build in pack["onnxruntime_web"]["builds"].values():
        assert {build["module"], build["glue"], build["wasm"]} <= on_disk
    assert "Cross-Origin-Embedder-Policy: require-corp" in (folder / "README.txt").read_text()


def test_fp32_greedy_tokens_and_perplexity_match_python(
    browser: Any, packs: dict, reference: dict
) -> None:
    """Two WASM threads on an isolated page: the Python runtime's tokens for every prompt."""
    with static_server(packs["fp32"]) as url:
        page, asked = open_pack(browser, url, "?threads=2")
        facts = page.evaluate(
            "async () => { const g = await window.gpt2edge;"
            " return {isolated: crossOriginIsolated, threads: g.threads, provider: g.provider}; }"
        )
        assert facts == {"isolated": True, "threads": 2, "provider": "wasm"}
        for prompt, expected in zip(reference["prompts"], reference["greedy"]["fp32"], strict=True):
            result = run(page, prompt, greedy(reference))
            assert result["tokens"] == expected, prompt
        assert all(u.startswith(url) or u.startswith("data:") for u in asked), asked
        # onnxruntime-web runs the binary the page checked against pack.json, fetching no other.
        assert [u for u in asked if u.endswith(".wasm")] == [
            f"{url}/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"
        ]
        page.close()


def test_int8_agrees_with_python_and_its_perplexity_is_within_1_percent(
    browser: Any, packs: dict, reference: dict
) -> None:
    with static_server(packs["int8"]) as url:
        page, _ = open_pack(browser, url)
        same = total = 0
        for prompt, expected in zip(reference["prompts"], reference["greedy"]["int8"], strict=True):
            tokens = run(page, prompt, greedy(reference))["tokens"]
            same += sum(a == b for a, b in zip(tokens, expected, strict=True))
            total += len(expected)
        assert same / total >= 0.9, f"{same} of {total}"
        ppl = reference["perplexity"]
        text = Path(ppl["text"]).read_text(encoding="utf-8")
        found = page.evaluate(
            "async ([text, n, context]) => { const g = await window.gpt2edge;"
            " const ids = g.tokenizer.encode(text).slice(0, n);"
            " return {ids, ...(await g.perplexity(ids, {context}))}; }",
            [text, ppl["tokens"], ppl["context"]],
        )
        assert found["ids"] == ppl["ids"]
        assert abs(found["perplexity"] / ppl["int8"] - 1) < 0.01, (found, ppl["int8"])
        page.close()


def test_seed_repeats_and_stop_strings_and_eos_end_the_text(
    browser: Any, packs: dict, reference: dict
) -> None:
    with static_server(packs["fp32"]) as url:
        page, _ = open_pack(browser, url)
        sampled = {"max_new_tokens": 24, "temperature": 1.0, "top_k": 0, "seed": 1234}
        first, again = run(page, "The game was", sampled), run(page, "The game was", sampled)
        other = run(page, "The game was", {**sampled, "seed": 99})
        assert first["text"] == again["text"] and first["tokens"] != other["tokens"]
        case = reference["stop"]
        settings = {"max_new_tokens": 32, "temperature": 0, "stop": case["stop"]}
        stopped = run(page, case["prompt"], settings)
        assert [stopped[k] for k in ("text", "tokens", "finish_reason")] == [
            case["text"], case["tokens"], "stop"
        ]  # fmt: skip
        page.close()
    with static_server(packs["eos"]) as url:
        page, _ = open_pack(browser, url)
        case = reference["eos"]
        ended = run(page, case["prompt"], {"max_new_tokens": 32, "temperature": 0})
        assert [ended[k] for k in ("text", "tokens", "finish_reason")] == [
            case["text"], case["tokens"], "eos"
        ]  # fmt: skip
        page.close()


def test_the_page_streams_stops_and_shows_the_finish_line(browser: Any, packs: dict) -> None:
    with static_server(packs["fp32"]) as url:
        page, _ = open_pack(browser, url)
        sync_api.expect(page.locator("#model")).to_contain_text("in this browser (WASM")
        page.fill("#prompt", "The history of the city")
        page.fill("#max-tokens", "1000")
        page.fill("#temperature", "0")  # the fixture's greedy text never ends by itself
        page.click("#generate")
        completion = page.locator("#completion")
        sync_api.expect(completion).not_to_be_empty(timeout=10_000)
        seen = completion.text_content() or ""
        page.wait_for_function(
            "n => document.getElementById('completion').textContent.length > n", arg=len(seen)
        )  # more text arrived while running: it streams
        page.click("#stop")
        sync_api.expect(page.locator("#output")).to_have_attribute("data-state", "stopped")
        sync_api.expect(page.locator("#status")).to_contain_text("stopped after")
        page.fill("#max-tokens", "12")
        page.fill("#temperature", "0.8")
        page.fill("#seed", "7")
        page.click("#generate")
        sync_api.expect(page.locator("#output")).to_have_attribute(
            "data-state", "done", timeout=LOAD_MS
        )
        status = page.locator("#status").text_content() or ""
        assert "finish: length" in status and "12 tokens" in status and "tokens/s" in status
        assert "seed 7" in status
        page.fill("#top-p", "0")  # a setting out of range is one sentence in the page
        page.click("#generate")
        sync_api.expect(page.locator("#status")).to_have_text(
            "top_p must be a number in (0, 1] (1 turns it off), got 0."
        )
        page.close()


CORRUPTED = [
    (
        "model/model.onnx",
        "model.onnx does not match its SHA-256 in bundle.json; the file is corrupt or was "
        "changed: copy the pack again or export the bundle again.",
    ),
    (
        "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm",
        "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm does not match its SHA-256 in "
        "pack.json; the file is corrupt or was changed: copy the pack again.",
    ),
]


@pytest.mark.parametrize(("name", "sentence"), CORRUPTED)
def test_a_corrupted_file_is_one_sentence_in_the_page(
    browser: Any, packs: dict, tmp_path: Path, name: str, sentence: str
) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(packs["int8"], folder)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / name).write_bytes(bytes(data))
    with static_server(folder) as url:
        page = browser.new_page()
        page.goto(url + "/")
        sync_api.expect(page.locator("body")).to_have_attribute(
            "data-state", "failed", timeout=LOAD_MS
        )
        sync_api.expect(page.locator("#status")).to_have_class("error")
        sync_api.expect(page.locator("#status")).to_have_text(sentence)
        assert page.locator("#generate").is_disabled()
        page.close()


def test_without_isolation_headers_it_runs_on_one_thread_and_says_why(
    browser: Any, packs: dict, reference: dict
) -> None:
    with static_server(packs["int8"], isolate=False) as url:
        page, _ = open_pack(browser, url, "?threads=2")
        sync_api.expect(page.locator("#notices")).to_contain_text("cross-origin isolated")
        assert page.evaluate("async () => (await window.gpt2edge).threads") == 1
        tokens = run(page, reference["prompts"][0], greedy(reference))["tokens"]
        assert len(tokens) == reference["max_new_tokens"]
        page.close()


def test_over_plain_http_from_another_address_it_still_runs(
    browser: Any, packs: dict, reference: dict
) -> None:
    """Not a secure context (a laptop's address opened on a phone): no crypto.subtle, so the
    files are checked with @noble/hashes, and one thread."""
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    with static_server(packs["fp32"], host=address) as url:
        page, asked = open_pack(browser, url, "?threads=2")
        facts = page.evaluate(
            "async () => ({secure: isSecureContext, subtle: !!globalThis.crypto.subtle,"
            " threads: (await window.gpt2edge).threads})"
        )
        assert facts == {"secure": False, "subtle": False, "threads": 1}
        assert f"{url}/vendor/noble-hashes/sha2.js" in asked
        tokens = run(page, reference["prompts"][1], greedy(reference))["tokens"]
        assert tokens == reference["greedy"]["fp32"][1]
        page.close()


def test_gpt2_pack_web_refuses_what_it_cannot_pack(tmp_path: Path) -> None:
    (tmp_path / "not-a-bundle").mkdir()
    done = gpt2_pack(str(tmp_path / "not-a-bundle"), "--platform", "web", "-o", str(tmp_path / "o"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].endswith("export it with gpt2-export first.")
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".o.partial-*"))


# --- WebGPU: this machine has no GPU; chromium's SwiftShader adapter (WebGPU on the CPU, through
# Vulkan) runs the same WGSL kernels, without shader-f16 and about 100 times slower than WASM ----

SWIFTSHADER = [f for f in FLAGS if f != "--disable-gpu"] + [
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-vulkan=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--use-angle=swiftshader",
]


@pytest.fixture(scope="module")
def webgpu_browser(playwright: Any) -> Iterator[Any]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=SWIFTSHADER)
    try:
        yield browser
    finally:
        browser.close()


def need_adapter(browser: Any, url: str) -> None:
    """Skip unless a page from ``url`` (127.0.0.1: a secure context, where alone navigator.gpu
    exists) gets a WebGPU adapter."""
    page = browser.new_page()
    page.goto(url + "/pack.json")
    found = page.evaluate("async () => !!(await navigator.gpu?.requestAdapter())")
    page.close()
    if not found:
        pytest.skip("this chromium offers no WebGPU adapter, not even SwiftShader's")


def test_webgpu_without_shader_f16_runs_a_float16_cache_on_wasm(
    webgpu_browser: Any, packs: dict
) -> None:
    with static_server(packs["int8"]) as url:  # int8 bundles keep a float16 KV cache
        need_adapter(webgpu_browser, url)
        page, _ = open_pack(webgpu_browser, url)
        sync_api.expect(page.locator("#notices")).to_have_text(
            "This browser's WebGPU adapter has no shader-f16, which this bundle's float16 tensors "
            "need; running on WASM."
        )
        assert page.evaluate("async () => (await window.gpt2edge).provider") == "wasm"
        page.close()
        page = webgpu_browser.new_page()
        page.goto(url + "/?provider=webgpu")
        sync_api.expect(page.locator("#status")).to_have_text(
            "This browser's WebGPU adapter has no shader-f16, which this bundle's float16 tensors "
            'need; use the WASM backend (provider "wasm").',
            timeout=LOAD_MS,
        )
        page.close()


@pytest.mark.slow
def test_webgpu_gives_the_python_runtime_s_greedy_tokens(
    webgpu_browser: Any, packs: dict, reference: dict
) -> None:
    """fp32 on SwiftShader's adapter, KV cache kept on the "GPU": ~20 s for 4 tokens."""
    with static_server(packs["fp32"]) as url:
        need_adapter(webgpu_browser, url)
        page, _ = open_pack(webgpu_browser, url, "?provider=webgpu")
        assert page.evaluate("async () => (await window.gpt2edge).provider") == "webgpu"
        settings = {**greedy(reference), "max_new_tokens": 4}
        tokens = run(page, reference["prompts"][0], settings)["tokens"]
        assert tokens == reference["greedy"]["fp32"][0][:4]
        page.close()
