"""Report files (evaluations, benchmarks, validation): checked before the work, written whole.

An evaluation can run for many minutes; a `--json` path that cannot be written should be
refused before it starts, not with a traceback after it ends. And a report is written under a
temporary name beside its target, synced to disk, and renamed into place (the folder synced
after), so a failure never leaves half a file that a later read would trust, and a power cut
soon after a reported success never leaves an empty one.

Only a regular file is ever replaced: a device (`--json /dev/null` run as root), a named pipe,
a socket or a symbolic link at the path is refused and left as it is (edge_app.private_file's
rule), and so is a path that is one of the command's inputs or lies in an input folder.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.errors import UserError
from edge_app.private_file import NotRegularFileError, refuse_non_regular, sync_folder


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


def json_text(data: Any) -> str:
    """`data` as the text of a strict JSON report (json_safe), indented, ending in a newline."""
    return json.dumps(json_safe(data), indent=2, default=float, allow_nan=False) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a temp file beside the target, renamed over it (mode as a plain
    open() would give: 0666 less the umask; mkstemp's own is 0600). Strict JSON: a NaN or an
    infinity (a rate with nothing to count) is written as null (json_safe). Something other
    than a regular file at `path` is left as it is: NotRegularFileError (an OSError)."""
    _write_texts([("", Path(path), json_text(data))])


def write_report(path: Path, data: Any, option: str = "--json") -> None:
    """write_json, with a failure (disk full, folder gone, not a regular file) as a one-line
    UserError naming `option`."""
    write_reports({option: (Path(path), json_text(data))})


def write_reports(reports: Mapping[str, tuple[Path, str]]) -> None:
    """Write reports that belong together (option name to path and text, e.g. validate's
    JSON and Markdown): each is written whole under a temporary name beside its target
    first, and only then are they all renamed into place, so a failure while writing (a full
    disk, a stop) replaces none of them. Failures are one-line UserErrors naming the option."""
    _write_texts([(option, Path(path), text) for option, (path, text) in reports.items()])


def _write_texts(items: Sequence[tuple[str, Path, str]]) -> None:
    """(option, path, text) written as write_reports says; option "" raises the OSError
    itself (write_json's callers), any other its one-line UserError."""
    staged: list[tuple[str, Path, Path]] = []  # option, temporary file, target
    option, path = "", Path(".")
    try:
        for option, path, text in items:
            refuse_non_regular(path)
            staged.append((option, _stage(path, text), path))
        while staged:
            option, temp, path = staged[0]
            refuse_non_regular(path)  # again: something may have appeared there meanwhile
            os.replace(temp, path)
            staged.pop(0)
            sync_folder(path.parent)  # the rename, through a power cut
    except OSError as error:
        if not option:
            raise
        if isinstance(error, NotRegularFileError):
            raise UserError(f"{option} {error}") from None
        raise UserError(f"{option} {path}: cannot write it ({error.strerror or error})") from None
    finally:
        for _, temp, _ in staged:  # only a failure leaves any
            temp.unlink(missing_ok=True)


def _stage(path: Path, text: str) -> Path:
    """`text` in a new temporary file beside `path` (mode 0666 less the umask)."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            # On disk before the rename: else a power cut soon after it can leave the report
            # empty under its final name.
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp)


def check_output(path: Path | None, option: str = "--json", *, parents: bool = False) -> None:
    """Refuse (UserError) a report path that could not be written, before the work: a
    folder, something other than a regular file (a device, a named pipe, a socket, a
    symbolic link: never replaced), or a path in a folder that cannot be written.

    parents: the writer creates missing folders, so the nearest existing one is checked."""
    if path is None:
        return
    if str(path) == "-":
        # elsewhere "-" is standard output; here the report is printed there already
        raise UserError(f"{option} -: give a file name (the report is printed as well)")
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        raise UserError(f"{option} {path} is a folder; give a file name")
    try:
        refuse_non_regular(path)
    except NotRegularFileError as refused:
        raise UserError(f"{option} {refused}") from None
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


def check_distinct(
    outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None] | None = None
) -> None:
    """Refuse (UserError), before the work, an output that would overwrite another output or
    an input (option name to path; None: unset): the same path once resolved, or one file
    under two names (device and inode: a hard link); or that lies inside an input that is
    a folder (the images, a models folder, the folder a command replaces)."""
    seen: dict[str, Path] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        for other, given in (seen | {k: v for k, v in (inputs or {}).items() if v}).items():
            taken = Path(given)
            if _same_file(path, taken):
                raise UserError(f"{option} {path} is also {other}; each needs its own file")
            if taken.is_dir() and Path(path).resolve().is_relative_to(taken.resolve()):
                raise UserError(f"{option} {path} is inside {other} {taken}; write it elsewhere")
        seen[option] = Path(path)


def _same_file(a: Path, b: Path) -> bool:
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False
