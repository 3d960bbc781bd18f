"""What a remote unlock may say about itself: its reason and its origin.

The door records a remote unlock as one `unlock` event whose reason reads
`<reason>; origin=<origin> uid=<uid> gid=<gid> pid=<pid>`: the reason and the origin as the
caller sent them, the ids as the kernel gave them (edge_app.control). Readers (the journal,
the web page's events, Home Assistant automations) find who asked after `origin=`. So a
reason or an origin that holds one of the words the door stamps itself (`origin=`, `uid=`,
`gid=`, `pid=`) is refused: `reason "x; origin=web:admin"` would put a second, false origin
in front of the true one.

Shared by the control socket (every unlock), the web page's unlock form (checked before
its password) and the signed MQTT command's origin (signer and verifier). Standard library
only: the hub's signer imports it.
"""

from __future__ import annotations

from typing import Any

TEXT_MAX = 200  # characters of an unlock reason or origin
ORIGIN_MAX = 64  # characters of a signed MQTT command's origin (edge_app.hub.signing)
STAMP_WORDS = ("origin=", "uid=", "gid=", "pid=")


def stamp_word(text: str) -> str | None:
    """The first word of STAMP_WORDS that `text` holds, in any case; None if none."""
    folded = text.casefold()
    return next((word for word in STAMP_WORDS if word in folded), None)


def clean(value: Any, name: str) -> str:
    """An unlock's reason or origin as the door records it, whitespace runs made one space;
    ValueError, saying why, when it is empty, longer than TEXT_MAX, not printable, or holds
    a word the door stamps itself (STAMP_WORDS)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")
    text = " ".join(value.split())
    if len(text) > TEXT_MAX or not text.isprintable():
        raise ValueError(f"{name} must be printable and at most {TEXT_MAX} characters")
    word = stamp_word(text)
    if word is not None:
        raise ValueError(f"{name} may not contain {word!r}: the door records who asked itself")
    return text


def origin_problem(origin: object) -> str | None:
    """Why a signed command's origin is refused (its signer and its verifier ask); None if
    fine. It is signed as it will be recorded: at most ORIGIN_MAX printable characters,
    single spaces inside only (the door makes every run of whitespace one space), no word
    the door stamps itself."""
    if not isinstance(origin, str) or not 0 < len(origin) <= ORIGIN_MAX or not origin.isprintable():
        return f"origin must be 1-{ORIGIN_MAX} printable characters"
    if " ".join(origin.split()) != origin:
        return (
            "origin may not begin or end with a space or hold two in a row: the door records "
            "it with single spaces, and what it records must be what was signed"
        )
    try:
        clean(origin, "origin")
    except ValueError as error:
        return str(error)
    return None
