"""The People page in pages: PEOPLE_PER_PAGE at a time, a search by name, and the page that
holds the person a change was about (edge_app.web.listing)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_web import Site, logged_in, running

from edge_app.centering import EMBEDDING_DIM
from edge_app.gallery import Gallery, NewSample, PersonInfo
from edge_app.web.listing import PEOPLE_PER_PAGE, listing, search_key

OFFICE = 2 * PEOPLE_PER_PAGE + 20  # three pages, the last one short


def people(names: list[str]) -> list[PersonInfo]:
    return [PersonInfo(name, 1, 0, "2026-01-01T00:00:00Z", None) for name in sorted(names)]


def enrol(db: Path, names: list[str]) -> None:
    rng = np.random.default_rng(7)
    with Gallery.open(db, create=True) as gallery:
        for name in names:
            vectors = rng.normal(size=(2, EMBEDDING_DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            gallery.enroll(name, [NewSample(v, f"{name}-{i}") for i, v in enumerate(vectors)])


def shown(page: str) -> list[str]:
    """The names listed on a People page, in order."""
    names = re.findall(r'<li class="person" data-person="([^"]*)"', page)
    return [html.unescape(name) for name in names]


# --- the helper ------------------------------------------------------------------------------


def test_pages_are_cut_in_the_gallery_order_and_clamped() -> None:
    office = people([f"Person {i:03}" for i in range(1, OFFICE + 1)])

    first = listing(office)
    last = listing(office, number=3)

    assert [p.name for p in first.rows] == [f"Person {i:03}" for i in range(1, 51)]
    assert (first.number, first.pages, first.first, first.last) == (1, 3, 1, 50)
    assert (first.enrolled, first.found) == (OFFICE, OFFICE)
    assert [p.name for p in last.rows] == [f"Person {i:03}" for i in range(101, 121)]
    assert (last.first, last.last) == (101, 120)
    assert listing(office, number=99).number == 3  # past the end: the last page
    assert listing(office, number=0).number == 1
    assert listing([]).pages == 1 and listing([]).rows == [] and listing([]).first == 0


def test_show_picks_the_page_that_holds_a_name_or_where_it_would_be() -> None:
    office = people([f"Person {i:03}" for i in range(1, OFFICE + 1)])

    assert listing(office, show="Person 075").number == 2
    assert listing(office, show="Person 101").number == 3
    assert listing(office, show="Person 0755").number == 2  # removed: where it was
    assert listing(office, show="Aaron").number == 1
    assert listing(office, show="Zoe").number == 3
    assert listing(office, number=1, show="Person 120").number == 3  # show wins


def test_a_search_ignores_case_accents_and_spacing() -> None:
    names = ["José Álvarez", "JOSÉ  Smith", "Jose\u0301 Decomposed", "Ann Lee", "Josephine Ng"]
    house = people(names)

    found = listing(house, find="  jose ")

    assert [p.name for p in found.rows] == sorted(set(names) - {"Ann Lee"})
    assert (found.find, found.found, found.enrolled) == ("jose", 4, 5)
    assert [p.name for p in listing(house, find="ÁLVAREZ").rows] == ["José Álvarez"]
    assert [p.name for p in listing(house, find="jose smith").rows] == ["JOSÉ  Smith"]
    assert listing(house, find="nobody").rows == []
    assert search_key("Zoë") == search_key("ZOE") == "zoe"


# --- the page --------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with running(tmp_path) as served:
        yield served


@pytest.fixture
def user(site: Site) -> Iterator[httpx.Client]:
    with logged_in(site) as client:
        yield client


def test_a_household_sees_everyone_with_no_search_or_pager(site: Site, user: httpx.Client) -> None:
    enrol(Path(site.config.gallery.path), ["Ann", "Bob", "Cy"])

    page = user.get("/people").text

    assert shown(page) == ["Ann", "Bob", "Cy"]
    assert 'id="find-people"' not in page and 'class="pager"' not in page
    assert "Export the gallery" in page


def test_an_office_is_shown_a_page_at_a_time(site: Site, user: httpx.Client) -> None:
    enrol(Path(site.config.gallery.path), [f"Person {i:03}" for i in range(1, OFFICE + 1)])

    first = user.get("/people").text
    third = user.get("/people?page=3").text

    assert shown(first) == [f"Person {i:03}" for i in range(1, 51)]
    assert f'Enrolled people <small class="muted">({OFFICE})</small>' in first
    assert "1–50 · page 1 of 3" in first and 'id="find-people"' in first
    assert 'href="/people?page=2" rel="next"' in first and 'rel="prev"' not in first
    assert shown(third) == [f"Person {i:03}" for i in range(101, 121)]
    assert 'href="/people?page=2" rel="prev"' in third and 'rel="next"' not in third
    assert shown(user.get("/people?page=9").text) == shown(third)  # past the end: the last
    refused = user.get("/people?page=two")
    assert refused.status_code == 400 and "is not a page number" in html.unescape(refused.text)


def test_a_search_finds_people_by_any_part_of_the_name(site: Site, user: httpx.Client) -> None:
    office = [f"Person {i:03}" for i in range(1, OFFICE + 1)]
    enrol(Path(site.config.gallery.path), [*office, "José Álvarez"])

    found = user.get("/people", params={"find": "JOSE"}).text
    tens = user.get("/people", params={"find": "person 0"}).text
    nobody = user.get("/people", params={"find": "Nobody Here"}).text

    assert shown(found) == ["José Álvarez"]
    assert "1 of 121 found for “JOSE”" in html.unescape(found)
    assert 'href="/people">Show everyone</a>' in found
    assert shown(tens) == office[:50]  # Person 001 .. 099: two pages, the search kept
    assert 'href="/people?find=person+0&amp;page=2" rel="next"' in tens
    assert shown(nobody) == [] and "0 of 121 found" in html.unescape(nobody)
    assert "Nobody is enrolled yet" not in nobody  # they are, the search found none of them
    long = user.get("/people", params={"find": "x" * 101})
    assert long.status_code == 400 and "longer than the 100 characters" in long.text


def test_a_change_shows_the_page_that_holds_the_person(site: Site, user: httpx.Client) -> None:
    db = Path(site.config.gallery.path)
    enrol(db, [f"Person {i:03}" for i in range(1, OFFICE + 1)])
    token = site.token(user)

    renamed = user.post(
        "/people/rename",
        data={"name": "Person 010", "new_name": "Person 110b", "csrf_token": token},
    )

    assert renamed.url.params["show"] == "Person 110b"
    assert "Person 110b" in shown(renamed.text) and "page 3 of 3" in renamed.text
    assert "renamed 'Person 010' to 'Person 110b'" in html.unescape(renamed.text)
    removed = user.post(
        "/people/remove", data={"name": "Person 075", "confirm": "yes", "csrf_token": token}
    )
    assert "page 2 of 3" in removed.text and "Person 076" in shown(removed.text)
    assert "removed 'Person 075'" in html.unescape(removed.text)
    # A refused rename on the last page comes back there, in the person's open panel.
    refused = user.post(
        "/people/rename",
        data={"name": "Person 120", "new_name": "Person 001", "csrf_token": token},
    )
    assert refused.status_code == 422 and "page 3 of 3" in refused.text
    panel = refused.text.split('data-person="Person 120"', 1)[1].split("</details>", 1)[0]
    assert "<details open>" in panel and 'role="alert" id="error"' in panel
    cancel = user.get("/people/remove", params={"name": "Person 119"}).text
    assert 'href="/people?show=Person%20119">Cancel' in cancel
