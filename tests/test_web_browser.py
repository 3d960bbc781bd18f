"""The web page in headless Chromium, served by a real `edge-app hub` process (no door).

Each page is screenshotted into the test's temporary folder (and into $EDGE_WEB_SCREENSHOTS
when set). The whole path with a real door and a clip is tests/test_web_e2e.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from web_support import (
    PASSWORD,
    browser_session,
    forged_png,
    free_port,
    log_in,
    screenshot,
    served_hub,
    submit,
    write_door_config,
)

PAGES = ["/", "/people", "/events", "/health", "/unlock"]


@dataclass
class Hub:
    url: str
    process: subprocess.Popen
    folder: Path
    config: Path


@pytest.fixture(scope="module")
def browser() -> Iterator:
    yield from browser_session()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("hub")
    port = free_port()
    config = write_door_config(folder, port)
    url = f"http://127.0.0.1:{port}"
    with served_hub(config, url, folder / "hub.log") as process:
        yield Hub(url, process, folder, config)


def test_every_page_sends_the_browser_to_login(hub: Hub, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    for path in PAGES:
        browser.get(hub.url + path)
        assert browser.current_url.startswith(hub.url + "/login?next="), path
        assert browser.find_element(By.CSS_SELECTOR, "#login input[name=password]")


def test_login_refuses_a_wrong_password_then_accepts_the_right_one(
    hub: Hub, browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By

    shots = tmp_path_factory.getbasetemp() / "screenshots"
    browser.delete_all_cookies()
    log_in(browser, hub.url, "not the password")
    assert browser.find_element(By.CSS_SELECTOR, "#login-error").text == "Wrong password."
    assert browser.current_url.startswith(hub.url + "/login")
    screenshot(browser, shots, "login-refused")
    log_in(browser, hub.url, PASSWORD)
    assert browser.current_url == hub.url + "/"
    assert "not reachable" in browser.find_element(By.CSS_SELECTOR, "#door-status").text


def test_each_page_renders_without_script_errors(
    hub: Hub, browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By

    shots = tmp_path_factory.getbasetemp() / "screenshots"
    log_in(browser, hub.url, PASSWORD)
    browser.get_log("browser")  # drain what earlier tests left (their 401s and 403s)
    titles = {
        "/": "Dashboard",
        "/people": "People",
        "/events": "Events",
        "/unlock": "Unlock",
        "/health": "Health",
    }
    for path, title in titles.items():
        browser.get(hub.url + path)
        assert browser.title.startswith(title), path
        # htmx loaded from the hub itself (CSP script-src 'self') and running.
        assert browser.execute_script("return typeof htmx === 'object'"), path
        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
        screenshot(browser, shots, f"no-door{path.replace('/', '-') or '-'}".rstrip("-"))
    checks = browser.find_elements(By.CSS_SELECTOR, "tr[data-check]")  # the health page
    assert len(checks) >= 5
    door = browser.find_element(By.CSS_SELECTOR, 'tr[data-check="door"]')
    assert door.get_attribute("data-status") == "warn"  # doctor's row: not running yet


def test_the_health_tables_parts_break_between_words_only(hub: Hub, browser) -> None:
    """Found by an audit: at 1280 px the Part column was 71 px wide and "runtime" rendered as
    "runtim" / "e" (every cell may wrap anywhere, so a phone never scrolls sideways)."""
    from selenium.webdriver.common.by import By

    log_in(browser, hub.url, PASSWORD)
    browser.set_window_size(1280, 900)
    browser.get(hub.url + "/health")
    parts = browser.find_elements(By.CSS_SELECTOR, "table.health td.part")
    assert len(parts) >= 5
    lines = "var r = document.createRange(); r.selectNodeContents(arguments[0]); " + (
        "return new Set(Array.from(r.getClientRects(), c => Math.round(c.top))).size;"
    )
    for cell in parts:
        assert browser.execute_script(lines, cell) <= len(cell.text.split()), cell.text


def test_a_forged_30000x30000_png_is_refused_next_to_the_photo(
    hub: Hub, browser, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from selenium.webdriver.common.by import By

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(forged_png(30000, 30000))
    log_in(browser, hub.url, PASSWORD)
    browser.get(hub.url + "/people")
    form = browser.find_element(By.CSS_SELECTOR, "#enroll")
    form.find_element(By.CSS_SELECTOR, "input[name=name]").send_keys("Bomb Person")
    form.find_element(By.CSS_SELECTOR, "input[name=photos]").send_keys(str(bomb))
    submit(browser, form)
    refused = browser.find_element(By.CSS_SELECTOR, 'li.photo.refused[data-photo="bomb.png"]')
    reason = refused.find_element(By.CSS_SELECTOR, ".reason").text
    # The image checks of edge_app.images, the same as the CLI's: refused from the header.
    assert "30000x30000" in reason and "megapixels" in reason, reason
    assert "Traceback" not in browser.page_source
    assert "nothing enrolled for 'Bomb Person'" in browser.find_element(By.ID, "enrol-report").text
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-person="Bomb Person"]')
    # The name stays in the form for the retry with other photos.
    name = browser.find_element(By.CSS_SELECTOR, "#enroll input[name=name]")
    assert name.get_attribute("value") == "Bomb Person"
    screenshot(browser, tmp_path_factory.getbasetemp() / "screenshots", "people-refused")


def test_a_post_without_the_csrf_token_is_refused_for_a_logged_in_browser(
    hub: Hub, browser
) -> None:
    log_in(browser, hub.url, PASSWORD)
    session = browser.get_cookie("edge_door_session")
    assert session and session["httpOnly"] and session["sameSite"] == "Strict"
    cookies = {"edge_door_session": session["value"]}
    with httpx.Client(base_url=hub.url, cookies=cookies) as client:
        assert client.get("/people").status_code == 200  # the browser's session is valid
        reply = client.post("/people/export")
        assert reply.status_code == 403 and "CSRF" in reply.text
        reply = client.post("/logout")
        assert reply.status_code == 403
        assert client.get("/people").status_code == 200  # and still logged in
