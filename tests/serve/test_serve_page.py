"""The page at ``/`` in a real browser: Debian's chromium driven by Playwright (no browser
download). A person types a prompt, generates, watches the text stream in, and presses Stop, which
really stops generation on the server; a generation left to finish shows its finish reason and
tokens/s. Skipped where chromium or Playwright is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from gpt2_edge.runtime import Generator  # noqa: E402
from serve_support import running, slowed  # noqa: E402

pytestmark = pytest.mark.browser  # Debian's chromium through Playwright
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
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


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """The page, and every URL it asks for."""
    page = browser.new_page()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(url + "/")
    sync_api.expect(page.locator("#model")).to_contain_text("tiny")
    return page, asked


def test_type_generate_stream_and_stop(browser: Any, gen: Generator) -> None:
    with running(slowed(gen, 0.03)) as server:
        page, asked = open_page(browser, server.url)
        page.fill("#prompt", "The history of the city")
        page.fill("#max-tokens", "100")
        page.click("#generate")
        completion = page.locator("#completion")
        sync_api.expect(completion).not_to_be_empty(timeout=10_000)  # the first pieces are in
        sync_api.expect(page.locator("#output")).to_have_attribute("data-state", "running")
        seen = completion.text_content() or ""
        page.wait_for_function(
            "n => document.getElementById('completion').textContent.length > n",
            arg=len(seen),
        )  # more text arrived while running: it streams
        page.click("#stop")
        sync_api.expect(page.locator("#output")).to_have_attribute("data-state", "stopped")
        sync_api.expect(page.locator("#status")).to_contain_text("stopped")
        assert page.locator("#generate").is_enabled() and page.locator("#stop").is_disabled()
        # The server stopped too: its row was freed, and fewer than 100 tokens were made.
        server.wait_for(lambda: server.metric("gpt2_serve_cancelled_rows_total") == 1)
        assert server.metric("gpt2_serve_batch_rows") == 0
        assert server.metric("gpt2_serve_generated_tokens_total") < 100
        assert all(u.startswith(server.url) for u in asked), asked  # nothing from elsewhere
        page.close()


def test_a_finished_generation_shows_its_reason_and_speed(browser: Any, gen: Generator) -> None:
    expected = gen.generate("Once upon a time", max_new_tokens=12, temperature=0)
    with running(gen) as server:
        page, _ = open_page(browser, server.url)
        page.fill("#prompt", "Once upon a time")
        page.fill("#max-tokens", "12")
        page.fill("#temperature", "0")
        page.click("#generate")
        sync_api.expect(page.locator("#output")).to_have_attribute("data-state", "done")
        status = page.locator("#status").text_content() or ""
        assert "finish: length" in status and "12 tokens" in status and "tokens/s" in status
        assert page.locator("#completion").text_content() == expected.text
        page.close()


def test_a_refused_request_shows_the_servers_sentence(browser: Any, gen: Generator) -> None:
    with running(gen, api_key="k") as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        sync_api.expect(page.locator("#status")).to_contain_text("API key")
        page.fill("#api-key", "k")
        page.dispatch_event("#api-key", "change")
        sync_api.expect(page.locator("#model")).to_contain_text("tiny")
        page.fill("#max-tokens", "3")
        page.click("#generate")
        sync_api.expect(page.locator("#output")).to_have_attribute("data-state", "done")
        page.fill("#temperature", "-1")
        page.click("#generate")
        sync_api.expect(page.locator("#status")).to_contain_text("temperature must be")
        page.close()
