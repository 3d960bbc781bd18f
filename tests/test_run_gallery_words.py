"""A gallery refusal as the door says it at its start and at a reload: advice to change what
gave the path (the config's gallery.path, or --db), as `run --check-config` gives it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_app import cli
from edge_app import daemon as daemon_module
from edge_app.advice import Advice, Advised
from edge_app.gallery import GalleryError


def _refusal(path: Path) -> Advised:
    return Advised(
        f"{path} is not an SQLite database, so not an edge-app gallery; ", Advice.NOT_A_GALLERY
    )


def test_a_door_started_from_its_config_advises_changing_gallery_path(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """systemd starts the door from its config, which names the gallery as gallery.path: its
    journal must advise changing that, not "pass --db", a flag the unit never gives. The real
    door's start, up to the gallery it refuses."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a gallery\n" * 20)
    config = tmp_path / "door.toml"
    config.write_text(f'[gallery]\npath = "{notes}"\n[events]\ndb = ""\n[gpio]\nfactory = "mock"\n')
    caplog.set_level(logging.ERROR)
    assert cli.main(["run", "--config", str(config)]) == 2
    said = capsys.readouterr().err + caplog.text
    assert "set gallery.path to the path of an edge-app gallery" in said, said
    assert "--db" not in said
    caplog.clear()
    assert cli.main(["run", "--config", str(config), "--db", str(notes)]) == 2
    said = capsys.readouterr().err + caplog.text
    assert "pass --db with the path of an edge-app gallery" in said, said


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({}, "set gallery.path to the path of an edge-app gallery"),
        ({"gallery.path": "/x/notes.txt"}, "pass --db with the path of an edge-app gallery"),
    ],
)
def test_a_reload_refused_for_its_gallery_advises_changing_what_gave_the_path(
    overrides: dict[str, str], words: str
) -> None:
    door = daemon_module.Daemon.__new__(daemon_module.Daemon)
    door.overrides = overrides
    assert words in door._gallery_words(GalleryError(_refusal(Path("/x/notes.txt"))))
