"""Default locations, in one place so the CLI, the daemon and the installer agree."""

from __future__ import annotations

from pathlib import Path

from edge_app.errors import not_utf8

DEFAULT_CONFIG = Path("/etc/edge-app/config.toml")
DEFAULT_STATE_DIR = Path("/var/lib/edge-app")
DEFAULT_GALLERY = DEFAULT_STATE_DIR / "gallery.db"
INSTALLED_MODELS = Path("/usr/share/edge-app/models")
REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_MODELS = REPO_ROOT / "models" / "tflite"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# A source checkout has pyproject.toml beside the packages. An installed package (the Pi's
# venv, a wheel) sits in site-packages, with none of the checkout's models/, demo/, docs/ or
# tests/ and no ../shared beside it: options that default into those have no default there.
IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()
# The relay the running door claimed (edge_app.relay_record), in systemd's RuntimeDirectory=
# edge-app: kept across restarts, owned by the service user, who also runs ExecStopPost=.
RELAY_RECORD = Path("/run/edge-app/relay.json")


def default_models_dir() -> Path:
    """The models folder next to a source checkout, else the one the installer copies."""
    return REPO_MODELS if (REPO_MODELS / "manifest.json").is_file() else INSTALLED_MODELS


def path_text_problem(path: str) -> str | None:
    """What makes `path` unusable as a file name for the libraries the door hands it to, or
    None. A NUL the system refuses at first use. Bytes that are not UTF-8 (a name copied from
    a Latin-1 system, reaching Python as lone surrogates) SQLite and OpenCV cannot take:
    OpenCV's VideoCapture crashes the whole process (SIGSEGV) on such a name. And ~name of a
    user this system does not have, which Path.expanduser cannot expand."""
    if "\0" in path:
        return f"{path!r} holds a NUL character (\\0), which no path can hold"
    if not_utf8(path):
        return f"{path!r} holds bytes that are not UTF-8 text: rename it"
    if path.startswith("~"):
        try:
            Path(path).expanduser()
        except RuntimeError:  # ~name of no user on this system
            user = path[1:].split("/", 1)[0]
            if not user:
                return f"{path!r} starts with ~, but this user has no home folder to expand it to"
            return f"{path!r} starts with ~{user}, but there is no user {user!r} here"
    return None
