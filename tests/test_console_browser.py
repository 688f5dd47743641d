"""The web console in a real browser: Debian's chromium, headless, driven by Playwright,
against a real ``hybridrec serve`` with models trained on the bundled sample.

Checks: every page loads without a console error (CSP violations and failed loads are
console errors); "Try it" lists the same items as the API for a known user and for a new
visitor; promote and rollback are refused without the token and work with it; a hostile
item id and feature name are shown as text, never as markup; an item put in the Catalog
becomes recommendable; the page carries a strict Content-Security-Policy.

Waits use locators, not ``wait_for_function``: Playwright evaluates those strings with
``eval``, which the console's policy forbids (as it should).

Screenshots of each page (1280x800) go to ``$HYBRIDREC_SCREENSHOTS`` when set (the
committed ones in ``docs/screenshots/`` come from ``HYBRIDREC_SCREENSHOTS=docs/screenshots
make test``), else to the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from hybridrec.client import Client
from hybridrec.config import Settings

from .conftest import cli_for
from .live_server import live_server, server_env

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "console-token"  # ASCII: the default server (granian) serves it
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_FEATURE = '"><script>alert(2)</script>'
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def playwright_browser():
    missing = None
    if not CHROMIUM.exists():
        missing = "browser tests need Debian's chromium: apt-get install chromium (.ci/run does)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "browser tests need Playwright: pip install -e '.[dev]'"
    if missing:
        if os.environ.get("CI"):  # CI must run them, never skip them
            pytest.fail(missing)
        pytest.skip(missing)
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as p:
        # Playwright gives every launch a fresh temporary profile (--user-data-dir)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def sample_server(playwright_browser, redis_server, tmp_path_factory):
    """The bundled sample in the store; a retraining cycle's model (with its report),
    then a second model on top; ``hybridrec serve`` with a token.

    Yields ``(base URL, [older version, current version])``.
    """
    from hybridrec.io.sample import sample_dir

    root = tmp_path_factory.mktemp("console")
    settings = Settings(
        redis_url=redis_server.url,
        key_prefix=f"c{uuid.uuid4().hex[:8]}",
        data_dir=root / ".hybridrec",
        model_store=str(root / "models"),
    )
    env = server_env(settings)
    cli = cli_for(settings)
    sample = sample_dir()
    cli("features", "load", "users", str(sample / "user_features.csv"))
    cli("features", "load", "items", str(sample / "item_features.csv"))
    cli("interactions", "load", str(sample / "interactions.csv"))
    cli("metadata", "load", str(sample / "item_metadata.csv"))
    cli("train", "--epochs", "2", "--threads", "2", "--publish")
    # new feedback (2% of the log: a retraining cycle needs 1%), then a cycle with the
    # champion's 2 epochs: a second version, with its report
    log = pd.read_csv(sample / "interactions.csv", dtype={"user_id": str, "item_id": str})
    rng = np.random.default_rng(0)
    fresh = pd.DataFrame(
        {
            "user_id": rng.choice(log["user_id"].unique(), 3000),
            "item_id": rng.choice(log["item_id"].unique(), 3000),
        }
    ).drop_duplicates()
    known = set(zip(log["user_id"], log["item_id"]))
    fresh = fresh[[pair not in known for pair in zip(fresh["user_id"], fresh["item_id"])]]
    fresh.head(2000).assign(timestamp=int(log["timestamp"].max()) + 60).to_csv(
        root / "fresh.csv", index=False
    )
    cli("interactions", "load", str(root / "fresh.csv"))
    cli("retrain", "--threads", "2", "--seed", "0")
    with live_server({**env, "HYBRIDREC_API_TOKEN": TOKEN}, root / "srv") as server:
        with Client(server.base, token=TOKEN) as api:
            versions = [v.version for v in api.models().versions][::-1]
            assert len(versions) == 2
            if api.models().current != versions[1]:  # the gate refused it: serve it anyway
                api.promote(versions[1], force=True)
        yield server.base, versions


@pytest.fixture
def api(sample_server):
    with Client(sample_server[0], token=TOKEN, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("HYBRIDREC_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Tab:
    """A page in a fresh context (own sessionStorage) that records what went wrong."""

    def __init__(self, browser, base: str):
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []  # alert/confirm/prompt: the console never opens one
        self.requests: list = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: self.requests.append(r))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, name: str) -> None:
        self.page.goto(f"{self.base}/#{name}")
        self.page.wait_for_selector(f"#page-{name}:not([hidden])")

    def texts(self, selector: str) -> list[str]:
        return self.page.locator(selector).all_text_contents()

    def set_token(self, token: str) -> None:
        self.page.click("#token-button")
        self.page.fill("#token-input", token)
        self.page.click("#token-save")


@pytest.fixture
def tab(playwright_browser, sample_server):
    t = Tab(playwright_browser, sample_server[0])
    yield t
    t.context.close()


def test_each_page_loads_without_console_errors(tab, api, shots):
    for user in range(1, 80):  # traffic for the overview's charts, over a few intervals
        api.recommend(str(user), k=10, exact=user % 2 == 0)
        time.sleep(0.15)
    _until(lambda: len(api.stats().traffic) >= 2, timeout=30)
    tab.open("overview")
    tab.page.wait_for_selector("#overview-cards .card")
    tab.page.wait_for_selector("#chart-latency svg circle.s1")
    assert tab.texts("#overview-cards h3")[:2] == ["Model", "Users and items"]
    assert api.model().model_version in tab.page.text_content("#overview-cards")
    assert not tab.errors, tab.errors
    tab.page.screenshot(path=str(shots / "overview.png"))

    tab.open("models")
    tab.page.wait_for_selector("table.models tbody tr")
    tab.page.locator("table.models tr:not(.details)").nth(1).locator("text=Details").click()
    chart = tab.page.locator("figure.report img").first
    chart.wait_for()
    _until(lambda: chart.evaluate("img => img.complete && img.naturalWidth > 0"))
    assert not tab.errors, tab.errors
    tab.page.screenshot(path=str(shots / "models.png"))

    tab.open("try")
    tab.page.wait_for_selector("#try-vocab .chip")
    assert not tab.errors, tab.errors
    tab.set_token(TOKEN)
    tab.page.fill("#try-user", "1")
    tab.page.click("#try-user-go")
    tab.page.wait_for_selector("#try-results .item-id")
    tab.page.wait_for_selector("#try-seen .item-id")
    tab.page.locator("#try-results button", has_text="similar").first.click()
    tab.page.wait_for_selector("#try-similar .item-id")
    assert not tab.errors, tab.errors
    tab.page.screenshot(path=str(shots / "try.png"))

    tab.open("catalog")
    tab.page.fill("#catalog-q", "story")  # titles are searched too
    tab.page.click("#catalog-search")
    tab.page.wait_for_selector("#catalog-results .item-id")
    assert "Toy Story (1995)" in tab.texts("#catalog-results .title")
    tab.page.locator("#catalog-results tr", has_text="Toy Story (1995)").locator("button").click()
    tab.page.wait_for_selector("#catalog-item .feature-name")
    assert not tab.errors, tab.errors
    tab.page.screenshot(path=str(shots / "catalog.png"))
    assert not tab.dialogs


def test_try_it_shows_the_api_items_for_a_user_and_a_new_visitor(tab, api):
    tab.open("try")
    tab.page.fill("#try-user", "7")
    tab.page.click("#try-user-go")
    tab.page.wait_for_selector("#try-results .item-id")
    expected = api.recommend("7", k=10).items
    assert tab.texts("#try-results .item-id") == [i.item_id for i in expected]
    assert tab.texts("#try-results td.title") == [i.title for i in expected]  # the sample's
    assert "known with features" in tab.page.text_content("#try-meta")

    chips = tab.page.locator("#try-vocab .chip")
    chips.first.wait_for()
    names = [chips.nth(0).text_content(), chips.nth(3).text_content()]
    for name in names:
        tab.page.locator("#try-vocab .chip", has_text=name).first.click()
        tab.page.wait_for_selector(f"#try-picked .chip:has-text('{name}')")
    tab.page.check("#try-exact")
    tab.page.fill("#try-k", "7")
    tab.page.click("#try-visitor-go")
    tab.page.locator("#try-meta", has_text="new with features").wait_for()
    visitor = api.recommend_for(features=dict.fromkeys(names, 1.0), k=7, exact=True)
    assert tab.texts("#try-results .item-id") == [i.item_id for i in visitor.items]
    assert "exact" in tab.page.text_content("#try-meta")

    tab.page.locator("#try-results button", has_text="similar").first.click()
    tab.page.wait_for_selector("#try-similar .item-id")
    first = visitor.items[0].item_id
    assert tab.texts("#try-similar .item-id") == [i.item_id for i in api.similar(first, k=7).items]
    # the seen items are a user's data: without the token the console asks, calls nothing
    assert "need the API token" in tab.page.text_content("#try-seen") or not tab.texts(
        "#try-seen .item-id"
    )
    assert not tab.errors, tab.errors


def test_promote_and_rollback_are_refused_without_the_token_and_work_with_it(tab, api):
    older, newer = [v.version for v in api.models().versions][::-1]
    if api.models().current != newer:  # put the registry where this test starts from
        api.promote(newer)
    tab.open("models")
    button = tab.page.locator("#rollback-button")
    assert button.text_content() == f"Roll back to {older}"

    button.click()  # no token in this tab: the server refuses, the console asks for one
    tab.page.click("#confirm-ok")
    tab.page.wait_for_selector("#token-dialog[open]")
    tab.page.click("#token-cancel")
    tab.page.wait_for_selector("#models-message .message.error")
    assert "401 unauthorized" in tab.page.text_content("#models-message")
    assert api.models().current == newer

    tab.page.locator("#rollback-button").click()  # now give it
    tab.page.click("#confirm-ok")
    tab.page.wait_for_selector("#token-dialog[open]")
    tab.page.fill("#token-input", TOKEN)
    tab.page.click("#token-save")
    tab.page.wait_for_selector("#models-message .message.ok")
    assert f"Now serving {older}" in tab.page.text_content("#models-message")
    listed = api.models()
    assert listed.current == older
    assert {v.version: v.status for v in listed.versions}[newer] == "rolled_back"

    tab.page.locator(f"button[data-version='{newer}']").click()
    assert newer in tab.page.text_content("#confirm-text")
    tab.page.click("#confirm-cancel")  # a cancelled confirmation moves nothing
    assert api.models().current == older
    tab.page.locator(f"button[data-version='{newer}']").click()
    tab.page.click("#confirm-ok")
    tab.page.locator("#models-message", has_text=f"Now serving {newer}").wait_for()
    assert api.models().current == newer

    admin = [r for r in tab.requests if "/v1/admin/" in r.url]
    assert admin and all(TOKEN not in r.url for r in tab.requests)
    assert any(r.headers.get("authorization") for r in admin)
    assert TOKEN not in tab.page.content() and TOKEN not in tab.page.url
    assert not tab.dialogs


def test_a_hostile_item_id_and_feature_name_are_shown_as_text(tab, api):
    feature = api.vocabulary("item", limit=1).features[0]
    api.put_item_features(HOSTILE, {feature: 1.0, HOSTILE_FEATURE: 1.0})
    _until(lambda: api.item(HOSTILE).recommendable)
    tab.open("catalog")
    tab.page.fill("#catalog-q", "onerror")
    tab.page.click("#catalog-search")
    tab.page.wait_for_selector("#catalog-results .item-id")
    assert tab.texts("#catalog-results .item-id") == [HOSTILE]
    tab.page.locator("#catalog-results button", has_text="open").click()
    tab.page.wait_for_selector("#catalog-item .feature-name")
    assert tab.texts("#catalog-item h2 .item-id") == [HOSTILE]
    names = tab.page.locator("#catalog-item .feature-name").evaluate_all(
        "inputs => inputs.map(i => i.value)"
    )
    assert sorted(names) == sorted([feature, HOSTILE_FEATURE])
    tab.page.locator("#catalog-item button", has_text="Similar items").click()
    tab.page.wait_for_selector("#try-similar-meta .item-id")
    assert tab.texts("#try-similar-meta .item-id") == [HOSTILE]
    tab.page.wait_for_timeout(300)  # an injected onerror would have fired by now
    assert tab.page.locator("img[src='x']").count() == 0
    assert tab.page.locator("script:not([src])").count() == 0
    assert not tab.dialogs and not tab.errors, (tab.dialogs, tab.errors)
    api.delete_item_features(HOSTILE)


def test_an_item_put_in_the_catalog_becomes_recommendable(tab, api):
    item_id = f"console-new-{uuid.uuid4().hex[:6]}"
    feature = api.vocabulary("item", limit=1).features[0]
    tab.open("catalog")
    tab.set_token(TOKEN)
    tab.page.fill("#catalog-q", item_id)
    tab.page.click("#catalog-open")
    tab.page.wait_for_selector("#item-status")
    assert "in catalog no" in tab.page.text_content("#item-status")
    tab.page.locator("#catalog-item button", has_text="Add a feature").click()
    tab.page.locator("#catalog-item .feature-name").fill(feature)
    tab.page.click("#item-save")
    tab.page.wait_for_selector("#catalog-item .message.ok")
    assert "recommendable after" in tab.page.text_content("#catalog-item .message.ok")
    status = api.item(item_id)
    assert status.recommendable and status.features == {feature: 1.0}
    assert api.recommend_for(user_id="1", items=[item_id], k=1).items[0].item_id == item_id

    tab.page.click("#item-delete")
    tab.page.click("#confirm-ok")
    tab.page.locator("#catalog-item .message.ok", has_text="Deleted. not recommendable").wait_for()
    assert api.item(item_id).in_catalog is False
    assert not tab.errors, tab.errors


def test_the_console_has_a_strict_policy_and_no_inline_code(sample_server):
    base = sample_server[0]
    page = requests.get(f"{base}/", timeout=10)
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.text
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)
    script = requests.get(f"{base}/console/app.js", timeout=10)
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "innerHTML" not in script.text and "eval(" not in script.text
    assert requests.get(f"{base}/console/nothing.js", timeout=10).status_code == 404


def _until(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
