"""Report files (evaluations, benchmarks, validation): checked before the work, written whole.

An evaluation can run for many minutes; a `--json` path that cannot be written should be
refused before it starts, not with a traceback after it ends. And a report is written under a
temporary name beside its target and renamed into place, so a failure never leaves half a file
that a later read would trust.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import UserError


def json_safe(value: Any) -> Any:
    """`value` for strict JSON: every NaN or infinity (a rate with nothing to count, a
    threshold that does not exist) as None (null), numpy numbers as Python's. json writes a
    bare NaN otherwise, which strict parsers refuse."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a temp file beside the target, renamed over it (mode as a plain
    open() would give: 0666 less the umask; mkstemp's own is 0600). Strict JSON: a NaN or an
    infinity (a rate with nothing to count) is written as null (json_safe)."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, "w") as out:
            json.dump(json_safe(data), out, indent=2, default=float, allow_nan=False)
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
