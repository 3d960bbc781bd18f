"""What the page's own script does, in headless Chromium against a real `edge-app hub` (no
door): the dashboard says when the hub stops answering, "s ago" counts on between refreshes,
a refresh does not take the keyboard focus away, and nothing needs sideways scrolling on a
phone. The server side of the s40 UX audit's fixes is in tests/test_web_ux.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_web import add_person
from web_support import (
    PASSWORD,
    browser_session,
    free_port,
    log_in,
    screenshot,
    served_hub,
    wait_until,
    write_door_config,
)

from edge_app.events import EventLog

LONG_NAME = "Wolfeschlegelsteinhausenbergerdorffvoralternwarengewissenhaftschaferswessenschafe" + (
    "warenwohlgepflegt"
)
# A phone's width. Not "mobile": Chromium then widens the layout to fit what overflows and
# zooms out, which hides the very overflow measured here.
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": False}


@dataclass
class Hub:
    url: str
    process: subprocess.Popen
    folder: Path


@pytest.fixture(scope="module")
def browser() -> Iterator:
    yield from browser_session()


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    folder = tmp_path_factory.mktemp("hub-ux")
    state = folder / "state"
    port = free_port()
    config = write_door_config(folder, port, events=f'snapshots = "{state / "snapshots"}"\n')
    # What the door would have recorded: events with snapshots, one by a long name.
    events = EventLog(state / "events.db", snapshots=state / "snapshots")
    crop = np.full((60, 60, 3), 128, np.uint8)
    for _ in range(3):
        events.record("unlock", name=LONG_NAME, score=0.91, track=3, crop=crop)
        events.record("unknown", score=0.2, track=4, crop=crop, reason="no match above 0.6")
    events.close()
    add_person(state / "gallery.db", LONG_NAME)
    url = f"http://127.0.0.1:{port}"
    with served_hub(config, url, folder / "hub.log") as process:
        yield Hub(url, process, folder)


def test_the_dashboard_says_when_the_hub_stops_answering(
    hub: Hub, browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The open dashboard froze on "running / locked / 0.0 s ago" with the hub gone, and
    still looked live. The hub is stopped (SIGSTOP: it neither answers nor drops the
    session), then continued."""
    browser.set_window_size(1280, 900)
    log_in(browser, hub.url, PASSWORD)
    browser.get(hub.url + "/")
    line = browser.find_element("id", "hub-stale")
    assert not line.is_displayed()

    def stale_cards() -> int:
        return int(browser.execute_script("return document.querySelectorAll('.card.stale').length"))

    os.kill(hub.process.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: line.is_displayed(), 15, "the stale line shown")
        assert line.text.startswith("No answer from the hub since ")
        assert "not current" in line.text
        assert stale_cards() == 2  # the door's status and the live view
        opacity = browser.execute_script(
            "return getComputedStyle(document.querySelector('.card.stale')).opacity"
        )
        assert float(opacity) < 1
        screenshot(browser, tmp_path_factory.getbasetemp() / "screenshots", "hub-stale")
    finally:
        os.kill(hub.process.pid, signal.SIGCONT)
    wait_until(lambda: not line.is_displayed(), 20, "the stale line cleared")
    assert stale_cards() == 0


def test_the_first_page_of_events_says_when_the_hub_stops_answering(hub: Hub, browser) -> None:
    """Found by an audit: page 1 of the events refreshes itself too, but had no stale line:
    with the hub gone it went on looking current."""
    log_in(browser, hub.url, PASSWORD)
    browser.get(hub.url + "/events")
    line = browser.find_element("id", "hub-stale")
    assert not line.is_displayed()
    os.kill(hub.process.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: line.is_displayed(), 15, "the stale line shown")
        assert line.text.startswith("No answer from the hub since ")
        stale = "return document.querySelectorAll('.card.stale').length"
        assert browser.execute_script(stale) == 1
    finally:
        os.kill(hub.process.pid, signal.SIGCONT)
    wait_until(lambda: not line.is_displayed(), 20, "the stale line cleared")


def test_seconds_ago_count_on_between_refreshes(hub: Hub, browser) -> None:
    log_in(browser, hub.url, PASSWORD)
    browser.get(hub.url + "/")
    # As _status.html writes it for a door's last frame (tests/test_web_ux.py checks that).
    browser.execute_script(
        "document.querySelector('main').insertAdjacentHTML('beforeend',"
        ' \'<span id="probe-age" data-age="1.0">1.0</span>\')'
    )
    inserted = time.monotonic()

    def shown() -> float:
        return float(browser.find_element("id", "probe-age").text)

    # Ticks every second (a loaded machine may make a tick late: waited for, not slept).
    wait_until(lambda: shown() >= 2.5, 10, "the age counted on")
    assert shown() <= 1.0 + (time.monotonic() - inserted) + 0.2  # by the clock, not faster


def test_the_doors_error_details_stay_open_through_refreshes(hub: Hub, browser) -> None:
    """The technical line of "not reachable" is folded away; opened, it must not close at
    the next refresh of the status (every 2 s)."""
    log_in(browser, hub.url, PASSWORD)
    browser.get(hub.url + "/")
    browser.find_element("css selector", "#door-error-details summary").click()
    time.sleep(5)
    assert browser.execute_script("return document.getElementById('door-error-details').open")
    assert "door.sock" in browser.find_element("id", "door-error-details").text


@pytest.mark.parametrize(("path", "region"), [("/", "recent"), ("/events", "events-table")])
def test_a_refresh_does_not_take_the_keyboard_focus(
    hub: Hub, browser, path: str, region: str
) -> None:
    """A keyboard user on a snapshot link was thrown back to <body> at the next refresh."""
    log_in(browser, hub.url, PASSWORD)
    browser.get(hub.url + path)
    link = browser.find_element("css selector", f"#{region} a[href^='/events/']")
    href = browser.execute_script(
        "arguments[0].focus(); return arguments[0].getAttribute('href')", link
    )
    time.sleep(7)  # two refreshes or more of the region (every 2 s, 3 s)
    focused = browser.execute_script("return document.activeElement.getAttribute('href')")
    assert focused == href
    # Once the focus leaves, the region refreshes again.
    browser.execute_script(
        "document.activeElement.blur();"
        f"document.getElementById('{region}').insertAdjacentHTML('beforeend',"
        " '<i id=\"probe-mark\"></i>')"
    )
    wait_until(
        lambda: not browser.find_elements("id", "probe-mark"), 10, "the region refreshed again"
    )


def test_nothing_needs_sideways_scrolling_on_a_phone(
    hub: Hub, browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """At 390 px the events table was 577 px wide, health 498 px, a long name's People page
    1287 px and its remove button off-screen (and the long name widened even a 1280 px
    window)."""
    log_in(browser, hub.url, PASSWORD)
    shots = tmp_path_factory.getbasetemp() / "screenshots"
    for width in (PHONE["width"], 1280):
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "width": width})
        try:
            fits_without_scrolling(browser, hub.url, width, shots)
        finally:
            browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def fits_without_scrolling(browser, url: str, width: int, shots: Path) -> None:
    for path in ("/", "/events", "/health", "/people", f"/people/remove?name={LONG_NAME}"):
        browser.get(url + path)
        if path == "/people":  # the person's panel open, as when using it
            browser.execute_script("document.querySelector('li.person details').open = true")
        wide = browser.execute_script(
            "var out = [];"
            "document.querySelectorAll('body *').forEach(function (e) {"
            "  var r = e.getBoundingClientRect();"
            "  if (r.width && r.right > innerWidth + 1) out.push(e.tagName + e.className);"
            "});"
            "return [document.documentElement.scrollWidth, innerWidth, out.slice(0, 5)];"
        )
        assert wide[0] <= wide[1] == width, (path, wide)
        screenshot(browser, shots, f"{width}" + (path.split("?")[0].replace("/", "-") or "-"))
