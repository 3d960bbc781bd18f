"""JSON from outside the process (MQTT payloads, control-socket lines, imported and model
files), parsed so that no input can raise anything but `BadJSON`.

`json.loads` raises more than `JSONDecodeError` on hostile input: `RecursionError` for deep
nesting (about 1,000 `[` fit in a 1 KB MQTT command; from Python 3.13 only past what the C
stack holds, so nesting is bounded here, at MAX_DEPTH, before parsing), `ValueError` for an
integer of more
than 4,300 digits, `UnicodeDecodeError` for bytes that are not UTF-8. Left uncaught, any of
them ends the thread that read the input (paho's network loop, the door's control server).
Integers are also bounded here, so later arithmetic on them (a timestamp window) cannot
overflow a float; a number too large for a float (`1e999`, which Python reads as infinity)
is refused, as is an object that names a key twice (which of the two would count is not
something a file should leave to the parser).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

# Beyond any timestamp, count or size a command or file carries (2**53: floats stay exact).
MAX_INT = 2**53
# Far deeper than anything the program reads (a manifest or a command is a few levels deep),
# and well inside Python's recursion limit (1,000) for whatever walks the value later: the
# same refusal on every Python, whatever its recursion and C stack limits.
MAX_DEPTH = 512
# A string literal, whose brackets are text (to the end of the text when it is never closed:
# the parser refuses that). Written so that matching it takes time linear in the text: the
# obvious `"(?:[^"\\]|\\.)*"` tried again from every quote of an unclosed string of escaped
# quotes, 9 s for 64 kB, and held the interpreter lock all that time.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?')
# What is not a bracket that nests; and each bracket's step in depth.
_NOT_NESTING = re.compile(r"[^\[\]{}]+")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class BadJSON(ValueError):
    """The text is not JSON this program accepts; the message says why, in a few words."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 16:
        raise BadJSON(f"an integer of {len(text.lstrip('-'))} digits")
    value = int(text)
    if abs(value) > MAX_INT:
        raise BadJSON(f"integer {value} is out of range")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadJSON(f"the key {key[:40]!r} appears twice in one object")
            seen.add(key)
    return found


def _too_deep(text: str) -> bool:
    """Whether the arrays and objects in `text` nest more than MAX_DEPTH deep: in time linear
    in the text, and memory no more than a copy of it (its brackets, as bytes)."""
    brackets = _NOT_NESTING.sub("", _STRING.sub("", text)).encode("ascii")
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_DEPTH


def loads(data: bytes | bytearray | str, max_values: int | None = None) -> Any:
    """The parsed value of `data`; BadJSON for anything that is not plain, bounded JSON.

    max_values bounds how many values (numbers, strings, arrays, objects...) it may hold,
    counted before parsing from its commas and opening brackets (those inside strings too,
    so it errs on the safe side): three bytes of text, `[],`, are a Python list of 56 bytes,
    and a file of them many times its size in memory.

    Bytes must be UTF-8 (a byte-order mark is allowed), as JSON exchanged between systems is
    (RFC 8259): json.loads would also read UTF-16 and UTF-32, whose brackets the depth count
    over the text would then not see."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadJSON("not UTF-8 text") from None
    if max_values is not None:
        values = text.count(",") + text.count("[") + text.count("{") + 1
        if values > max_values:
            raise BadJSON(f"more than {max_values} values")
    if _too_deep(text):
        raise BadJSON("JSON nested too deeply")
    try:
        return json.loads(
            text,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
    except BadJSON:
        raise
    except RecursionError:
        raise BadJSON("JSON nested too deeply") from None
    except UnicodeDecodeError:
        raise BadJSON("not UTF-8 text") from None
    except json.JSONDecodeError as error:
        # A one-line text (a line of an export, read with its own line number) is all
        # "line 1": its column alone, not a line number that contradicts the caller's.
        one_line = "\n" not in text.rstrip("\r\n")
        where = f"column {error.colno}" if one_line else f"line {error.lineno} column {error.colno}"
        # json's own message for an open string already ends with "at" (its str() adds ":").
        raise BadJSON(f"not JSON: {error.msg.removesuffix(' at')} at {where}") from None
    except ValueError as error:
        raise BadJSON(f"not JSON: {error}") from None
