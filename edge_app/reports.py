"""Report files (evaluations, benchmarks, validation): checked before the work, written whole.

An evaluation can run for many minutes; a `--json` path that cannot be written should be
refused before it starts, not with a traceback after it ends. And a report is written under a
temporary name beside its target and renamed into place, so a failure never leaves half a file
that a later read would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_app.errors import UserError


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a temp file beside the target, renamed over it (mode as a plain
    open() would give: 0666 less the umask; mkstemp's own is 0600)."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2, default=float)
            out.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def check_output(path: Path | None, option: str = "--json", *, parents: bool = False) -> None:
    """Refuse (UserError) a report path that could not be written, before the work.

    parents: the writer creates missing folders, so the nearest existing one is checked."""
    if path is None:
        return
    if str(path) == "-":
        # elsewhere "-" is standard output; here the report is printed there already
        raise UserError(f"{option} -: give a file name (the report is printed as well)")
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    folder = path.parent
    while parents and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UserError(
            f"{option} {path}: cannot write in {folder} ({error.strerror or error})"
        ) from None


def check_distinct(files: Mapping[str, Path | None]) -> None:
    """Refuse (UserError) two options naming one file (option name to path; None: unset),
    before the work: one would overwrite the other, or an input."""
    seen: dict[Path, str] = {}
    for option, path in files.items():
        if path is None:
            continue
        where = Path(path).resolve()
        if where in seen:
            raise UserError(f"{option} {path} is also {seen[where]}; each needs its own file")
        seen[where] = option


def write_report(path: Path, data: Any, option: str = "--json") -> None:
    """write_json, with a failure (disk full, folder gone) as a one-line UserError."""
    try:
        write_json(path, data)
    except OSError as error:
        raise UserError(f"{option} {path}: cannot write it ({error.strerror or error})") from None
