"""The web page in a real browser: Playwright driving Debian's Chromium against uvicorn.

Skipped when Playwright or ``/usr/bin/chromium`` is missing, unless
``IMR_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where a missing browser fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from imr_outcome.serve.api import create_app
from imr_outcome.serve.api_limits import ServeSettings

from conftest import LETTER_FIXTURES
from model_factory import registered_tfidf_store, write_untrained_transformer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUEST = "Physical therapy 6 sessions for the lumbar spine"
SUMMARY = (
    "The injured worker is a 44 year old male with chronic low back pain radiating to the "
    "left leg after lifting boxes at work. Examination showed lumbar tenderness and a "
    "positive straight leg raise. Treatment to date included medications and a home "
    "exercise program. The physician documented functional improvement and return to "
    "full duty."
)
KEY = "browser-key-0123456789abcdef"
#: The prediction's ``headline`` field (:meth:`DecisionRule.headline`), shown as sent.
HEADLINE = re.compile(
    r"^((Likely|Leaning) (upheld|overturned): \d{1,3}%\."
    r"|(Likely upheld|Uncertain|Likely overturned): (less likely than usual|more likely than "
    r"usual|about as likely as usual) to be overturned, \d{1,3}% \(usual: \d{1,3}%\)\."
    r"|Not enough information to estimate: .+\.)$"
)


def _browser_or_skip() -> Any:
    """Playwright's sync API, or skip (fail when IMR_REQUIRE_BROWSER=1) without a browser."""
    required = os.environ.get("IMR_REQUIRE_BROWSER") == "1"
    problem = None
    try:
        from playwright import sync_api
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is None and not CHROMIUM.is_file():
        problem = f"{CHROMIUM} not found (apt-get install chromium)"
    if problem is not None:
        if required:
            pytest.fail(f"IMR_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    return sync_api


@pytest.fixture(scope="module")
def model_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny-BERT transformer model directory (64-token windows)."""
    return write_untrained_transformer(tiny_bert, tmp_path_factory.mktemp("browser-model"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _serving(settings: ServeSettings) -> Iterator[str]:
    """The app on a free loopback port (uvicorn in a thread), ready; yields its URL."""
    port = _free_port()
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    """The app without an API key."""
    with _serving(ServeSettings(model_uri=str(model_dir))) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(model_dir: Path) -> Iterator[str]:
    """The app with the API key :data:`KEY`."""
    with _serving(ServeSettings(model_uri=str(model_dir), api_key=KEY)) as url:
        yield url


@contextlib.contextmanager
def _chromium_page(base_url: str) -> Iterator[Any]:
    """A Chromium page that may reach only ``base_url`` (any other request is recorded)."""
    sync_api = _browser_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = context.new_page()
            page.external_requests = []

            def guard(route: Any) -> None:
                if route.request.url.startswith(base_url):
                    route.continue_()
                else:
                    page.external_requests.append(route.request.url)
                    route.abort()

            page.route("**/*", guard)
            yield page
        finally:
            browser.close()


@pytest.fixture
def page(base_url: str) -> Iterator[Any]:
    """A Chromium page on the server without a key."""
    with _chromium_page(base_url) as opened:
        yield opened


@pytest.fixture
def keyed_page(keyed_url: str) -> Iterator[Any]:
    """A Chromium page on the server with a key."""
    with _chromium_page(keyed_url) as opened:
        yield opened


def test_the_page_highlights_the_evidence_in_the_typed_text(
    page: Any, base_url: str, tmp_path: Path
) -> None:
    page.goto(base_url)
    page.get_by_label("Requested treatment").fill(REQUEST)
    page.get_by_label("Case summary").fill(SUMMARY)
    page.get_by_label("Highlight the evidence (takes longer)").first.check()
    page.get_by_role("button", name="Estimate the outcome").click()
    page.wait_for_selector("article.prediction mark.ev", timeout=30_000)

    marks = page.eval_on_selector_all(
        "article.prediction mark.ev",
        """els => els.map(e => ({text: e.textContent, field: e.dataset.field,
            start: Number(e.dataset.start), end: Number(e.dataset.end),
            direction: e.dataset.direction, tip: e.getAttribute('title'),
            background: getComputedStyle(e).backgroundColor}))""",
    )
    headline = page.inner_text("article.prediction h3")
    screenshot = tmp_path / "imr-outcome-page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")

    assert HEADLINE.match(headline), headline
    typed = {"request": REQUEST, "summary": SUMMARY}
    assert marks
    for mark in marks:
        assert mark["text"] == typed[mark["field"]][mark["start"] : mark["end"]]
        assert mark["tip"].startswith(f"Toward {mark['direction']} \u2014 weight ")
    colours = {m["direction"]: m["background"] for m in marks}
    if len(colours) == 2:
        assert colours["Overturned"] != colours["Upheld"]
    assert page.get_by_role("note").inner_text().startswith("A statistical estimate, not advice.")
    assert page.evaluate("document.activeElement.id") == "result"
    assert page.external_requests == []
    assert screenshot.stat().st_size > 10_000


def test_the_page_shows_a_letter_s_items_and_input_errors(page: Any, base_url: str) -> None:
    page.goto(base_url)
    page.get_by_role("button", name="Estimate the outcome").click()
    empty_error = page.inner_text("#errors")
    page.get_by_label("IMR determination letter (PDF or TXT)").set_input_files(
        str(LETTER_FIXTURES / "mixed_multi.txt")
    )
    # evidence for four items takes minutes on a busy 2-core box; the titles are the point
    page.get_by_label("Highlight the evidence (takes longer)").nth(1).uncheck()
    page.get_by_role("button", name="Estimate the letter's items").click()
    page.wait_for_selector("article.prediction >> nth=3", timeout=30_000)

    titles = page.eval_on_selector_all(
        "article.prediction .item-title", "els => els.map(e => e.textContent)"
    )

    assert "Requested treatment: is empty" in empty_error
    assert titles[0] == "Item 1 of 4: Naproxen sodium 550mg #60"
    assert len(titles) == 4
    assert "The letter's decision: Overturned." in page.inner_text("article.prediction >> nth=0")
    assert page.external_requests == []


def test_the_page_asks_for_the_key_once_and_keeps_it_for_the_tab(
    keyed_page: Any, keyed_url: str
) -> None:
    page = keyed_page
    page.goto(keyed_url)
    page.wait_for_selector("#key-card:not([hidden])", timeout=30_000)
    asked_first = page.inner_text("#model-line")
    page.get_by_label("API key", exact=True).fill("not-the-key-0123456789")
    page.get_by_role("button", name="Use this key").click()
    page.wait_for_selector("#key-error:has-text('not accepted')", timeout=30_000)
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_role("button", name="Use this key").click()
    # Selectors, not wait_for_function: the page's CSP forbids the eval that the latter uses.
    page.wait_for_selector("#model-line:text-matches('^Model: .*version')", timeout=30_000)
    page.get_by_label("Requested treatment").fill(REQUEST)  # no summary: it is left out
    page.get_by_label("Highlight the evidence (takes longer)").first.uncheck()
    page.get_by_role("button", name="Estimate the outcome").click()
    page.wait_for_selector("article.prediction h3", timeout=30_000)
    headline = page.inner_text("article.prediction h3")
    stored = page.evaluate("sessionStorage.getItem('imr-outcome-api-key')")
    page.reload()
    page.wait_for_selector("#model-line:has-text('version')", timeout=30_000)
    asked_again = page.is_visible("#key-card")

    assert asked_first == "Model: enter the API key to see it."
    assert HEADLINE.match(headline), headline
    assert stored == KEY
    assert not asked_again
    assert page.external_requests == []


def test_the_page_has_an_icon(page: Any, base_url: str) -> None:
    page.goto(base_url)
    icon = page.evaluate(
        "fetch(document.querySelector('link[rel=icon]').href).then("
        "r => [r.status, r.headers.get('content-type')])"
    )

    assert icon == [200, "image/svg+xml"]


@pytest.fixture(scope="module")
def recorded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app serving a TF-IDF model trained with its record (rates, similar decisions)."""
    with registered_tfidf_store(tmp_path_factory.mktemp("recorded")) as result:
        pass
    assert (result.model_dir / "record").is_dir()
    with _serving(ServeSettings(model_uri=str(result.model_dir))) as url:
        yield url


@pytest.mark.parametrize("width", [1280, 390])
def test_the_page_shows_how_similar_requests_fared(
    recorded_url: str, width: int, tmp_path: Path
) -> None:
    with _chromium_page(recorded_url) as page:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(recorded_url)
        page.get_by_label("Requested treatment").fill(REQUEST)
        page.get_by_label("Case summary").fill(SUMMARY)
        page.get_by_role("button", name="Estimate the outcome").click()
        page.wait_for_selector("article.prediction section.record", timeout=30_000)

        headline = page.inner_text("article.prediction h3")
        rate = page.inner_text("section.record .rate-summary")
        decisions = page.eval_on_selector_all(
            "ol.similar > li",
            """els => els.map(e => ({outcome: e.dataset.outcome,
                head: e.querySelector('.similar-head').textContent,
                why: e.querySelector('.similar-why')?.textContent ?? null}))""",
        )
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        screenshot = tmp_path / f"imr-outcome-record-{width}.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot: {screenshot}")

    assert HEADLINE.match(headline), headline
    assert re.match(r"^Of \d+ past decisions on .+, \d+ (was|were) overturned \(\d+%", rate), rate
    assert len(decisions) == 5
    assert {d["outcome"] for d in decisions} <= {"Upheld", "Overturned"}
    assert all(re.search(r"\(similarity -?\d\.\d\d\)$", d["head"]) for d in decisions)
    assert overflow <= 0  # nothing wider than a phone screen
    assert screenshot.stat().st_size > 10_000
