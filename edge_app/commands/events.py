"""`edge-app events`: what the door recorded, read from its events database (read only)."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge_app.arg_types import count
from edge_app.commands import config_path, file_path, shown
from edge_app.errors import UserError, not_utf8, shown_value
from edge_app.paths import DEFAULT_CONFIG

if TYPE_CHECKING:
    from edge_app.web.history import EventRow, Filters, History

log = logging.getLogger(__name__)

DEFAULT_LINES = 20
MAX_LINES = 100_000  # a page read whole; --csv streams any number
FOLLOW_SECONDS = 1.0  # how often --follow looks for new events
FOLLOW_PIECE = 1_000  # events read at a time while following

EPILOG = f"""\
The events are the door's decisions, one per line, oldest first: recognized, unknown, spoof
(a photo or screen held up), unlock, denied (with its reason: no access, cooldown, hours,
clock not set), relock. Times are this machine's local time with its zone; --csv gives UTC.
Only reads: the database is opened read only and nothing is created beside it, so the
command is safe while the door runs. The door's files are its user's: run it as that user.

examples:
  sudo -u edge-app edge-app events                   # the last {DEFAULT_LINES} events
  sudo -u edge-app edge-app events --person "Ana Lima" --type unlock -n 50
  sudo -u edge-app edge-app events --from 2026-12-01 --to 2026-12-07 --csv > week.csv
  sudo -u edge-app edge-app events --follow          # watch the door decide; Ctrl-C stops
  edge-app events --events-db ./events.db --json     # a copy of the file, as JSON lines
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from edge_app.events import TYPES

    parser = subparsers.add_parser(
        "events",
        help="show what the door recorded: who came in, who was refused, when",
        description="Show the door's event history from its events database ([events] db).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        type=config_path,
        metavar="PATH",
        help=f"the history of a door run with this config: its [events] db (default "
        f"{DEFAULT_CONFIG})",
    )
    events_file = file_path("./events.db", "the config's [events] db")
    where.add_argument(
        "--events-db",
        dest="db",
        type=events_file,
        metavar="PATH",
        help="an events database file (as in `run --events-db`)",
    )
    # The name this option had: kept for scripts, not shown.
    where.add_argument("--db", dest="db", type=events_file, help=argparse.SUPPRESS)
    chosen = parser.add_argument_group("which events (all of them by default)")
    chosen.add_argument(
        "--person",
        metavar="NAME",
        help="events naming this person (case and spacing do not matter)",
    )
    chosen.add_argument(
        "--type", type=str.lower, choices=sorted(TYPES), help="events of this type (any case)"
    )
    chosen.add_argument("--from", dest="start", metavar="YYYY-MM-DD", help="from this day on")
    chosen.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="up to this day, included")
    out = parser.add_argument_group("output")
    out.add_argument(
        "-n",
        "--lines",
        type=count(1, MAX_LINES, beyond=" (--csv gives every event selected)"),
        default=DEFAULT_LINES,
        metavar="N",
        help=f"the last N events selected (default {DEFAULT_LINES}, at most {MAX_LINES})",
    )
    form = out.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object per event and line")
    form.add_argument(
        "--csv",
        action="store_true",
        help="every event selected (not only the last N), oldest first, times in UTC: for a "
        "spreadsheet",
    )
    out.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="after the last N, print each new event as the door records it, until Ctrl-C",
    )
    parser.set_defaults(handler=run_events)


def events_db(args: argparse.Namespace) -> Path:
    """The events database the command reads: --events-db, else the config's [events] db."""
    if args.db is not None:
        return Path(args.db)
    from edge_app.config import ConfigError, load_config, parse_config, read_config_file

    try:
        db = load_config(args.config).events.db
    except ConfigError as error:
        # A door whose config is refused does not run, and its history is what tells why:
        # read with [events] alone when that section is valid.
        where, data = read_config_file(args.config)
        try:
            db = parse_config({"events": data.get("events", {})}, str(where)).events.db
        except ConfigError:
            raise error from None
        log.warning("%s; the history is read all the same", error.one_line())
    if db is None:
        raise UserError(
            "the config records no history ([events] db is empty): the events are only in "
            "the journal (journalctl -u edge-app)"
        )
    if not db.is_absolute():
        raise UserError(
            f"[events] db = {str(db)!r} in the config is relative to the folder the door runs "
            "in, which this command cannot know: give --events-db, or an absolute path in the "
            "config"
        )
    return db


def selection(args: argparse.Namespace) -> Filters:
    """The filters the options ask for; a date that cannot be read is refused."""
    from edge_app.web.history import Filters

    query = {"type": args.type or "", "from": args.start or "", "to": args.end or ""}
    filters, problems = Filters.parse(query)
    if problems:  # each message starts with its parameter's name, which is the option's
        raise UserError("; ".join(f"--{message}" for _, message in problems))
    if filters.start and filters.end and filters.start > filters.end:
        raise UserError(f"--from {filters.start} is after --to {filters.end}: nothing between")
    return Filters(
        type=filters.type, start=filters.start, end=filters.end, person_typed=args.person or ""
    )


def run_events(args: argparse.Namespace) -> int:
    from edge_app.events import check_store
    from edge_app.private_file import NotRegularFileError
    from edge_app.web.history import History, HistoryError

    if args.follow and args.csv:
        raise UserError("--follow prints events as text or --json, not --csv")
    if args.person is not None and not args.person.strip():
        raise UserError("--person is empty: give a name, or leave the option out")
    if args.person is not None and not_utf8(args.person):  # SQLite cannot take it
        raise UserError(
            f"--person {shown_value(args.person)} is not valid UTF-8 text, so no one's name: "
            "type the name as `edge-app list` shows it"
        )
    db = events_db(args)
    if not db.exists():
        raise UserError(
            f"no events database at {db}: the door has not recorded anything there yet, or "
            "the path is wrong (--events-db, or [events] db in --config)"
        )
    try:
        check_store(db)
    except NotRegularFileError as error:
        raise UserError(f"{db} is not an events database: {error.strerror}") from None
    except (ValueError, OSError) as error:
        # A file that is not an events database: the door's words end by naming its config
        # key, but here the file was given as --events-db or found in the config. A file the
        # door may not trust (sqlite_access) keeps its own fix (chown, chmod, another folder).
        message = str(error)
        if "; left untouched" in message:
            reason = message.split("; left untouched")[0]
            message = f"{reason}: give the door's events database ([events] db or --events-db)"
        raise UserError(message) from None
    except sqlite3.Error as error:  # not a database, or a damaged one
        raise UserError(f"events.db: cannot read {db} ({error})") from None
    history = History(db, command_line=True)
    filters = selection(args)
    try:
        if args.csv:
            for piece in history.csv(filters):
                sys.stdout.write(piece)
            return 0
        rows = list(reversed(history.page(filters, 1, args.lines).rows))
        for row in rows:
            _print(row, args.json)
        if not rows:
            _say_none(history, args)
        if args.follow:
            _follow(history, filters, rows[-1].id if rows else _newest(history), args.json)
    except HistoryError as error:
        raise UserError(str(error)) from None
    return 0


def _newest(history: History) -> int:
    """The id of the newest event (0 for none): following starts after it."""
    latest = history.latest(1)
    return latest[0].id if latest else 0


def _follow(history: History, filters: Filters, last: int, as_json: bool) -> None:
    sys.stdout.flush()
    while True:
        time.sleep(FOLLOW_SECONDS)
        for row in history.after(filters, last, FOLLOW_PIECE):
            _print(row, as_json)
            last = row.id
        sys.stdout.flush()


def _say_none(history: History, args: argparse.Namespace) -> None:
    """No event selected: say so on stderr, with the recorded name a typed one may mean."""
    from edge_app.gallery import did_you_mean

    hint = did_you_mean(args.person, history.names()) if args.person else ""
    sys.stderr.write(f"no events{' of ' + repr(args.person) if args.person else ''}{hint}\n")


def _print(row: EventRow, as_json: bool) -> None:
    if as_json:
        # As the door's own JSON lines (edge_app.events.Event): the time to the millisecond.
        stamp = datetime.fromtimestamp(row.time, UTC).isoformat(timespec="milliseconds")
        record = {
            "id": row.id,
            "time": stamp,
            "type": row.type,
            "name": row.name,
            "score": row.score,
            "track": row.track,
            "reason": row.reason,
            "liveness": row.liveness,
            "geometry": row.geometry,
            "snapshot": row.snapshot,
        }
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        return
    score = "" if row.score is None else f"{row.score:.3f}"
    parts = [row.local_time, f"{row.type:<10}", f"{shown(row.name or '-'):<24}", f"{score:>5}"]
    if row.reason:
        parts.append(shown(row.reason))
    if row.liveness is not None:
        parts.append(f"liveness {row.liveness:.2f}")
    sys.stdout.write("  ".join(parts).rstrip() + "\n")
