"""Who the gallery enrols, as the hub needs to know it: whether a name on the retained
`<base>/last_person` still belongs to someone enrolled (edge_app.hub.mqtt).

A person removed from the gallery (`edge-app remove`, the web page) must not stay named on a
retained message that the broker keeps, and the hub re-sends, indefinitely. The hub reads the
gallery's names once, then again only when its data_version changes (another connection
committed: the web page in the hub's own process, `edge-app remove`, the door), so a check
costs one PRAGMA; each check is made on the hub's heartbeat thread, which owns the
connection (an SQLite connection is not shared between threads). Names compare by
gallery.name_key, as the gallery compares them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from edge_app.advice import web_message
from edge_app.gallery import Gallery, GalleryError, name_key

log = logging.getLogger(__name__)


class EnrolledNames:
    """The gallery's names, re-read when the gallery changes. refresh() and close() from one
    thread (the one that owns the connection); knows() and checked from any."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._gallery: Gallery | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file opened
        self._version: int | None = None
        self._keys: frozenset[str] | None = None  # None until read once
        self._checked = float("-inf")  # monotonic time the names were last known current
        self._failed: str | None = None  # the last failure logged (each is logged once)
        self._lock = threading.Lock()

    @property
    def checked(self) -> float:
        """The monotonic time at which the names were last known to be the gallery's."""
        with self._lock:
            return self._checked

    def knows(self, name: str) -> bool | None:
        """Whether `name` is enrolled; None while the gallery has never been read."""
        with self._lock:
            keys = self._keys
        return None if keys is None else name_key(name) in keys

    def refresh(self) -> bool:
        """Read the names again if the gallery changed; True when they were read. A gallery
        that cannot be read keeps the names last read (and is logged, once per reason)."""
        now = time.monotonic()
        try:
            changed = self._read()
        except (GalleryError, sqlite3.Error, OSError) as error:
            self.close()
            why = web_message(error)  # the hub's words: its service, never a flag
            if why != self._failed:
                log.warning(
                    "hub cannot read the gallery %s (%s): a person removed from it may stay "
                    "named on the retained last person until it can",
                    self.path,
                    why,
                )
            self._failed = why
            return False
        if self._failed is not None:
            log.info("hub reads the gallery %s again", self.path)
            self._failed = None
        with self._lock:
            self._checked = now
        return changed

    def _read(self) -> bool:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            # No gallery: nobody is enrolled (it is made at the first enrolment).
            self.close()
            return self._set(frozenset())
        file = (info.st_dev, info.st_ino)
        if self._gallery is not None and file != self._file:
            self.close()  # replaced by another file (a restored backup): read that one
        if self._gallery is None:
            self._gallery = Gallery.open(self.path, read_only=True)
            self._file = file
            self._version = None
        version = self._gallery.data_version()
        if version == self._version:
            return False
        keys = frozenset(name_key(person.name) for person in self._gallery.people())
        self._version = version
        return self._set(keys)

    def _set(self, keys: frozenset[str]) -> bool:
        with self._lock:
            changed = keys != self._keys
            self._keys = keys
        return changed

    def close(self) -> None:
        gallery, self._gallery = self._gallery, None
        self._file = self._version = None
        if gallery is not None:
            try:
                gallery.close()
            except sqlite3.Error:
                log.debug("gallery %s not closed cleanly", self.path, exc_info=True)
