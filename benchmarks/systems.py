"""The systems a benchmark worker can load: ours (int8, float, Edge TPU, fast-path prototypes)
here, the peers in benchmarks/peers.py. One interface, so run.py treats them all alike.

Each system is loaded in its own worker process (benchmarks/worker.py): TensorFlow, PyTorch
and dlib each bring their own thread pools and allocators, and one process per system keeps
them from sharing, and keeps each peak RSS the system's own.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("detect", "e2e", "track")


class BenchSystem(ABC):
    """One pipeline under test. Subclasses set `modes` and implement what those modes need:
    every system loads and detects; `e2e` and `track` only where they are in `modes`."""

    name = ""
    label = ""
    modes: tuple[str, ...] = ("detect", "e2e")
    notes: tuple[str, ...] = ()

    def prepare(self) -> None:  # noqa: B027  (optional hook: no-op by default)
        """Import the system's libraries: timed apart from load, since a daemon pays the
        import once per boot but a model load per (re)start of its engine."""

    @abstractmethod
    def load(self) -> None:
        """Create models and everything else a first frame needs (timed as load time)."""

    def enroll(self, photos: np.ndarray, name: str) -> None:  # noqa: B027  (optional hook)
        """Put one person in the gallery (their photos are never in the benchmark frames)."""

    @abstractmethod
    def detect(self, frame: np.ndarray) -> int:
        """Faces found in one RGB uint8 frame."""

    def e2e(self, frame: np.ndarray) -> tuple[int, dict[str, float]]:
        """Detect, embed every face and match it: (faces, seconds per stage)."""
        raise self._unsupported("e2e")

    def track(self, frame: np.ndarray, condition: str, index: int) -> tuple[int, int]:
        """One daemon frame with tracking: (faces, embeddings computed)."""
        raise self._unsupported("track")

    def _unsupported(self, mode: str) -> ValueError:
        """run.py asks only for the modes a system lists; anything else is a harness bug."""
        return ValueError(f"{self.name} does not run mode {mode!r} (its modes: {self.modes})")

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "notes": list(self.notes)}


class Ours(BenchSystem):
    """The project's Engine, optionally a fast-path variant (benchmarks/fastpath.py)."""

    modes = MODES

    def __init__(
        self,
        name: str,
        variant: str,
        int8_models: Path,
        float_models: Path,
        threads: int,
        label: str,
        backend: str = "cpu",
        notes: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.variant = variant
        self.int8_models = int8_models
        self.float_models = float_models
        self.threads = threads
        self.label = label
        self.backend = backend
        self.notes = notes
        self.engine: Any = None
        self.matcher: Any = None
        self._daemons: dict[str, Any] = {}
        self._workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
        atexit.register(shutil.rmtree, self._workdir, True)
        self._gallery_path = self._workdir / "gallery.db"

    def prepare(self) -> None:
        import edge_app.engine  # noqa: F401
        from benchmarks import fastpath  # noqa: F401

    def load(self) -> None:
        if self.backend == "edgetpu":
            from edge_app.engine import Engine

            self.engine = Engine.open(self.int8_models, backend="edgetpu")
            return
        from benchmarks.fastpath import open_variant

        self.engine = open_variant(self.variant, self.int8_models, self.float_models, self.threads)

    def _cohort(self) -> Any:
        """The engine's cohort normaliser (edge_app.cohort), None when its models have none."""
        return getattr(self.engine, "cohort", None)

    def settings(self) -> Any:
        """The manifest's match settings (the cost of matching does not depend on the
        threshold, and both outcomes settle a track)."""
        from edge_app.matching import MatchSettings

        recognition = self.engine.manifest.recognition
        return MatchSettings.from_recognition(recognition, threshold=self.threshold())

    def threshold(self) -> float:
        """The manifest's open-set threshold, 0.5 when the models carry none."""
        return float(self.engine.manifest.recognition.get("threshold", 0.5))

    def enroll(self, photos: np.ndarray, name: str) -> None:
        from edge_app.gallery import Gallery, NewSample
        from edge_app.lfw import central_face
        from edge_app.matching import Matcher

        model = self.engine.manifest.models["facenet"].sha256
        samples = []
        for photo in photos:
            faces = self.engine.detect(photo)
            index = central_face(faces, photo.shape[1], photo.shape[0])
            if index is None:
                continue
            embedding = self.engine.embed(photo, faces[index])[0]
            digest = hashlib.sha256(photo.tobytes()).hexdigest()
            samples.append(NewSample(embedding, digest, None, model))
        with Gallery.open(self._gallery_path, create=True) as gallery:
            gallery.enroll(name, samples)
            matrix = gallery.load_matrix()
        self.matcher = Matcher(matrix, self.settings(), self._cohort())

    def random_gallery(self, samples: int = 3) -> None:
        """One person of `samples` random unit vectors, like the peers' galleries: for the
        cold whole-process runs, where enrolling photos would be a cost to ours alone (a door
        reads its gallery from SQLite)."""
        from edge_app.gallery import GalleryMatrix
        from edge_app.matching import Matcher

        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(samples, 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        matrix = GalleryMatrix(vectors, np.zeros(samples, np.int32), ("person000",))
        self.matcher = Matcher(matrix, self.settings(), self._cohort())

    def detect(self, frame: np.ndarray) -> int:
        return len(self.engine.detect(frame))

    def e2e(self, frame: np.ndarray) -> tuple[int, dict[str, float]]:
        faces, embeddings = self.engine.process(frame)
        stages = dict(self.engine.timings)
        start = time.perf_counter()
        if len(faces):
            self.matcher.identify(embeddings)
        stages["match"] = time.perf_counter() - start
        return len(faces), stages

    def _daemon(self, condition: str) -> Any:
        """A Daemon around the loaded engine, as `edge-app run` builds it minus the camera.

        Each condition gets its own daemon (tracker and policy state), so the steady state of
        one face is not disturbed by tracks from the three-face frames.
        """
        daemon = self._daemons.get(condition)
        if daemon is not None:
            return daemon
        from edge_app.config import Config, apply_overrides
        from edge_app.daemon import Daemon, Recognizer
        from edge_app.events import EventLog
        from edge_app.relay import Relay, make_pin_factory

        config = apply_overrides(
            Config(),
            {
                "gallery.path": str(self._gallery_path),
                "gpio.factory": "mock",
                "events.db": "",
                "recognition.threshold": self.threshold(),
                "models.threads": self.threads,
            },
        )
        factory = make_pin_factory("mock")
        daemon = Daemon(config, engine=self.engine, pin_factory=factory)
        daemon.events = EventLog()
        daemon.relay = Relay(
            config.gpio.pin,
            active_high=config.gpio.active_high,
            pin_factory=factory,
            on_release=daemon._on_relock,
        )
        daemon.recognizer = Recognizer(self.engine, config.gallery.path, config.recognition)
        self._daemons[condition] = daemon
        self._count_faces()
        return daemon

    def _count_faces(self) -> None:
        """Keep the engine's last detections, so tracking mode can report faces per frame."""
        engine = self.engine
        if getattr(engine, "last_faces", None) is not None:
            return
        detect = engine.detect

        def counted(frame: np.ndarray):
            engine.last_faces = detect(frame)
            return engine.last_faces

        engine.last_faces = ()
        engine.detect = counted

    def track(self, frame: np.ndarray, condition: str, index: int) -> tuple[int, int]:
        """The daemon's own per-frame step (Daemon._process) and its per-frame gallery and
        site memory check, on the frame clock as Daemon._loop gives it."""
        from edge_app.camera import Frame

        daemon = self._daemon(condition)
        before = daemon.metrics.embeddings
        daemon._process(Frame(frame, index / 10.0, index))
        daemon.recognizer.reload_if_changed(daemon._now)
        return len(self.engine.last_faces), daemon.metrics.embeddings - before

    def matching(self, people: int, probes: int, repeats: int) -> list[float]:
        """Seconds per Matcher.identify call against `people` enrolled people (3 samples each).

        Random unit vectors: the cost is one (probes x 3P) product and grouped reductions, the
        same whatever the embeddings hold.
        """
        from edge_app.gallery import GalleryMatrix
        from edge_app.matching import Matcher

        rng = np.random.default_rng(people)
        samples = rng.normal(size=(people * 3, 512)).astype(np.float32)
        samples /= np.linalg.norm(samples, axis=1, keepdims=True)
        matrix = GalleryMatrix(
            samples,
            np.repeat(np.arange(people, dtype=np.int32), 3),
            tuple(f"person{i:03d}" for i in range(people)),
        )
        matcher = Matcher(matrix, self.settings(), self._cohort())
        query = rng.normal(size=(probes, 512)).astype(np.float32)
        query /= np.linalg.norm(query, axis=1, keepdims=True)
        for _ in range(10):
            matcher.identify(query)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matcher.identify(query)
            times.append(time.perf_counter() - start)
        return times

    def info(self) -> dict[str, Any]:
        info = super().info()
        engine = self.engine
        if engine is not None:
            info.update(
                backend=engine.backend.kind,
                runtime=f"{engine.backend.runtime.module} {engine.backend.runtime.version}",
                threads=engine.backend.threads,
                min_face=engine.cascade.min_face,
                models=str(engine.models_dir),
            )
            choice = getattr(engine, "cascade_choice", None)
            if choice is not None:
                info.update(cascade=choice.chosen, cascade_choice=choice.describe())
        return info
