"""The dashboard in a real headless Chromium: users listed, charts drawn, a screenshot saved.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium
chromium-driver``) and ``selenium`` (pip). Skipped with the reason when any is missing,
unless ``LLMBUDGET_REQUIRE_BROWSER=1``, which turns the skip into a failure (for CI, once
it installs the browser). With ``LLMBUDGET_UPDATE_SCREENSHOT=1`` it refreshes
``docs/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmbudget.clock import FrozenClock
from llmbudget.server import ServerConfig, create_app
from llmbudget.server.testing import live_server
from llmbudget.stores.memory import MemoryStore

ROOT = Path(__file__).resolve().parent.parent
KEY = "browser-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
USERS = {"alice": "10", "bob": "4", "carol": "2.50", "dave": "1"}
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-haiku", "gemini-1.5-flash"]


def _unavailable(reason: str) -> None:
    if os.environ.get("LLMBUDGET_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser test cannot run: {reason}")
    pytest.skip(f"browser test skipped: {reason}")


@pytest.fixture
def browser() -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        _unavailable(
            f"{CHROMIUM} or {CHROMEDRIVER} not found (apt-get install -y chromium chromium-driver)"
        )
    profile = tempfile.mkdtemp(prefix="llmbudget-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    # Lookups wait (up to this long) for the page to draw: a loaded machine is slow to.
    driver.implicitly_wait(15)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _seed(base: str, clock: FrozenClock) -> None:
    with httpx.Client(base_url=base, headers=AUTH) as client:
        for user, amount in USERS.items():
            client.post(
                "/v1/projects/support-bot/budgets",
                json={"user": user, "amount": amount, "period": "daily"},
            ).raise_for_status()
        client.post(
            "/v1/projects/batch-jobs/budgets",
            json={"user": "nightly", "amount": "50", "period": "monthly"},
        ).raise_for_status()
        for day in range(7):
            for i, user in enumerate(USERS):
                cost = f"{(0.15 + 0.11 * i) * (1 + day % 3):.4f}"
                client.post(
                    "/v1/projects/support-bot/charge",
                    json={"user": user, "amount": cost, "model": MODELS[(i + day) % 4]},
                ).raise_for_status()
            client.post(
                "/v1/projects/batch-jobs/charge",
                json={"user": "nightly", "amount": "3.20", "model": "gpt-4o-mini"},
            ).raise_for_status()
            if day < 6:
                clock.advance(86_400)
        client.post(
            "/v1/projects/support-bot/reserve", json={"user": "carol", "amount": "0.40"}
        ).raise_for_status()


def test_dashboard_renders_users_and_charts(
    browser: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    clock = FrozenClock(1_773_576_000.0 - 6 * 86_400)
    app = create_app(ServerConfig(admin_key=KEY), store=MemoryStore(), clock=clock)
    with live_server(app) as base:
        _seed(base, clock)
        browser.get(f"{base}/ui/login")
        field = browser.find_element(By.ID, "key")
        field.send_keys(KEY)
        browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        browser.find_element(By.CSS_SELECTOR, "section.project")  # logged in, page drawn

        users = {
            e.get_attribute("data-user")
            for e in browser.find_elements(By.CSS_SELECTOR, "tr.user-row")
        }
        assert set(USERS) | {"nightly"} <= users
        bars = browser.find_elements(By.CSS_SELECTOR, "svg.bar rect.spent")
        assert len(bars) == len(USERS) + 1
        assert all(b.size["width"] > 0 for b in bars)
        time_bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart-time g.series rect")
        assert len(time_bars) >= 7 and all(b.size["height"] > 0 for b in time_bars)
        model_bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart-models g.series rect")
        assert len(model_bars) >= 4
        assert browser.execute_script("return document.styleSheets.length") == 1

        # The docs' screenshot is refreshed on request only, so a test run leaves the
        # checkout as it found it: LLMBUDGET_UPDATE_SCREENSHOT=1 python -m pytest ...
        if os.environ.get("LLMBUDGET_UPDATE_SCREENSHOT") == "1":
            out = ROOT / "docs" / "dashboard.png"
        else:
            out = Path(tempfile.mkdtemp()) / "dashboard.png"
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, min(max(int(height) + 200, 800), 2600))
        assert browser.save_screenshot(str(out))
        assert out.stat().st_size > 10_000


SHOT_PAGES = (
    "/ui", "/ui/keys", "/ui/keys/new", "/ui/keys/{key}", "/ui/keys/{key}/revoke",
    "/ui/spend", "/ui/users/ann", "/ui/teams/ml", "/ui/orgs/acme", "/ui/budgets/new",
    "/ui/projects/support-bot", "/ui/projects/support-bot/users/alice",
)  # fmt: skip


def test_create_a_key_in_the_ui_use_it_and_see_its_spend(
    browser: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Log in, create a key in the UI, read the secret off the page, call the gateway with
    it through the openai SDK, see the spend on the key's page; then every page at 1400
    and 700 px wide, none wider than the window (wide tables scroll in their own box).
    ``LLMBUDGET_DASH_SHOTS=<dir>`` keeps the screenshots there."""
    import openai
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.gateway_fakes import HI, FakeUpstream, ServerThread, deployment

    assert isinstance(browser, WebDriver)
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    clock = FrozenClock(1_773_576_000.0 - 6 * 86_400)
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as up:
        gateway = {
            "model_list": [deployment(up.url)],
            "users": {"ann": {"budget": "5", "period": "daily", "team": "ml"}},
            "teams": {"ml": {"budget": "20", "period": "monthly", "org": "acme"}},
            "orgs": {"acme": {"budget": "100", "period": "monthly"}},
        }
        app = create_app(
            ServerConfig(admin_key=KEY, gateway=gateway), store=MemoryStore(), clock=clock
        )
        with live_server(app) as base:
            _seed(base, clock)
            browser.set_window_size(1400, 1000)
            browser.get(f"{base}/ui/login")
            browser.find_element(By.ID, "key").send_keys(KEY)
            browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            browser.find_element(By.CSS_SELECTOR, "section.project")

            browser.get(f"{base}/ui/keys/new")
            browser.find_element(By.ID, "f-user").send_keys("ann")
            browser.find_element(By.ID, "f-budget").send_keys("1")
            browser.find_element(By.ID, "f-period").send_keys("daily")
            browser.find_element(By.ID, "f-rpm_limit").send_keys("60")
            browser.find_element(By.CSS_SELECTOR, "form.edit button[type=submit]").click()
            secret = browser.find_element(By.ID, "secret").text
            assert secret.startswith("sk-llmb-")
            browser.find_element(By.PARTIAL_LINK_TEXT, "Go to key").click()
            key_page = browser.current_url
            key_id = key_page.rsplit("/", 1)[1]
            assert key_id.startswith("key_") and secret not in browser.page_source

            sdk = openai.OpenAI(api_key=secret, base_url=f"{base}/v1", max_retries=0)
            sdk.chat.completions.create(model="m", messages=HI, max_tokens=50)  # type: ignore[arg-type]

            def spend_shown(driver: WebDriver) -> bool:
                driver.get(f"{key_page}?range=today")
                total = driver.find_element(By.CSS_SELECTOR, "strong.total").text
                return "1 request(s)" in driver.page_source and total != "$0.00"

            WebDriverWait(browser, 20).until(spend_shown)
            model_rows = browser.find_elements(By.CSS_SELECTOR, "table.per-model tbody tr")
            assert [r.find_element(By.TAG_NAME, "a").text for r in model_rows] == ["m"]

            keep = os.environ.get("LLMBUDGET_DASH_SHOTS")
            shots = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="dash-shots-"))
            shots.mkdir(parents=True, exist_ok=True)
            for width in (1400, 700):
                for path in SHOT_PAGES:
                    url = base + path.format(key=key_id)
                    browser.set_window_size(width, 900)
                    browser.get(url)
                    browser.find_element(By.TAG_NAME, "main")
                    assert "Not found" not in browser.title, url
                    inner = browser.execute_script("return window.innerWidth")
                    wide = browser.execute_script("return document.documentElement.scrollWidth")
                    assert wide <= inner, f"{url} at {width}px is {wide}px wide"
                    height = browser.execute_script("return document.body.scrollHeight")
                    browser.set_window_size(width, min(max(int(height) + 120, 600), 4000))
                    name = path.strip("/").replace("/", "_").replace("{key}", "key") or "ui"
                    out = shots / f"{name}-{width}.png"
                    assert browser.save_screenshot(str(out)) and out.stat().st_size > 5_000
