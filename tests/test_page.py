"""The page at GET / in headless Chromium against a real lstm-serve: plots, promotion, training, CSP, phone width.

Screenshots go to a temporary folder, or to $PAGE_SCREENSHOTS when set. The README's are of a trained
model: `python -m tests.test_page URL FOLDER` takes them from a running service (see docs/ui.md).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver import Chrome as WebDriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

import model_store
from tests.conftest import save_tiny
from tests.test_e2e import Server, start_server, stop

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 120.0
# A training job started from the page: it took 85 s inside one run of the suite and over 120 s in CI's next.
JOB_WAIT = 600.0
# Registered before any page script runs: every CSP violation the page causes is kept here.
CSP_PROBE = (
    "window.__csp = []; document.addEventListener('securitypolicyviolation',"
    " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
)


def report_png() -> bytes:
    """A real (small) PNG, as report pictures are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(3, 1.5), dpi=60)
    axes.plot(np.sin(np.linspace(0, 6, 50)))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("page")
    store = model_store.ModelStore(root / "store")
    picture = report_png()
    save_tiny(store, seed=1, extra_files={"report.png": picture})
    save_tiny(store, seed=2, extra_files={"report.png": picture})
    running = start_server(store.root, root / "serve.log", LSTM_JOB_POLL_INTERVAL="0.1")
    yield running
    stop(running)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("PAGE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium() -> WebDriver:
    """Debian's chromium, headless, through its chromedriver (Selenium downloads nothing with an explicit driver)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(argument)
    options.add_argument("--window-size=1000,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CSP_PROBE})
    return driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make test` installs them (apt-get)")
    driver = chromium()
    yield driver
    driver.quit()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url + "/")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), "the page to load /models")


def console(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser's console messages since the last call (chromedriver's log, drained by reading)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def assert_clean(driver: WebDriver) -> None:
    """No console error (script errors, failed requests, CSP reports) nor CSP violation event since the last check."""
    errors = [entry for entry in console(driver) if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    assert driver.execute_script("return window.__csp") == []


def full_page(driver: WebDriver, path: Path) -> None:
    """A screenshot of the whole page (the window made as tall as the document)."""
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight") + 120)
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(width, height)


def plotted(driver: WebDriver, series: str, figure: str = "try-plot") -> list[float]:
    """The values a chart's series shows (read in one script: the chart may be redrawn at any time)."""
    script = "const p = document.querySelector(arguments[0]); return p ? p.dataset.values : null;"
    raw = driver.execute_script(script, f"#{figure} path[data-series='{series}']")
    values: list[float] = json.loads(raw) if raw else []
    return values


def server_cosines(url: str, sines: list[float], version: int | None = None) -> np.ndarray:
    body: dict[str, Any] = {"inputs": [[[x]] for x in sines]}
    if version is not None:
        body["version"] = version
    answer = httpx.post(f"{url}/predict", json=body, timeout=30).json()
    return np.asarray(answer["outputs"], dtype=np.float64)[:, 0, 0]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def test_page_has_a_strict_csp_no_inline_code_and_only_same_origin_assets(server: Server) -> None:
    response = httpx.get(f"{server.url}/", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    tags = tags_of(response.text)
    assert all(attrs.get("src") for tag, attrs in tags if tag == "script")  # no inline script
    assert not [tag for tag, _ in tags if tag == "style"]
    assert not [(tag, name) for tag, attrs in tags for name in attrs if name == "style" or name.startswith("on")]
    assets = [attrs.get("src") or attrs.get("href") for tag, attrs in tags if tag in ("script", "link")]
    assert len(assets) >= 3
    for asset in assets:
        assert asset and "//" not in asset, asset  # same origin, relative
        served = httpx.get(f"{server.url}/{asset}", timeout=10)
        assert served.status_code == 200 and served.content, asset
    assert httpx.get(f"{server.url}/static/nope.js", timeout=10).status_code == 404
    assert httpx.get(f"{server.url}/static/..%2Fapp.py", timeout=10).status_code == 404


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_assets_the_service_serves(server: Server, page: str) -> None:
    response = httpx.get(server.url + page, timeout=10)
    assert response.status_code == 200
    assert "cdn." not in response.text and "googleapis" not in response.text
    found = [
        attrs.get("src") or attrs.get("href") for tag, attrs in tags_of(response.text) if tag in ("script", "link")
    ]
    assets = [asset for asset in found if asset]
    assert assets, response.text
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        served = httpx.get(server.url + asset, timeout=10)
        assert served.status_code == 200 and len(served.content) > 1000, asset


def test_swagger_ui_renders_offline_in_chromium(server: Server, browser: WebDriver) -> None:
    browser.get(server.url + "/docs")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), "Swagger UI to list routes")
    paths = {
        element.text.replace("\u200b", "")
        for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert "/predict" in paths
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(name.startswith(server.url + "/") for name in loaded), loaded
    assert [entry for entry in console(browser) if entry["level"] == "SEVERE"] == []


def test_prediction_plots_the_servers_answer_for_the_chosen_version(
    server: Server, browser: WebDriver, screenshots: Path
) -> None:
    open_page(browser, server.url)
    plot = browser.find_element(By.ID, "try-plot")
    wait_for(lambda: plot.get_attribute("data-version") == "2", "the first prediction (serving v2)")
    sines = plotted(browser, "sine")
    assert len(sines) == 120 and np.allclose(sines, np.sin(0.1 * np.arange(120)))
    assert np.allclose(plotted(browser, "cosine"), np.cos(0.1 * np.arange(120)))
    assert np.allclose(plotted(browser, "model"), server_cosines(server.url, sines), atol=1e-6)
    assert browser.find_elements(By.CSS_SELECTOR, "#try-plot rect.unreliable")
    assert browser.find_elements(By.CSS_SELECTOR, "#try-error path[data-series='error']")

    Select(browser.find_element(By.ID, "try-version")).select_by_value("1")
    for field, value in (("try-step", "0.3"), ("try-phase", "1"), ("try-length", "40"), ("try-noise", "0.05")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    browser.find_element(By.ID, "try-submit").click()
    wait_for(lambda: plot.get_attribute("data-version") == "1" and len(plotted(browser, "sine")) == 40, "the v1 answer")
    noisy = plotted(browser, "sine")
    assert not np.allclose(noisy, np.sin(1 + 0.3 * np.arange(40)))  # noise was added
    assert np.allclose(noisy, np.sin(1 + 0.3 * np.arange(40)), atol=0.5)
    assert np.allclose(plotted(browser, "model"), server_cosines(server.url, noisy, version=1), atol=1e-6)
    assert not np.allclose(plotted(browser, "model"), server_cosines(server.url, noisy, version=2), atol=1e-6)

    browser.find_element(By.ID, "try-values").send_keys("0 0.0998 0.1987 0.2955 0.3894")
    browser.find_element(By.ID, "try-submit").click()
    wait_for(lambda: len(plotted(browser, "sine")) == 5, "the pasted values' answer")
    assert not browser.find_elements(By.CSS_SELECTOR, "#try-plot path[data-series='cosine']")
    assert np.allclose(
        plotted(browser, "model"), server_cosines(server.url, plotted(browser, "sine"), version=1), atol=1e-6
    )
    assert_clean(browser)


def production_of(url: str) -> int | None:
    (entry,) = httpx.get(f"{url}/models", timeout=10).json()["models"]
    production: int | None = entry["aliases"].get("production")
    return production


def test_promote_and_roll_back_move_the_alias(server: Server, browser: WebDriver) -> None:
    open_page(browser, server.url)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".report img"), "the serving version's report picture")
    for version in (1, 2):
        browser.find_element(By.CSS_SELECTOR, f"button.promote[data-version='{version}']").click()
        wait_for(lambda v=version: production_of(server.url) == v, f"production -> v{version}")  # type: ignore[misc]
        row = f"tr[data-version='{version}'] .tag.alias"
        wait_for(lambda r=row: [e.text for e in browser.find_elements(By.CSS_SELECTOR, r)] == ["production"], "the tag")  # type: ignore[misc]
        assert not browser.find_elements(By.CSS_SELECTOR, f"button.promote[data-version='{version}']")
    assert "production → v2" in browser.find_element(By.ID, "versions-status").text
    assert_clean(browser)


def test_with_a_token_the_page_asks_for_it_again_after_a_wrong_one_and_keeps_it(
    browser: WebDriver, tmp_path: Path
) -> None:
    store = model_store.ModelStore(tmp_path / "store")
    save_tiny(store, seed=1)
    save_tiny(store, seed=2)
    guarded = start_server(store.root, tmp_path / "serve.log", LSTM_API_TOKEN="sesame")
    try:
        open_page(browser, guarded.url)
        box = browser.find_element(By.ID, "token-box")
        assert not box.is_displayed()
        browser.find_element(By.CSS_SELECTOR, "button.promote[data-version='1']").click()
        wait_for(box.is_displayed, "the token prompt after a 401")
        assert "needs its API token" in browser.find_element(By.ID, "token-message").text
        browser.find_element(By.ID, "token-input").send_keys("wrong\n")
        wait_for(lambda: "refused" in browser.find_element(By.ID, "token-message").text, "a second prompt after 403")
        assert production_of(guarded.url) is None
        browser.find_element(By.ID, "token-input").send_keys("sesame\n")
        wait_for(lambda: production_of(guarded.url) == 1, "production -> v1 with the right token")
        assert not box.is_displayed()
        browser.find_element(By.CSS_SELECTOR, "button.promote[data-version='2']").click()
        wait_for(lambda: production_of(guarded.url) == 2, "production -> v2 with the kept token, no prompt")
        assert not box.is_displayed()
        # The refused requests are logged as failed resources (401, 403); nothing else may be.
        errors = [
            e for e in console(browser) if e["level"] == "SEVERE" and not re.search(r"status of 40[13]", e["message"])
        ]
        assert errors == [] and browser.execute_script("return window.__csp") == []
    finally:
        browser.execute_script("sessionStorage.clear()")
        stop(guarded)


def test_a_training_job_streams_its_loss_finishes_and_its_version_appears(
    server: Server, browser: WebDriver, screenshots: Path
) -> None:
    open_page(browser, server.url)
    before = {
        int(row.get_attribute("data-version") or 0)
        for row in browser.find_elements(By.CSS_SELECTOR, "tr[data-version]")
    }
    Select(browser.find_element(By.ID, "train-preset")).select_by_value("tutorial")
    browser.find_element(By.ID, "train-max-epochs").send_keys("40")
    browser.find_element(By.ID, "train-hidden-size").send_keys("6")
    Select(browser.find_element(By.ID, "train-promote")).select_by_value("never")
    browser.find_element(By.ID, "train-submit").click()
    status = browser.find_element(By.ID, "train-status")
    wait_for(lambda: status.get_attribute("data-status") == "succeeded", "the job to succeed", timeout=JOB_WAIT)
    new = max(before) + 1
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"tr[data-version='{new}']"), f"v{new} in Versions")
    losses = plotted(browser, "loss", figure="train-plot")
    assert losses and all(loss > 0 for loss in losses)
    assert f"lstm v{new}" in status.text
    full_page(browser, screenshots / "page.png")

    browser.find_element(By.ID, "train-max-epochs").clear()
    browser.find_element(By.ID, "train-max-epochs").send_keys("100000")
    browser.find_element(By.ID, "train-submit").click()
    cancel = browser.find_element(By.ID, "train-cancel")
    wait_for(cancel.is_displayed, "the cancel button")
    cancel.click()
    wait_for(lambda: status.get_attribute("data-status") == "cancelled", "the job to be cancelled")
    assert httpx.get(f"{server.url}/train", timeout=10).json()["jobs"][0]["status"] == "cancelled"
    assert_clean(browser)


def test_at_phone_width_the_page_has_no_horizontal_overflow(
    server: Server, browser: WebDriver, screenshots: Path
) -> None:
    browser.set_window_size(390, 844)
    try:
        open_page(browser, server.url)
        wait_for(lambda: browser.find_element(By.ID, "try-plot").get_attribute("data-version"), "the first prediction")
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert width <= 390
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width
        browser.save_screenshot(str(screenshots / "page-phone.png"))
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(name.startswith(server.url + "/") for name in loaded), loaded
        assert_clean(browser)
    finally:
        browser.set_window_size(1000, 1000)


def test_the_policy_really_blocks_inline_script_and_the_check_sees_it(server: Server, browser: WebDriver) -> None:
    open_page(browser, server.url)
    assert_clean(browser)
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; document.body.appendChild(s);"
    )
    wait_for(lambda: browser.execute_script("return window.__csp.length"), "a CSP violation event")
    assert browser.execute_script("return window.__ran") is None
    assert any("Content Security Policy" in entry["message"] for entry in console(browser))


def try_step(driver: WebDriver) -> None:
    """Predict at the step per sample given as the third argument (the tutorial model's: 5 · 12π/199 ≈ 0.947)."""
    if len(sys.argv) > 3:
        for field, value in (("try-step", sys.argv[3]), ("try-length", "40")):
            driver.find_element(By.ID, field).clear()
            driver.find_element(By.ID, field).send_keys(value)
        driver.find_element(By.ID, "try-submit").click()


def main() -> None:
    from PIL import Image

    """python -m tests.test_page URL FOLDER [STEP]: the page of a running service, whole and at phone width."""
    url, folder = sys.argv[1].rstrip("/"), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    driver = chromium()
    try:
        open_page(driver, url)
        wait_for(lambda: driver.find_element(By.ID, "try-plot").get_attribute("data-version"), "the first prediction")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".report img"), "the serving version's report")
        try_step(driver)
        Select(driver.find_element(By.ID, "train-preset")).select_by_value("tutorial")
        driver.find_element(By.ID, "train-max-epochs").send_keys("300")
        Select(driver.find_element(By.ID, "train-promote")).select_by_value("never")
        driver.find_element(By.ID, "train-submit").click()  # a short job, for its loss curve
        status = driver.find_element(By.ID, "train-status")
        wait_for(lambda: status.get_attribute("data-status") == "succeeded", "the job", timeout=900)
        time.sleep(2)  # Versions reloads and the report picture decodes
        full_page(driver, folder / "page.png")
        driver.set_window_size(390, 844)
        open_page(driver, url)
        wait_for(lambda: driver.find_element(By.ID, "try-plot").get_attribute("data-version"), "the first prediction")
        try_step(driver)
        time.sleep(2)
        full_page(driver, folder / "page-phone.png")
        assert_clean(driver)
    finally:
        driver.quit()
    for name in ("page.png", "page-phone.png"):  # 128 colours: a third of the bytes, the same look
        with Image.open(folder / name) as shot:
            small = shot.convert("RGB").quantize(colors=128)
        small.save(folder / name, optimize=True)


if __name__ == "__main__":
    main()
