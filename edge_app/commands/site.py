"""`edge-app site show | forget`: what the door learned of its site ([recognition] learn_site)."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_app.commands import AS_DOOR, config_path
from edge_app.errors import UserError
from edge_app.paths import DEFAULT_CONFIG
from edge_app.site_memory import (
    LEARN_DOUBT,
    LEARN_INTERVAL,
    REFUSED_NAME,
    SITE_MEMORY_NAME,
    VISITS,
    SiteMemory,
)

if TYPE_CHECKING:
    from edge_app.config import Config

# How the door is reloaded when its control socket cannot be used (systemd/edge-app.service).
RELOAD_BY_HAND = "sudo systemctl reload edge-app"

EPILOG = f"""\
what the site memory is:
  Site centring ([recognition] site_centring, on by default) measures what the faces at one
  door share (one camera, one light) from the enrolled people, and removes most of it
  before matching. One person enrolled gives it nobody to compare with, and strangers then
  score higher against them. With [recognition] learn_site = true the door also counts the
  visits it judged strangers (nobody recognised over a full vote window, and live when the
  models check liveness) as more faces of its site, at most one per {LEARN_INTERVAL:.0f} seconds. It
  keeps a decayed sum of their embeddings in {SITE_MEMORY_NAME} beside the gallery (mode
  0600; about the last {VISITS} visits; no image, time or name). It counts from the first
  visit learned. A visit that scored within {LEARN_DOUBT} of the threshold for someone enrolled is
  not learned: it may have been them, missed.

why it is off by default:
  It keeps something of people who never chose to be enrolled, even if only an aggregate.
  Enrolling one to three people who visit, without access (`edge-app enroll --no-access`),
  shows the door its camera without that (docs/GALLERY.md, "Known visitors"). The figures
  are in docs/ACCURACY.md, "A door that learns its site".

to turn it on:
  set learn_site = true under [recognition] in the config, then reload the door
  ({RELOAD_BY_HAND}). At start it logs "site memory PATH: N stranger visit(s)
  learned", and one line per visit it learns.

examples:
  sudo -u edge-app edge-app site show
  sudo -u edge-app edge-app site forget
"""

SHOW_EPILOG = """\
A file the door cannot use is named on stderr and the exit code is 2; the door sets such a
file aside as site_memory.refused.npz at its next start or reload, and starts empty.

examples:
  sudo -u edge-app edge-app site show
  edge-app site show --config ./door.toml --json
"""

FORGET_EPILOG = f"""\
Deletes {SITE_MEMORY_NAME}, and {REFUSED_NAME} if the door set one aside, then asks the
running door to reload through its control socket ([hub] socket). A running door forgets
too within a second, with or without that reload: it looks at the file once a second. A
door that is not running starts with an empty memory. While learn_site is on, the door
learns again from the next strangers' visits.

examples:
  sudo -u edge-app edge-app site forget
  edge-app site forget --config ./door.toml
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "site",
        help="show or forget what the door learned of its site from strangers (learn_site)",
        description="The site memory: what the door learns of its own camera from the visits\n"
        "it judged strangers, when [recognition] learn_site is on (off by default).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="site_command", metavar="COMMAND", required=True)
    show = sub.add_parser(
        "show",
        help="where the site memory is and how much it has learned",
        description="Show the site memory: its file, whether learn_site is on, the visits\n"
        "learned, the file's mode, and the length site centring removes from every face\n"
        "with the memory and without it.",
        epilog=SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_argument(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)
    forget = sub.add_parser(
        "forget",
        help="delete the site memory; a running door forgets it too",
        description="Delete the site memory and have the running door reload.",
        epilog=FORGET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_argument(forget)
    forget.set_defaults(handler=run_forget, changes="the site memory")


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=config_path, metavar="PATH", help=f"TOML config (default {DEFAULT_CONFIG})"
    )


@dataclass(frozen=True)
class SiteFile:
    """The site memory file of a config, as read from disk (nothing is changed).

    memory: the memory in it (an empty one when there is no file), None when it cannot be
    used; refusal: why the door would set the file aside; unreadable: why this process
    cannot read it (permissions), which says nothing about the file; mode: its permission
    bits (None when there is no file, or it is not a regular file); set_aside: the file the
    door set aside, if any."""

    path: Path
    learn_site: bool
    exists: bool
    memory: SiteMemory | None
    refusal: str | None
    unreadable: str | None
    mode: int | None
    set_aside: Path | None

    @property
    def private(self) -> bool:
        """Neither group nor others may read or write it (mode 0600 or narrower)."""
        return self.mode is None or not self.mode & 0o077

    @property
    def mode_problem(self) -> str | None:
        """What is wrong with the file's mode (the fix is `chmod 600`), None when it is 0600."""
        if not self.private:
            return "its group or others may read it"
        if self.mode is not None and self.mode != 0o600:
            return "the door cannot write it"
        return None


def inspect_site(config: Config) -> SiteFile:
    """What `site show` and `edge-app doctor` report of the config's site memory."""
    from edge_app.site_memory import site_memory_path

    path = site_memory_path(config.gallery.path)
    aside = path.with_name(REFUSED_NAME)
    set_aside = aside if os.path.lexists(aside) else None
    learn_site = config.recognition.learn_site

    def result(**fields: Any) -> SiteFile:
        return SiteFile(path, learn_site, set_aside=set_aside, **fields)

    try:
        info = path.stat()
    except FileNotFoundError:
        return result(exists=False, memory=SiteMemory(), refusal=None, unreadable=None, mode=None)
    except OSError as error:
        return result(
            exists=True, memory=None, refusal=None, unreadable=_cannot_read(path, error), mode=None
        )
    # The mode of what the door would read: none for a device or pipe (`ln -s /dev/null`), whose
    # mode is not the memory's to advise on (chmod through the link would change the device).
    mode = stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else None
    if not os.access(path, os.R_OK):
        unreadable = _cannot_read(path, PermissionError("permission denied"))
        return result(exists=True, memory=None, refusal=None, unreadable=unreadable, mode=mode)
    try:
        memory = SiteMemory.load(path)
    except UserError as error:
        return result(exists=True, memory=None, refusal=str(error), unreadable=None, mode=mode)
    return result(exists=True, memory=memory, refusal=None, unreadable=None, mode=mode)


def _cannot_read(path: Path, error: OSError) -> str:
    return f"{path}: cannot read it ({error.strerror or error})"


@dataclass(frozen=True)
class SiteLengths:
    """What site centring removes from every face on this gallery: the length of the removed
    direction with the memory counted and without it (0 when site centring is off)."""

    people: int
    with_memory: float
    without_memory: float


def site_lengths(config: Config, memory: SiteMemory) -> SiteLengths:
    """The door's own measure (edge_app.matching.site_direction, what Matcher.site_shared is
    the length of) on the config's gallery; UserError or OSError when it cannot be read."""
    import numpy as np

    from edge_app.gallery import Gallery
    from edge_app.matching import SITE_SHARE, site_direction

    with Gallery.open(config.gallery.path, read_only=True) as gallery:
        matrix = gallery.load_matrix()
    share = SITE_SHARE if config.recognition.site_centring else 0.0
    return SiteLengths(
        len(matrix.names),
        share * float(np.linalg.norm(site_direction(matrix, memory))),
        share * float(np.linalg.norm(site_direction(matrix))),
    )


def run_show(args: argparse.Namespace) -> int:
    from edge_app.config import load_config

    config = load_config(args.config)
    site = inspect_site(config)
    lengths: SiteLengths | None = None
    gallery_problem = None
    if site.memory is not None:
        try:
            lengths = site_lengths(config, site.memory)
        except (UserError, OSError) as error:
            gallery_problem = str(error)
    if args.json:
        sys.stdout.write(json.dumps(_as_json(site, lengths, gallery_problem), indent=2) + "\n")
    else:
        lines = _lines(site)
        if lengths is not None:
            lines.append(("site centring", _removed(site, lengths, config)))
        elif gallery_problem is not None:
            lines.append(("site centring", f"not measured: {gallery_problem}"))
        sys.stdout.write("".join(f"{label:<15}{value}\n" for label, value in lines))
    if site.unreadable is not None:
        raise UserError(f"{site.unreadable}; run as the door's user: {AS_DOOR} site show")
    if site.refusal is not None:
        raise UserError(f"{site.refusal}; {_what_the_door_does(site)}")
    return 0


def _what_the_door_does(site: SiteFile) -> str:
    # A folder is not the door's to delete: `site forget` refuses it (the refusal says so).
    folder = site.path.is_dir() and not site.path.is_symlink()
    forget = "" if folder else "; `edge-app site forget` deletes it"
    if not site.learn_site:
        return f"the door does not use it (learn_site is off){forget}"
    return (
        f"the door sets it aside as {REFUSED_NAME} at its next start or reload and starts "
        f"empty{forget}"
    )


def _lines(site: SiteFile) -> list[tuple[str, str]]:
    lines = [
        ("site memory", str(site.path)),
        (
            "learn_site",
            "on: the door learns from strangers' visits and counts them in site centring"
            if site.learn_site
            else "off: the door neither learns nor uses it (turn it on with [recognition] "
            "learn_site = true; `edge-app site --help`)",
        ),
    ]
    memory = site.memory
    if not site.exists:
        lines.append(("learned", "nothing: there is no file yet"))
    elif memory is None:
        lines.append(("learned", "unknown: the file cannot be used (the error says why)"))
    else:
        counts = "counted in site centring" if memory.ready else "nothing to count yet"
        lines.append(("learned", f"{memory.learned} stranger visit(s), {counts}"))
        lines.append(
            (
                "weight",
                f"{memory.weight:.2f} (the decayed count of the visits it holds; at most {VISITS})",
            )
        )
    if site.mode is not None:
        problem = site.mode_problem
        warning = "" if problem is None else f"  WARNING: {problem}; chmod 600 {site.path}"
        lines.append(("mode", f"{site.mode:o}{warning}"))
    lines.append(
        (
            "set aside",
            "none"
            if site.set_aside is None
            else f"{site.set_aside}: a file the door could not use (`edge-app site forget` "
            "deletes it)",
        )
    )
    return lines


def _removed(site: SiteFile, lengths: SiteLengths, config: Config) -> str:
    people = f"{lengths.people} {'person' if lengths.people == 1 else 'people'} enrolled"
    if not config.recognition.site_centring:
        return f"off: nothing is removed ({people})"
    if site.memory is None or not site.memory.ready:
        return (
            f"removes a direction of length {lengths.without_memory:.2f} from every face "
            f"({people}; the memory has learned no visit yet)"
        )
    used = "" if site.learn_site else "; the door counts the memory only with learn_site on"
    return (
        f"removes a direction of length {lengths.with_memory:.2f} from every face with the "
        f"memory, {lengths.without_memory:.2f} without it ({people}{used})"
    )


def _as_json(site: SiteFile, lengths: SiteLengths | None, gallery_problem: str | None) -> dict:
    memory = site.memory
    return {
        "path": str(site.path),
        "learn_site": site.learn_site,
        "exists": site.exists,
        "learned": None if memory is None else memory.learned,
        "ready": None if memory is None else memory.ready,
        "weight": None if memory is None else round(memory.weight, 4),
        "max_weight": VISITS,
        "mode": None if site.mode is None else f"{site.mode:o}",
        "private": site.private,
        "set_aside": None if site.set_aside is None else str(site.set_aside),
        "error": site.unreadable or site.refusal,
        "site_centring": None
        if lengths is None
        else {
            "people": lengths.people,
            "removed_with_memory": round(lengths.with_memory, 4),
            "removed_without_memory": round(lengths.without_memory, 4),
        },
        "gallery_error": gallery_problem,
    }


def run_forget(args: argparse.Namespace) -> int:
    from edge_app.config import load_config
    from edge_app.control import ControlClient, ControlError
    from edge_app.site_memory import forget, site_memory_path

    config = load_config(args.config)
    path = site_memory_path(config.gallery.path)
    deleted = []
    for target in (path, path.with_name(REFUSED_NAME)):
        try:
            if forget(target):
                deleted.append(target)
        except IsADirectoryError:
            raise UserError(
                f"cannot delete {target}: it is a folder, not a site memory (the door keeps its "
                "memory in a file of its own); look at what it holds and remove it yourself"
            ) from None
        except PermissionError as error:
            raise UserError(
                f"cannot delete {target} ({error.strerror or error}); run as the door's user: "
                f"{AS_DOOR} site forget"
            ) from None
        except OSError as error:
            raise UserError(f"cannot delete {target} ({error.strerror or error})") from None
    for target in deleted:
        sys.stdout.write(f"deleted {target}\n")
    if not deleted:
        sys.stdout.write(f"no site memory at {path}: nothing to delete\n")
    socket = config.hub.socket
    if socket is None:
        sys.stdout.write(
            "the door's control socket is off ([hub] socket): a running door finds the file "
            "gone within a second and forgets too; else it starts empty next time\n"
        )
        return 0
    if not os.path.lexists(socket):
        sys.stdout.write(
            f"no door is running (no socket at {socket}): it starts with an empty site "
            "memory next time\n"
        )
        return 0
    try:
        ControlClient(socket).reload()
    except ControlError as error:
        raise UserError(
            f"could not ask the door to reload ({error}): a running door finds the file "
            "gone within a second and forgets all the same (its log says 'site memory ... "
            f"was deleted or replaced'); if its log does not say so, reload it ({RELOAD_BY_HAND})"
        ) from None
    sys.stdout.write(
        "asked the running door to reload: it forgets what it had learned "
        "(its log says 'reload done')\n"
    )
    return 0
