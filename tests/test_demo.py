"""`edge-app demo`: its relay summary, from the states gpiozero's MockPin really records; its
refusals of a clip or enrolment folder out of reach; a run on models without liveness."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from edge_app import cli
from edge_app.commands.demo import relay_history
from edge_app.manifest import LIVENESS_ROLE, MANIFEST_NAME
from edge_app.paths import REPO_ROOT


def test_the_history_gives_times_from_start_and_each_opening() -> None:
    factory = MockFactory()
    with DigitalOutputDevice(17, pin_factory=factory) as strike:
        time.sleep(0.05)
        strike.on()
        time.sleep(0.1)
        strike.off()
        time.sleep(0.05)
        strike.on()
        time.sleep(0.1)
        strike.off()
    states = factory.pin(17).states
    # gpiozero keeps seconds since the previous change; the summary adds them up
    text = relay_history(states, 17)
    first, second = text.splitlines()
    changes = ast.literal_eval(first.split(": ", 1)[1])
    levels = [level for _, level in changes]
    times = [at for at, _ in changes]
    assert levels == ["low", "high", "low", "high", "low"]
    assert times == sorted(times) and times[-1] >= 0.3
    assert second.startswith("strike held open 2 time(s): ")
    spans = [float(s.split()[0]) for s in second.split(": ")[1].split(", ")]
    assert all(0.09 <= span < 1.0 for span in spans)


def test_an_active_low_strike_is_open_while_low_and_a_last_opening_is_reported() -> None:
    states = [(0.0, True), (1.0, False), (3.0, True), (2.0, False)]

    text = relay_history(states, 27, active_high=False)

    assert "[(0.0, 'high'), (1.0, 'low'), (4.0, 'high'), (6.0, 'low')]" in text
    assert text.endswith("strike held open 2 time(s): 3.00 s, still open\n")


TOO_LONG = "a" * 300  # one path component past NAME_MAX (255): ENAMETOOLONG, no privilege


@pytest.mark.parametrize("option", ["--clip", "--enroll"])
def test_a_path_out_of_reach_is_refused_in_one_line(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture, restore_logging: None
) -> None:
    path = tmp_path / TOO_LONG / "door.mp4"

    code = cli.main(["demo", option, str(path)])

    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{option} {path}: cannot read it (File name too long)" in err


def _without_liveness(models: Path, target: Path, keep_section: bool) -> Path:
    """A copy of the models folder built without liveness models: their manifest entries and
    files gone, its "liveness" section kept or not."""
    shutil.copytree(models, target)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    for name, spec in list(manifest["models"].items()):
        if spec.get("role") == LIVENESS_ROLE:
            (target / spec["file"]).unlink(missing_ok=True)
            del manifest["models"][name]
    if not keep_section:
        manifest.pop("liveness", None)
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return target


@pytest.mark.slow
@pytest.mark.parametrize("keep_section", [True, False], ids=["section-kept", "section-removed"])
def test_the_demo_runs_with_liveness_off_on_models_without_a_liveness_model(
    keep_section: bool, models_dir: Path, tmp_path: Path
) -> None:
    """Models built without liveness (no `liveness` section) run with the check off, said so.
    Models built with it whose liveness entries were lost (the section kept, naming them) are
    refused: "auto" would otherwise turn the check off with only a warning."""
    models = _without_liveness(models_dir, tmp_path / "models", keep_section)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))

    done = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "demo", "--fast", "--models", str(models)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    if keep_section:
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "but the models hold no liveness model" in done.stderr
        assert '"type": "unlock"' not in done.stdout
        return
    assert done.returncode == 0, done.stderr
    assert (
        f'liveness mode "off": the models in {models} have no liveness model, so liveness is '
        "not checked"
    ) in done.stdout
    assert 'liveness mode "log"' not in done.stdout
    assert '"type": "unlock"' in done.stdout
    assert "Traceback" not in done.stderr


def test_a_demo_stopped_with_ctrl_c_exits_130_with_its_relay_locked(tmp_path: Path) -> None:
    """An audit: the demo stopped by SIGINT said `stopped by signal=SIGINT` and exited 0,
    where every other command exits 130, as a shell reports Ctrl-C."""
    import signal

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    demo = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "demo"],  # played in real time: ~20 s
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:  # wait until the door has decided something: it runs
        lines.append(line)
        if line.startswith("{"):
            break
    demo.send_signal(signal.SIGINT)
    rest, stderr = demo.communicate(timeout=60)
    assert demo.returncode == 130, stderr
    assert "stopped by signal=SIGINT" in stderr and "Traceback" not in stderr
    assert "relay" in rest  # the relay history is still printed
