"""The advice a refusal ends with where the command line and the web page say it differently.

The command line names its flags and commands (`use --add`, `pass --db`, `sudo -u edge-app`),
the People page its forms (add photos below), or what the hub's service needs (write access
to the gallery's folder). A refusal with such advice is an Advised: the problem, then the
advice as a kind, each surface wording the kind itself (for_cli, for_web). `str()` of an
Advised, and of an error raised with one, is the command line's text; the page asks for
web(). Advice every surface words alike stays in the plain text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Advice(enum.Enum):
    """What a refusal advises, whatever the words."""

    ADD_PHOTOS = "add photos to the person enrolled under that name"
    ENROL_NEW = "enrol the name as a new person"
    ADD_PHOTO_TO = "add this photo to the enrolled person `name`"
    # The gallery's file, which the command line chooses (--db) and runs as a user of its
    # choice, and the page does not: it is the hub's service's, as docs/WEB.md sets it up.
    NOT_A_GALLERY = "name the file of an edge-app gallery"
    CREATE_WHERE_WRITABLE = "create the gallery where it can be written"
    WRITE_AS_OWNER = "change the gallery as the user that owns it, in a folder it may write"
    READ_AS_OWNER = "read the gallery where the -shm file beside it can be made"


# Each kind's words: (the command line's, the People page's). `{name}` is the person's name,
# as the command line would take it typed (commands.name_words).
WORDS: dict[Advice, tuple[str, str]] = {
    Advice.ADD_PHOTOS: ("use --add to add photos to them", "add photos to them below"),
    Advice.ENROL_NEW: ("drop --add to enrol them", "enrol them with the form above"),
    Advice.ADD_PHOTO_TO: (
        "`edge-app enroll --add {name} PHOTO`",
        "Add photos in their panel below",
    ),
    Advice.NOT_A_GALLERY: (
        "pass --db with the path of an edge-app gallery (it is left untouched)",
        "set [gallery] path in the hub's config to the door's gallery (it is left untouched)",
    ),
    Advice.CREATE_WHERE_WRITABLE: (
        "pass --db with a writable location",
        "the web page's service (edge-app-hub) needs write access to the gallery's folder "
        "(docs/WEB.md)",
    ),
    Advice.WRITE_AS_OWNER: (
        "and this command changes it: run it as the user that owns the gallery "
        "(sudo -u edge-app), or give a --db in a folder you can write",
        "and this change needs it: the web page's service (edge-app-hub) must run as the "
        "user that owns the gallery, with write access to its folder (docs/WEB.md)",
    ),
    Advice.READ_AS_OWNER: (
        "read it as its owner (sudo -u edge-app), or once the door is running",
        "the web page's service (edge-app-hub) needs write access to the gallery's folder "
        "(docs/WEB.md), or the door running",
    ),
}


# The words where the gallery's file comes from a config's `gallery.path` (`run
# --check-config`), for the kinds a check of that path can give (gallery.refuse_untrusted);
# the other kinds keep the command line's words there.
CONFIG_WORDS: dict[Advice, str] = {
    Advice.NOT_A_GALLERY: "set gallery.path to the path of an edge-app gallery (it is left "
    "untouched)",
    Advice.CREATE_WHERE_WRITABLE: "set gallery.path to a writable location",
}


def for_cli(advice: Advice, name: str = "") -> str:
    """The advice as the command line words it; `name`: the person ADD_PHOTO_TO names."""
    from edge_app.commands import name_words

    words = WORDS[advice][0]
    return words.format(name=name_words(name)) if "{name}" in words else words


def for_web(advice: Advice, name: str = "") -> str:
    """The advice as the People page words it: its forms, never a flag or a command."""
    return WORDS[advice][1]


@dataclass(frozen=True)
class Advised:
    """A message ending with advice: `text`, the problem and the words leading to the advice,
    alike on every surface; then the advice; `name`, the person it is about, if any."""

    text: str
    advice: Advice
    name: str = ""

    def __str__(self) -> str:
        return self.text + for_cli(self.advice, self.name)

    def web(self) -> str:
        return self.text + for_web(self.advice, self.name)

    def config(self) -> str:
        """The message where the gallery's path comes from a config file (CONFIG_WORDS)."""
        return self.text + CONFIG_WORDS.get(self.advice, for_cli(self.advice, self.name))

    def after(self, text: str) -> Advised:
        """This advice after more text: `text` then this one's."""
        return Advised(text + self.text, self.advice, self.name)


# A message as a refusal carries it: plain text, the same everywhere, or an Advised.
Said = str | Advised


def web(said: Said) -> str:
    """A message as the web page says it."""
    return said.web() if isinstance(said, Advised) else said


def advised(error: BaseException) -> Advised | None:
    """The Advised an error was raised with (GalleryError(Advised(...))), or None."""
    said = error.args[0] if len(error.args) == 1 else None
    return said if isinstance(said, Advised) else None


def config_message(error: BaseException) -> str:
    """An error's message where the gallery's path comes from a config file: str(error) but
    for the advice of an error raised with an Advised."""
    said = advised(error)
    return str(error) if said is None else said.config()


def web_message(error: BaseException) -> str:
    """An error's message as the web page says it: str(error) but for the advice of an error
    raised with an Advised (GalleryError(Advised(...)))."""
    said = advised(error)
    return str(error) if said is None else said.web()
