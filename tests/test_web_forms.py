"""The page's own form reader (edge_app/web/forms.py) on a photo upload streamed as uvicorn
delivers it: what it keeps, and how much memory it takes doing so."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from peaks import traced_peak
from starlette.requests import Request

from edge_app.web.forms import Form, Limits, read_form

BOUNDARY = b"b0undary"


def upload_body(photos: dict[str, bytes], fields: dict[str, str]) -> bytes:
    body = b""
    for name, value in fields.items():
        body += b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="' + name.encode()
        body += b'"\r\n\r\n' + value.encode() + b"\r\n"
    for filename, data in photos.items():
        body += b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="photos"; '
        body += b'filename="' + filename.encode() + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
        body += data + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\n"


def read(body: bytes, limits: Limits) -> Form:
    """read_form on `body` delivered in 64 KiB pieces, as uvicorn hands a request body on."""
    pieces: Iterator[bytes] = (body[i : i + 65536] for i in range(0, len(body), 65536))

    async def receive() -> dict:
        piece = next(pieces, None)
        return {"type": "http.request", "body": piece or b"", "more_body": piece is not None}

    content_type = b"multipart/form-data; boundary=" + BOUNDARY
    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type)]}
    # A loop of its own, not asyncio.run: that one's runner takes several times the size of
    # what the coroutine returns as it ends (seen under tracemalloc on Python 3.11), which
    # would be counted here as the reader's.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(read_form(Request(scope, receive), limits))
    finally:
        loop.close()


def test_an_upload_is_held_once_while_it_is_read() -> None:
    """Found by a denial-of-service audit: each photo was read into a buffer, then copied
    whole at its end, so a 39 MB upload (web.max_upload_mb is 40) took 81 MB at its peak
    before the one-enrolment lock was even asked for. The buffer is now kept as it is:
    42 MB, the upload and its buffer's spare room."""
    size = 20_000_000
    body = upload_body({"a.jpg": b"\xff" * size, "b.jpg": b"\xd8" * 1000}, {"name": "Ada"})
    form, peak = traced_peak(lambda: read(body, Limits(max_bytes=40_000_000, max_files=10)))
    assert form.get("name") == "Ada"
    assert [(upload.filename, len(upload.data)) for upload in form.files] == [
        ("a.jpg", size),
        ("b.jpg", 1000),
    ]
    assert bytes(form.files[0].data) == b"\xff" * size
    assert peak < 1.25 * size, f"{peak / 1e6:.1f} MB at its peak for a {size / 1e6:.0f} MB photo"
