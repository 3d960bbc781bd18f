"""Outside JSON: every hostile input becomes one BadJSON with a short reason, nothing else."""

from __future__ import annotations

import json
import threading

import pytest

from edge_app import untrusted_json
from edge_app.untrusted_json import MAX_INT, BadJSON


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not JSON: Expecting property name"),
        (b"", "not JSON: Expecting value at column 1"),
        # A text of several lines keeps its line (the same words on Python 3.11 and 3.13: a
        # trailing comma is worded differently there).
        (b'{\n"a": 1\n"b": 2}', "^not JSON: Expecting ',' delimiter at line 3 column 1$"),
        # Once said "starting at at line 1 column 7": an export file cut short, its line
        # (3, say) named by the import, then "line 1" of that line's own text.
        (b'{"a": "cut', "^not JSON: Unterminated string starting at column 7$"),
        (b"\x81", "not UTF-8 text"),
        (b"[" * 100_000, "JSON nested too deeply"),
        ("{" + '"a":{' * 3000 + "}" * 3001, "JSON nested too deeply"),
        (b"9" * 5000, "an integer of 5000 digits"),
        (b"-" + b"9" * 17, "an integer of 17 digits"),
        (str(MAX_INT + 1).encode(), "out of range"),
        (b"[NaN]", "NaN is not a JSON number"),
        (b'{"t": Infinity}', "Infinity is not a JSON number"),
        (b"[1e999]", "number 1e999 is out of range"),
        (b"-1e400", "number -1e400 is out of range"),
        (b'{"a": 1, "b": {"a": 2, "a": 3}}', "the key 'a' appears twice in one object"),
        (b"-Infinity", "-Infinity is not a JSON number"),
    ],
)
def test_hostile_json_is_one_error_with_a_reason(data: bytes | str, reason: str) -> None:
    with pytest.raises(BadJSON, match=reason):
        untrusted_json.loads(data)


def test_plain_json_parses_as_json_does() -> None:
    text = '{"v": 1, "n": -9007199254740992, "x": 1.5e3, "s": "é", "l": [true, null]}'
    assert untrusted_json.loads(text.encode()) == {
        "v": 1,
        "n": -MAX_INT,
        "x": 1500.0,
        "s": "é",
        "l": [True, None],
    }
    assert untrusted_json.loads("[" * 500 + "]" * 500) is not None  # ordinary depth is fine


@pytest.mark.parametrize("kind", [bytes, str])
def test_nesting_is_bounded_the_same_on_every_python(kind: type) -> None:
    """Python 3.13 parses nesting as deep as its C stack holds (3,000 levels without a
    RecursionError), where 3.11 stopped near 1,000: the bound is the module's own. Brackets
    inside strings are text, not nesting."""
    deep = "[" * (untrusted_json.MAX_DEPTH + 1) + "]" * (untrusted_json.MAX_DEPTH + 1)
    deepest = "[" * untrusted_json.MAX_DEPTH + "]" * untrusted_json.MAX_DEPTH
    brackets = '{"s": "' + "[{" * 2000 + '", "t": "\\"[["}'
    for text, parses in ((deep, False), (deepest, True), (brackets, True)):
        data = text.encode() if kind is bytes else text
        if parses:
            assert untrusted_json.loads(data) == json.loads(text)
        else:
            with pytest.raises(BadJSON, match="JSON nested too deeply"):
                untrusted_json.loads(data)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_json_in_another_encoding_than_utf8_is_refused(encoding: str) -> None:
    """json.loads reads UTF-16 and UTF-32 bytes as well; there a bracket's byte hides inside a
    character (U+2200 is 0x22 0x00: a quote to a byte count), so 600 levels passed the depth
    bound as 0 and parsed."""
    text = '{"v": ["\u2200", ' + "[" * 600 + '"\u2200"' + "]" * 600 + '], "op": "status"}'
    with pytest.raises(BadJSON, match="not UTF-8 text|not JSON"):
        untrusted_json.loads(text.encode(encoding))


def test_a_utf8_byte_order_mark_is_read_past() -> None:
    """A file saved by an editor that marks UTF-8 (Windows Notepad did) is still JSON."""
    assert untrusted_json.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_bad_json_is_a_value_error() -> None:
    """Callers that already refuse ValueError keep refusing it."""
    assert issubclass(BadJSON, ValueError)


def test_values_are_counted_before_parsing_when_bounded() -> None:
    """Commas and opening brackets, those inside strings too: it may refuse early, never late."""
    assert untrusted_json.loads(b"[1, 2, [3]]", max_values=5) == [1, 2, [3]]
    with pytest.raises(BadJSON, match="more than 4 values"):
        untrusted_json.loads(b"[1, 2, [3]]", max_values=4)
    with pytest.raises(BadJSON, match="more than 1000 values"):
        untrusted_json.loads(b"[" + b"[]," * 1000 + b"0]", max_values=1000)


@pytest.mark.parametrize("where", ["alone", "after a header"])
def test_an_unclosed_string_of_escaped_quotes_is_refused_at_once(where: str) -> None:
    """Found by an audit: the depth check's string pattern was tried again from every
    quote of an unclosed string of escaped quotes: 64 kB (one control-socket line) held
    the door's interpreter lock for 9 s, no frame processed; 1 MB of an import ran for
    minutes. The check is linear now: 1 MB is refused well within the bound below (the
    quadratic pattern took over 60 s for it)."""
    text = '"' + '\\"' * 500_000
    if where == "after a header":
        text = '{"format": "x", "people": [' + text
    outcome: list[BaseException] = []

    def parse() -> None:
        try:
            untrusted_json.loads(text.encode())
        except BadJSON as error:
            outcome.append(error)

    worker = threading.Thread(target=parse, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "still checking the text's depth"
    (error,) = outcome
    assert "Unterminated string" in str(error)


def test_brackets_in_strings_closed_or_not_are_text_not_nesting() -> None:
    """The linear pattern reads strings as the parser does: an escaped backslash ends
    before the closing quote; brackets after an unclosed quote are the string's."""
    assert not untrusted_json._too_deep('["\\\\", "' + "[" * 600 + '"]')
    assert untrusted_json._too_deep('"\\\\"' + "[" * (untrusted_json.MAX_DEPTH + 1))
    assert not untrusted_json._too_deep('"unclosed ' + "[" * 2000)
