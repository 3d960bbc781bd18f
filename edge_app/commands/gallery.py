"""Gallery management: `edge-app list`, `access`, `remove`, `rename`, `export`, `import`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import stat
import sys
import unicodedata
from dataclasses import asdict
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edge_app.commands import door_config, printable, shown
from edge_app.commands.identify import add_db_argument, db_path
from edge_app.errors import UserError

if TYPE_CHECKING:
    from edge_app.config import EventsConfig
    from edge_app.events import History
    from edge_app.gallery import Gallery

log = logging.getLogger(__name__)

FORMATTER = argparse.RawDescriptionHelpFormatter
NAME_HELP = "an enrolled person's name as `edge-app list` shows it (any case and spacing)"


def register(subparsers: argparse._SubParsersAction) -> None:
    listing = subparsers.add_parser(
        "list",
        help="list enrolled people",
        description="List the enrolled people with their sample counts.",
        epilog="examples:\n  edge-app list\n  edge-app list --db ./gallery.db --json",
        formatter_class=FORMATTER,
    )
    add_db_argument(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)

    access = subparsers.add_parser(
        "access",
        help="let an enrolled person in, or make them a known visitor",
        description="Say whether an enrolled person may open the door. A known visitor (no)\n"
        'is recognised and reported by name (`denied`, reason "no access") and never let\n'
        "in. Enrolling a few people who visit, without access, also shows the door what its\n"
        "camera gives every face, which keeps strangers out of a household of one\n"
        '(docs/GALLERY.md, "Known visitors"). The running door picks the change up at once.',
        epilog='examples:\n  edge-app access "Dan Smith" no\n  edge-app access Dan yes',
        formatter_class=FORMATTER,
    )
    access.add_argument("name", metavar="NAME", help=NAME_HELP)
    access.add_argument(
        "allowed", metavar="yes|no", choices=("yes", "no"), help="yes: may open the door"
    )
    add_db_argument(access)
    access.set_defaults(handler=run_access, changes="the gallery")

    remove = subparsers.add_parser(
        "remove",
        help="remove people and all their samples (--history: and what the door recorded)",
        description="Remove people and all their samples (all of them, or none if one is\n"
        "not enrolled). Nothing of their face stays in the gallery's files.\n\n"
        "What the door recorded about them is history, kept for events.retention_days\n"
        "(90 by default): the events that name them and their snapshots. --history\n"
        "erases it too, from the events database and snapshots folder of the config;\n"
        "a name no longer enrolled is then accepted when the door has history of it.\n"
        "A report of a stranger who took their place keeps the stranger, without their\n"
        "name. It cannot find snapshots of them judged unknown (those carry no name),\n"
        "nor rewrite events.jsonl, a log the door only appends to. Run it while they\n"
        "are not at the door.\n\n"
        "Photos you copied to the door by hand to enrol them (such as\n"
        "/var/lib/edge-app/photos/NAME) are not touched: delete them yourself.",
        epilog='examples:\n  edge-app remove "Alice Martin"\n  edge-app remove Bob Carol\n'
        '  edge-app remove --history "Alice Martin"   # and the events and snapshots of her\n'
        "  sudo -u edge-app rm -r /var/lib/edge-app/photos/alice   # photos copied by hand",
        formatter_class=FORMATTER,
    )
    remove.add_argument("names", nargs="+", metavar="NAME", help=NAME_HELP)
    remove.add_argument(
        "--history",
        action="store_true",
        help="also erase the events that name them and their snapshots (the config's "
        "events.db and events.snapshots)",
    )
    add_db_argument(remove)
    remove.set_defaults(handler=run_remove, changes="the gallery")

    rename = subparsers.add_parser(
        "rename",
        help="rename an enrolled person",
        description="Rename an enrolled person; their samples stay.",
        epilog='examples:\n  edge-app rename Bob "Robert Smith"',
        formatter_class=FORMATTER,
    )
    rename.add_argument("old", metavar="OLD", help=NAME_HELP)
    rename.add_argument(
        "new", metavar="NEW", help="the new name, not anyone else's (stored as typed)"
    )
    add_db_argument(rename)
    rename.set_defaults(handler=run_rename, changes="the gallery")

    export = subparsers.add_parser(
        "export",
        help="write the gallery to a file, to move it to another door",
        description="Write every person and sample to a JSON-lines file (format:\n"
        "docs/GALLERY.md). The file holds biometric templates: it is created mode 0600;\n"
        "move it as you would a password file. On an installed door run it as the service\n"
        "user, which alone reads the gallery; standard output (-) is written by your shell,\n"
        "so give that file its mode yourself (umask 077). Backing up a whole door:\n"
        'docs/INSTALL.md, "Backup, restore, moving to a new Pi".',
        epilog="examples:\n"
        "  sudo -u edge-app edge-app export - | (umask 077; cat > door-gallery.jsonl)\n"
        "  sudo -u edge-app edge-app export - | ssh back-door sudo -u edge-app edge-app import -\n"
        "  edge-app export --db ./gallery.db front-door.jsonl",
        formatter_class=FORMATTER,
    )
    export.add_argument("out", metavar="FILE", help="output file, or - for standard output")
    add_db_argument(export)
    export.set_defaults(handler=run_export)

    importing = subparsers.add_parser(
        "import",
        help="add the people of an exported file",
        description="Add the people of an `edge-app export` file in one transaction.\n"
        "A name enrolled in both is refused unless --replace or --merge says what to do.",
        epilog="examples:\n  sudo -u edge-app edge-app import - < door-gallery.jsonl\n"
        "  edge-app import --merge --db ./gallery.db front-door.jsonl",
        formatter_class=FORMATTER,
    )
    importing.add_argument("source", metavar="FILE", help="export file, or - for standard input")
    add_db_argument(importing)
    conflict = importing.add_mutually_exclusive_group()
    conflict.add_argument(
        "--replace",
        action="store_true",
        help="a person in both: keep only the imported samples",
    )
    conflict.add_argument(
        "--merge",
        action="store_true",
        help="a person in both: add the imported samples of photos not already there; one the "
        "file lists without access loses it here too (never the other way)",
    )
    importing.add_argument(
        "--json",
        action="store_true",
        help='print the summary as JSON; when nothing is imported, {"imported": false, '
        '"error": ...} (exit code 2)',
    )
    importing.set_defaults(handler=run_import, changes="the gallery")


def run_list(args: argparse.Namespace) -> int:
    from edge_app.gallery import Gallery

    with Gallery.open(db_path(args), read_only=True) as gallery:
        people = gallery.people()
    if args.json:
        sys.stdout.write(json.dumps([asdict(p) for p in people], indent=2, ensure_ascii=False))
        sys.stdout.write("\n")
        return 0
    if not people:
        sys.stdout.write("nobody is enrolled\n")
        return 0
    # shown(): a name put in the file by hand may hold what check_name refuses.
    names = [shown(p.name) for p in people]
    width = max(columns(name) for name in ["NAME", *names])
    sys.stdout.write(
        f"{padded('NAME', width)}  ACCESS  SAMPLES  CROPS  ENROLLED              LAST SAMPLE\n"
    )
    for name, p in zip(names, people, strict=True):
        sys.stdout.write(
            f"{padded(name, width)}  {'yes' if p.access else 'no':<6}  {p.samples:>7}  "
            f"{p.crops:>5}  {p.created_utc:<20}  {p.last_sample_utc or '-'}\n"
        )
    return 0


def columns(text: str) -> int:
    """The terminal columns `text` takes: 2 for a wide (CJK) character, 0 for a combining
    mark, 1 otherwise (names are printable: no control characters, check_name)."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def padded(text: str, width: int) -> str:
    """`text` followed by spaces up to `width` terminal columns."""
    return text + " " * (width - columns(text))


def run_access(args: argparse.Namespace) -> int:
    from edge_app.gallery import Gallery, describe_access

    allowed = args.allowed == "yes"
    with Gallery.open(db_path(args)) as gallery:
        name, changed = gallery.set_access(args.name, allowed)
    what = describe_access(allowed)
    sys.stdout.write(f"{name!r} {what}{'' if changed else ' (as before)'}\n")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from edge_app.events import NO_HISTORY
    from edge_app.gallery import Gallery, did_you_mean

    if args.history and args.db is not None:
        raise UserError(
            "--history erases the history of the door the config describes (its events.db "
            "and events.snapshots): give --config, or nothing for the default config, not --db"
        )
    events = _door_events(args)
    if args.history and events is None:
        raise UserError(
            "--history: the config has neither events.db nor events.snapshots, so the door "
            "keeps no history to erase; nothing was removed"
        )
    if args.history:
        assert events is not None
        _history(events, args.names, check=True)  # a store the door refuses: nothing is removed
    with Gallery.open(db_path(args)) as gallery:
        removing = list(args.names)  # Gallery.remove refuses them all if one is not enrolled
        if args.history:
            assert events is not None
            removing = [name for name in args.names if gallery.has(name)]
            nothing = [
                name
                for name in args.names
                if name not in removing and _history(events, [name]) == NO_HISTORY
            ]
            if nothing:
                enrolled = [person.name for person in gallery.people()]
                shown_names = ", ".join(
                    f"{name!r}{did_you_mean(name, enrolled)}" for name in nothing
                )
                raise UserError(
                    f"neither enrolled nor in the door's history: {shown_names}; "
                    "nothing was removed"
                )
            args.changes = "the gallery or the door's history"
        names = _as_stored(gallery, removing)
        samples = gallery.remove(removing) if removing else 0
    if names:
        sys.stdout.write(f"removed {', '.join(map(repr, names))} ({samples} samples)\n")
    if events is None:
        return 0
    everyone = [*args.names, *names]
    if args.history:
        try:
            erased = _history(events, everyone, erase=True)
        except UserError as error:
            done = f"removed {', '.join(map(repr, names))} from the gallery, but " if names else ""
            raise UserError(
                f"{done}{error}; run the same command again once that is fixed"
            ) from None
        count = erased.took_place
        took = (
            f"; {count} report{'s' if count > 1 else ''} of a stranger who took their place "
            "kept, without their name"
            if count
            else ""
        )
        sys.stdout.write(
            f"erased their history: {erased.events} events, {erased.snapshots} snapshots{took}\n"
        )
        if erased.unnamed:
            sys.stdout.write(_labelled_line(erased.unnamed, events.snapshots))
        if events.jsonl is not None:
            sys.stdout.write(
                f"{events.jsonl} is not rewritten: the door only appends to it "
                "(docs/DAEMON.md, Events)\n"
            )
        return 0
    _say_history_stays(events, everyone, "with the same names")
    return 0


def _labelled_line(count: int, folder: Path | None) -> str:
    """The snapshots no event names that carry a name's label (events.History.unnamed):
    never deleted by their file name, since a label can be another person's."""
    return (
        f"{count} other snapshot(s) in {folder} carry their name's label in the file name but "
        "no event names them (taken while events.db was off or could not be written): "
        "left, since that label can be another person's; look at them and delete theirs "
        "by hand\n"
    )


def _say_history_stays(events: EventsConfig, names: list[str], how: str) -> None:
    """What the door recorded about `names` that stays, and how to erase it: a hint, so a
    history that cannot be read (another user's files, a store the door refuses) says
    nothing."""
    from edge_app.events import NO_HISTORY

    try:
        kept = _history(events, names)
    except UserError:
        return
    if kept != NO_HISTORY:
        days = f"{events.retention_days} days" if events.retention_days else "without limit"
        if kept.events or kept.took_place or kept.snapshots:
            sys.stdout.write(
                f"their history stays: {kept.events + kept.took_place} events and "
                f"{kept.snapshots} snapshots name them (kept {days}); `edge-app remove "
                f"--history` {how} erases it\n"
            )
        if kept.unnamed:
            sys.stdout.write(_labelled_line(kept.unnamed, events.snapshots))


def _history(
    events: EventsConfig, names: list[str], *, check: bool = False, erase: bool = False
) -> History:
    """history_of (read only), or with check=True first the door's own refusals of the
    events database (events.check_store), or erase_history with erase=True; what they raise
    about the files becomes one line that says what is wrong."""
    import sqlite3

    from edge_app.events import check_store, erase_history, history_of

    try:
        if check and events.db is not None:
            check_store(events.db)
        if check:  # it is to be erased: this user must be able to, or nothing is removed
            _may_erase(events)
        if erase:
            return erase_history(events.db, events.snapshots, names)
        return history_of(events.db, events.snapshots, names)
    except (ValueError, OSError, sqlite3.Error) as error:
        what = "erased" if erase or check else "read"
        # SQLite's own words name no file ("file is not a database"): say which one.
        reason = f"{events.db} ({error})" if isinstance(error, sqlite3.Error) else error
        raise UserError(f"the door's history cannot be {what}: {reason}") from None


def _may_erase(events: EventsConfig) -> None:
    """PermissionError unless this user may change the events database (the file, and its
    folder for SQLite's -wal file) and delete from the snapshots folder, where they exist:
    found after the gallery's removal, the history would stay, half erased."""
    places = []
    if events.db is not None and events.db.exists():
        places += [events.db, events.db.parent]
    if events.snapshots is not None and events.snapshots.is_dir():
        places.append(events.snapshots)
    for place in places:
        if not os.access(place, os.W_OK):
            raise PermissionError(
                f"this user may not change {place}; run the command as the door's user "
                "(sudo -u edge-app edge-app remove --history ...); nothing was removed"
            )


def _door_events(args: argparse.Namespace, *, history: bool | None = None) -> EventsConfig | None:
    """The [events] section of the door the command works on (commands.door_config). None
    for a gallery --db names alone, and without an events database or snapshots folder. A
    relative path (the door's working folder is unknown here) is refused with --history;
    without it, there is only no word on the history."""
    config = door_config(args)
    if config is None:
        return None
    history = args.history if history is None else history
    events = config.events
    for key, path in (("events.db", events.db), ("events.snapshots", events.snapshots)):
        if path is not None and not path.is_absolute():
            if not history:
                return None
            raise UserError(
                f"{key} {path} in the config is relative to the folder the door runs in, "
                "which this command cannot know: give the config an absolute path; nothing "
                "was removed"
            )
    return None if events.db is None and events.snapshots is None else events


def _as_stored(gallery: Gallery, typed: list[str]) -> list[str]:
    """The enrolled names that the typed names denote, as stored and each once (the name
    rule: case and spacing do not matter, docs/GALLERY.md); a name not enrolled as typed."""
    from edge_app.gallery import name_key

    stored = [person.name for person in gallery.people()]
    names: list[str] = []
    for name in typed:
        found = name if name in stored else None
        found = found or next((s for s in stored if name_key(s) == name_key(name)), name)
        if found not in names:
            names.append(found)
    return names


def run_rename(args: argparse.Namespace) -> int:
    from edge_app.gallery import Gallery

    with Gallery.open(db_path(args)) as gallery:
        (old,) = _as_stored(gallery, [args.old])
        stored = gallery.rename(args.old, args.new)
    sys.stdout.write(f"renamed {old!r} to {stored!r}\n")
    # What the door recorded stays under the old name: erasing the new one would not find it.
    events = _door_events(args, history=False)
    if events is not None:
        _say_history_stays(events, [old], f"with the old name, {shlex.quote(old)},")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from edge_app.gallery import (
        MAX_IMPORT_BYTES,
        CountedWriter,
        ExportTooLarge,
        Gallery,
        unimportable,
    )
    from edge_app.private_file import NotRegularFileError, write_private_text

    if not args.out.strip():  # Path("") is ".": "it is a folder, not a regular file" misled
        raise UserError("FILE is empty: give a file name (an unset shell variable?), or -")
    with Gallery.open(db_path(args), read_only=True) as gallery:
        if args.out == "-":
            counted = CountedWriter(sys.stdout)
            people, samples = gallery.export(counted)
            if counted.size > MAX_IMPORT_BYTES:
                log.warning("%s", unimportable(counted.size))
        else:
            out = Path(args.out)
            _refuse_the_gallery(out, gallery.path)
            if args.db is None:
                _refuse_the_door_files(out, args.config)
            _refuse_what_is_not_an_export(out)

            def export(handle: IO[str]) -> tuple[int, int]:
                # Raised before the file is replaced, and the temporary file removed.
                return gallery.export(CountedWriter(handle, MAX_IMPORT_BYTES))

            try:
                people, samples = write_private_text(out, export)
            except ExportTooLarge as error:
                raise UserError(f"{error}; {out} is unchanged") from None
            except NotRegularFileError:
                raise
            except OSError as error:
                raise UserError(
                    f"cannot write {out}: {error.strerror or error}; give a FILE in a folder "
                    "you can write, or - for standard output"
                ) from None
    log.info("exported people=%d samples=%d", people, samples)
    return 0


def _refuse_the_gallery(out: Path, gallery: Path) -> None:
    """Refuse an export file that is the gallery itself, or one of SQLite's files beside it:
    by file identity (another name or a hard link to it), and by the name it would have
    (a -wal or -shm not there now, which SQLite would read as its own). SQLite keeps those
    files beside the file a link to the gallery leads to, so both places count."""
    from edge_app.sqlite_files import SIDE_FILES

    real = os.path.realpath(gallery)
    for suffix in ("", *SIDE_FILES):
        for place in dict.fromkeys((f"{gallery}{suffix}", f"{real}{suffix}")):
            try:
                same = os.path.samefile(out, place)
            except OSError:  # either is missing or cannot be looked at
                same = False
            if same or place == f"{real}{suffix}" == os.path.realpath(out):
                raise UserError(f"{out} is the gallery's own file {place}; export to another file")


def _refuse_what_is_not_an_export(out: Path) -> None:
    """Refuse to replace a file that holds something other than an export (another
    gallery, an events database, a config, a photo): an export replaces only an earlier
    export, or an empty file."""
    from edge_app.gallery import GalleryError, export_header

    try:
        if not stat.S_ISREG(os.stat(out).st_mode):  # never opened: a FIFO would block
            return  # write_private_text refuses it, saying what it is
        with open(out, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return  # missing, or the write that follows says why it cannot be used
    if not head:
        return
    try:
        export_header(head.split(b"\n", 1)[0].decode("utf-8", "replace"))
    except GalleryError:
        raise UserError(
            f"{out} already holds a file that is not an edge-app export: export to another "
            "file, or remove that one first; it is unchanged"
        ) from None


def _refuse_the_door_files(out: Path, config_path: Path | None) -> None:
    """Refuse an export file that is the config the gallery was named by, or another file
    that config names (events, secrets): the export would replace it."""
    from edge_app import paths
    from edge_app.config import load_config, written_files

    config_file = config_path if config_path is not None else paths.DEFAULT_CONFIG
    named = {"the config file": config_file}
    named.update(
        (key, path) for key, path in written_files(load_config(config_path)).items() if path
    )
    for key, path in named.items():
        try:
            same = os.path.samefile(out, Path(path).expanduser())
        except OSError:  # either is missing or cannot be looked at
            continue
        if same:
            raise UserError(f"{out} is {key} ({path}); export to another file")


def run_import(args: argparse.Namespace) -> int:
    try:
        return _run_import(args)
    except UserError as error:
        if args.json:  # a script reads why on stdout too, whatever stopped it; exit code 2
            refusal = {"imported": False, "error": printable(str(error).splitlines()[0])}
            sys.stdout.write(json.dumps(refusal, indent=2, ensure_ascii=False) + "\n")
        raise


def _run_import(args: argparse.Namespace) -> int:
    from edge_app.gallery import Gallery, read_export_file, removed_if_left_empty

    db = db_path(args, create=True)
    if args.source == "-" and sys.stdin is not None and sys.stdin.isatty():
        raise UserError(
            "import -: standard input is this terminal, not an export; pipe one in "
            "(edge-app export - | edge-app import -) or give the FILE"
        )
    # Checked in full before the gallery is opened: a bad file creates and changes nothing.
    people = read_export_file(args.source, progress=True)
    mode = "replace" if args.replace else "merge" if args.merge else "refuse"
    with removed_if_left_empty(db), Gallery.open(db, create=True) as gallery:
        summary = gallery.import_(people, on_conflict=mode, progress=True)
        warning = gallery.other_models_warning(None)
    if warning is not None:
        log.warning("%s", warning)
    if args.json:
        sys.stdout.write(json.dumps(asdict(summary), indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(
            f"imported {summary.samples_added} samples: added {len(summary.added_people)}, "
            f"replaced {len(summary.replaced_people)}, merged {len(summary.merged_people)} "
            f"people; {summary.samples_skipped} samples already there\n"
        )
    if summary.access_removed:
        names = ", ".join(map(repr, summary.access_removed))
        sys.stderr.write(
            f"access turned off for {names}: the file lists them without access; "
            "`edge-app access NAME yes` gives it back\n"
        )
    return 0
