"""The People page's list: one page of the enrolled people, found by name.

A household has a handful of people, but an office door may have thousands, and every person
on the page carries their own forms (about 2 KB of HTML each: 10 MB at 5,000 people, several
seconds for a Pi to render and a phone to lay out). So the list shows PEOPLE_PER_PAGE at a
time, in the gallery's order (by name), with a search on any part of the names that ignores
case and accents ("jose" finds "José Álvarez" and "JOSÉ"), as a person typing a name they
heard would expect.

Stateless helpers over Gallery.people()'s list, in the manner of the events pager
(edge_app.web.history.Page): a page number past the end shows the last page, and `show`
picks the page that holds a name, or where it would be, so the page after a rename, a
change of access or a removal is the one with that person on it.
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # edge_app.gallery (numpy) is imported by the hub at its first use
    from edge_app.gallery import PersonInfo

PEOPLE_PER_PAGE = 50


@dataclass(frozen=True)
class Listing:
    rows: list[PersonInfo]  # this page's people
    enrolled: int  # everyone in the gallery
    found: int  # those the search finds (everyone without one)
    find: str  # the search as typed, stripped ("" for none)
    number: int  # this page, from 1
    pages: int  # at least 1

    @property
    def first(self) -> int:
        """The position of this page's first person among those found, from 1."""
        return (self.number - 1) * PEOPLE_PER_PAGE + 1 if self.rows else 0

    @property
    def last(self) -> int:
        return self.first + len(self.rows) - 1 if self.rows else 0


def listing(
    people: Sequence[PersonInfo],
    find: str = "",
    number: int = 1,
    show: str = "",
    size: int = PEOPLE_PER_PAGE,
) -> Listing:
    """Page `number` (clamped to the pages there are) of `people` (sorted by name, as
    Gallery.people() returns them) whose name contains `find` by the name rule; with `show`,
    the page that holds that name among them, or where it would sort, instead."""
    find = find.strip()
    key = search_key(find)
    found = [p for p in people if key in search_key(p.name)] if key else list(people)
    pages = max(1, -(-len(found) // size))
    if show:
        # SQLite orders text by its UTF-8 bytes, which is the code points' order: Python's.
        number = bisect.bisect_left([p.name for p in found], show) // size + 1
    number = min(max(1, number), pages)
    rows = found[(number - 1) * size : number * size]
    return Listing(rows, len(people), len(found), find, number, pages)


def search_key(text: str) -> str:
    """What a search compares: the name rule's form (edge_app.gallery.name_key: spaces
    collapsed, case folded) without accents (combining marks dropped after NFD)."""
    from edge_app.gallery import name_key

    decomposed = unicodedata.normalize("NFD", name_key(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def find_refused(find: str) -> str:
    """Why a search is refused ("" when it is not): one longer than any name finds nobody."""
    from edge_app.gallery import MAX_NAME_LENGTH

    if len(find.strip()) > MAX_NAME_LENGTH:
        return f"find: longer than the {MAX_NAME_LENGTH} characters a name may have"
    return ""
