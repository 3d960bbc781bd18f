"""Fixtures shared by the test modules: the shared photo data, the built models, one engine,
the MQTT broker, observer and door the hub tests run against (tests/mqtt_support.py).

Modules that define a fixture of the same name (test_enroll.py and test_daemon_e2e.py have
their own module-scoped `engine`; test_control.py and others their own `door`) keep theirs:
pytest lets a module fixture shadow these.

EDGE_TEST_MODELS may name another built models folder (a manifest.json and its .tflite
files) to run the model tests against instead of models/tflite, e.g. a fresh
`edge-convert build --out /tmp/m/tflite` before it is committed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from needs import missing_from_models, unavailable

from edge_app.config import DEFAULT_SOCKET
from edge_app.engine import Engine
from edge_app.manifest import MANIFEST_NAME
from edge_app.paths import DEFAULT_STATE_DIR, REPO_MODELS, SHARED_DATA

if TYPE_CHECKING:
    from mqtt_support import Broker, FedDoor, Observer

TESTS_DATA = Path(__file__).resolve().parent / "data"
LFW_SAMPLE = TESTS_DATA / "lfw_sample"
SHARED_DATA_REASON = "needs ../shared/data (LFW and detection photos); present in CI"
# The installed door's folders. A test that leaves [hub] socket at its default would make
# the socket's (as root, owned by root, where the service user later cannot enter it); one
# that leaves [gallery] path or [events] db at its default would make the state folder (and
# then tests/test_install_real.py finds "an install" there and refuses to run).
MADE_BY_MISTAKE = {
    DEFAULT_SOCKET.parent: "a test left [hub] socket at its default",
    DEFAULT_STATE_DIR: "a test left [gallery] path or [events] db at its default",
}
EXISTED_BEFORE = pytest.StashKey[set[Path]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[EXISTED_BEFORE] = {p for p in MADE_BY_MISTAKE if p.exists()}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when the tests made one of the installed door's folders: each test must
    put its socket, gallery and events under its tmp_path (or turn them off)."""
    before = session.config.stash.get(EXISTED_BEFORE, set(MADE_BY_MISTAKE))
    made = [path for path in MADE_BY_MISTAKE if path not in before and path.exists()]
    if not made:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for path in made:
        if reporter is not None:
            reporter.write_line(f"ERROR: the tests made {path}; {MADE_BY_MISTAKE[path]}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def models_folder() -> Path:
    """The models the tests run against: EDGE_TEST_MODELS when set, else models/tflite."""
    override = os.environ.get("EDGE_TEST_MODELS")
    return Path(override) if override else REPO_MODELS


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: LFW and the detection photos (absent in a user's clone)."""
    if not SHARED_DATA.is_dir():
        unavailable(SHARED_DATA_REASON)
    return SHARED_DATA


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The committed int8 models and their manifest."""
    folder = models_folder()
    if not (folder / MANIFEST_NAME).is_file():
        pytest.skip(
            f"no {MANIFEST_NAME} in {folder}: build the models with `make models` "
            "(or set EDGE_TEST_MODELS to a built models folder)"
        )
    return folder


@pytest.fixture(scope="session")
def engine(models_dir: Path) -> Engine:
    """One CPU engine for the session: interpreters are created once, like on the device."""
    return Engine.open(models_dir, backend="cpu")


@pytest.fixture(scope="session")
def liveness_engine(engine: Engine) -> Engine:
    """The session engine, for tests that need its liveness models (built with --liveness)."""
    if not engine.has_liveness:
        missing_from_models(engine.models_dir, "liveness models (built without --liveness)")
    return engine


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """For tests that call a CLI's main(): its setup_logging() replaces the root logger's
    handlers with one bound to this test's (captured) stderr; put the old ones back after.
    Every test gets it: a test that forgot it left a handler on a closed stream, and a later
    test's log line became a "Logging error" traceback in what that test captured."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (tests of the page over TLS)."""
    from web_support import self_signed

    return self_signed(tmp_path_factory.mktemp("tls"))


# --- the hub's world (tests/mqtt_support.py), for test_mqtt.py, test_mqtt_*.py, test_hub_review.py


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test CA and the broker's certificate it signed (needs Mosquitto and openssl)."""
    from mqtt_support import make_ca, need_mosquitto

    need_mosquitto()
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory, test_ca: dict[str, Path]) -> Iterator[Broker]:
    """A Mosquitto of this test's own, started."""
    from mqtt_support import Broker

    broker = Broker(tmp_path_factory.mktemp("broker"), test_ca)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def door(tmp_path: Path) -> Iterator[FedDoor]:
    """An open door (remote unlocks allowed, stale after 1 s) fed a frame every 0.1 s."""
    from mqtt_support import FedDoor, Frames
    from test_control import make_daemon

    door = FedDoor(make_daemon(tmp_path, allow_unlock=True, stale=1.0))
    frames = Frames(door)
    door.frames = frames
    yield door
    frames.stop()
    door.close()


@pytest.fixture
def observer(broker: Broker) -> Iterator[Observer]:
    """Home Assistant's part: a client of `broker` that records every message."""
    from mqtt_support import Observer

    observer = Observer(broker)
    yield observer
    observer.close()
