"""`edge-app eval liveness`: the NUAA layout, the metrics, the sequence rule, the command.

Fast: layout parsing and refusals, windows, the k-of-n rule, APCER/BPCER/ACER on hand-made
scores. Slow (needs ../shared/data and liveness models): the command end to end on a few real
NUAA sequences, live and printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_app import cli
from edge_app.config import PolicyConfig
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.evaluate_liveness import (
    LivenessResult,
    Sequence,
    TrackScores,
    read_sequences,
    summarise,
    track_is_live,
    windows,
)
from edge_app.liveness_rule import (
    LiveFrames,
    LiveRule,
    manifest_threshold,
    track_verdict,
    window_is_live,
)
from edge_app.manifest import load_manifest
from edge_app.policy import SPOOF, UNLOCK, Policy, Vote


def _touch(root: Path, kind: str, name: str) -> Path:
    path = root / kind / name[:4] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_sequences_are_grouped_by_id_and_sorted_by_frame_number(tmp_path: Path) -> None:
    for n in (12, 3, 100):
        _touch(tmp_path, "live", f"0001_00_00_01_{n}.jpg")
    _touch(tmp_path, "print", "0001_00_03_02_5.jpg")
    _touch(tmp_path, "print", "0002_01_08_03_7.jpg")
    _touch(tmp_path, "print", "notes.txt")
    sequences = read_sequences(tmp_path)
    assert [(s.kind, s.key, s.group) for s in sequences] == [
        ("live", "0001_00_00_01", "live"),
        ("print", "0001_00_03_02", "print-03"),
        ("print", "0002_01_08_03", "print-08"),
    ]
    assert [p.name for p in sequences[0].frames] == [
        "0001_00_00_01_3.jpg",
        "0001_00_00_01_12.jpg",
        "0001_00_00_01_100.jpg",
    ]


def test_subjects_filter_keeps_only_those(tmp_path: Path) -> None:
    _touch(tmp_path, "live", "0001_00_00_01_1.jpg")
    _touch(tmp_path, "live", "0002_00_00_01_1.jpg")
    _touch(tmp_path, "print", "0002_00_01_01_1.jpg")
    sequences = read_sequences(tmp_path, subjects={"0002"})
    assert {s.subject for s in sequences} == {"0002"}
    # A subject who is not there is named, with the ones who are (a typo, not "no frames").
    with pytest.raises(UserError, match="no frames of 9999 under .*; its subjects are 0001, 0002"):
        read_sequences(tmp_path, subjects={"0002", "9999"})


def test_a_folder_without_the_layout_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    with pytest.raises(UserError, match="no print/ folder"):
        read_sequences(tmp_path)
    (tmp_path / "print").mkdir()
    _touch(tmp_path, "print", "0001_00_01_01_1.jpg")
    with pytest.raises(UserError, match="no live/ frames"):
        read_sequences(tmp_path)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(0, []), (7, [7]), (10, [10]), (11, [6, 5]), (28, [10, 9, 9]), (42, [9, 9, 8, 8, 8])],
)
def test_windows_cover_the_track_in_runs_of_at_most_ten(count: int, sizes: list[int]) -> None:
    parts = windows(count)
    assert [len(p) for p in parts] == sizes
    assert np.concatenate(parts).tolist() == list(range(count)) if parts else count == 0


def test_the_rule_counts_live_frames() -> None:
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.1])
    assert window_is_live(scores, 0.5, 3)
    assert not window_is_live(scores, 0.5, 4)
    assert not window_is_live(scores, 0.85, 2)


def test_a_long_track_is_judged_as_the_door_judges_it_first_verdict_for_good() -> None:
    dead = np.zeros(30)
    assert not track_is_live(dead, 0.5, 5)
    late = dead.copy()
    late[[15, 16, 17, 18, 19]] = 1.0  # frames 10-19 pass, but 0-9 failed first: an attack
    assert not track_is_live(late, 0.5, 5)
    early = dead.copy()
    early[[5, 6, 7, 8, 9]] = 1.0  # the first full window passes at frame 9
    assert track_is_live(early, 0.5, 5)
    assert track_is_live(np.ones(4), 0.5, 4)  # live before a full window is seen
    assert not track_is_live(np.ones(4), 0.5, 5)  # undecided: not let in
    assert track_verdict([1.0] * 4, 0.5, 5, hits=3, window=5) is None
    assert track_verdict([0.0] * 10, 0.5, 5, hits=3, window=5) is False


def test_the_evaluations_verdict_is_the_policys_on_a_recognised_track() -> None:
    """The real Policy (require mode), fed one recognised track frame by frame, unlocks or
    reports a spoof exactly where track_verdict says live or an attack, on random scores."""
    rng = np.random.default_rng(5)
    clock = iter(1000.0 + 0.1 * n for n in range(100_000))
    for _ in range(300):
        scores = rng.random(int(rng.integers(1, 25)))
        policy = Policy(PolicyConfig(hits=3, window=5), clock=lambda: next(clock))
        policy.configure(policy.config, LiveRule("require", 0.5, 4))
        door: bool | None = None
        for score in scores:
            kinds = [d.kind for d in policy.vote(1, Vote("alice", 0.8, 0.1, liveness=score))]
            if UNLOCK in kinds or SPOOF in kinds:
                door = UNLOCK in kinds
                break
        assert track_verdict(scores.tolist(), 0.5, 4, hits=3, window=5) is door, scores


def test_live_frames_refuses_only_a_full_window() -> None:
    rule = LiveFrames(threshold=0.5, min_live_frames=3, window=5)
    for score in (0.1, 0.2, 0.9, 0.8):
        rule.add(score)
        assert not rule.live and not rule.refused
    rule.add(0.1)
    assert rule.refused
    rule.add(0.95)  # the oldest (0.1) leaves the window: 3 live of 5
    assert rule.live and not rule.refused
    with pytest.raises(ValueError, match="min_live_frames"):
        LiveFrames(0.5, 11)


def _track(kind: str, key: str, scores: list[float]) -> TrackScores:
    values = np.array(scores, float)
    rng = np.random.default_rng(len(scores))
    base = np.array([[100, 100], [160, 100], [130, 135], [108, 170], [152, 170]], float)
    landmarks = base + rng.normal(0, 0.5, (len(values), 5, 2))
    landmarks[np.isnan(values)] = np.nan
    return TrackScores(Sequence(kind, key, ()), values, landmarks)


def test_apcer_per_attack_type_bpcer_and_acer() -> None:
    tracks = [
        _track("live", "0001_00_00_01", [0.9] * 8 + [0.1, 0.2]),  # 2 of 10 live frames refused
        _track("print", "0001_00_01_02", [0.1] * 9 + [0.7]),  # 1 of 10 attack frames accepted
        _track("print", "0001_00_08_03", [0.1] * 4 + [np.nan] * 2),  # 4 scored, 2 with no face
    ]
    groups = summarise(tracks, threshold=0.5, min_live_frames=5)
    result = LivenessResult(0.5, 5, groups, tracks, 1.0, "cpu", "m")
    frame = result.frame_rates()
    assert frame["apcer print-01"] == pytest.approx(0.1)
    assert frame["apcer print-08"] == 0.0
    assert frame["apcer all"] == pytest.approx(1 / 14)
    assert frame["bpcer"] == pytest.approx(0.2)
    assert frame["acer"] == pytest.approx((0.1 + 0.2) / 2)
    assert groups["print-08"].no_face == 2 and groups["print-08"].frames == 4
    window = result.window_rates()
    assert window["bpcer"] == 0.0 and window["apcer all"] == 0.0
    # Still landmarks: the geometry abstains on every window.
    assert all(g.geometry["abstain"] == g.windows for g in groups.values())
    data = result.to_json()
    assert data["per_frame"]["bpcer"] == pytest.approx(0.2)
    assert [row["threshold"] for row in data["threshold_sweep"]][:2] == [0.05, 0.1]
    assert data["sequences"][2]["scores"][-1] is None


def test_manifest_threshold_is_read_and_checked(models_dir: Path) -> None:
    manifest = load_manifest(models_dir)
    if not manifest.liveness.get("threshold"):
        with pytest.raises(UserError, match="liveness.threshold"):
            manifest_threshold(manifest)
        return
    assert 0.0 < manifest_threshold(manifest) < 1.0


# ------------------------------------------------------------------ real NUAA (slow)

# Two live sequences of different sessions and prints of each motion, one subject, short.
NUAA_SEQUENCES = {
    "live": ["0001_00_00_01", "0001_00_00_02"],
    "print": ["0001_00_01_03", "0001_00_03_03", "0001_00_08_03"],
}
FRAMES_EACH = 10


@pytest.fixture(scope="module")
def nuaa_sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_data / "liveness" / "nuaa"
    root = tmp_path_factory.mktemp("nuaa")
    for kind, keys in NUAA_SEQUENCES.items():
        for key in keys:
            frames = sorted(
                (source / kind / key[:4]).glob(f"{key}_*.jpg"),
                key=lambda p: int(p.stem.rsplit("_", 1)[1]),
            )
            if not frames:
                pytest.skip(f"NUAA sequence {kind}/{key} not in {source}")
            for frame in frames[:FRAMES_EACH]:
                target = root / kind / key[:4] / frame.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(frame)
    return root


@pytest.mark.slow
def test_eval_liveness_command_on_real_nuaa_sequences(
    nuaa_sample: Path,
    liveness_engine: Engine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    restore_logging: None,
) -> None:
    out = tmp_path / "liveness.json"
    code = cli.main(
        [
            "eval",
            "liveness",
            "--data",
            str(nuaa_sample),
            "--models",
            str(liveness_engine.models_dir),
            "--backend",
            "cpu",
            "--threshold",
            "0.5",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = capsys.readouterr().out
    assert "per frame BPCER <= 5%" in report and "ms per face" in report
    data = json.loads(out.read_text())
    groups = data["groups"]
    assert set(groups) == {"live", "print-01", "print-03", "print-08"}
    for name, group in groups.items():
        expected = FRAMES_EACH * (2 if name == "live" else 1)
        assert group["frames"] + group["no_face"] == expected
    assert groups["live"]["frames"] >= 18  # a person in front of the camera is found
    # The scores say live for the live frames and attack for the printed ones, mostly.
    scores: dict[str, list[float]] = {kind: [] for kind in ("live", "print")}
    for sequence in data["sequences"]:
        scores[sequence["kind"]] += [s for s in sequence["scores"] if s is not None]
    assert np.median(scores["live"]) > 0.5 > np.median(scores["print"])
    assert data["ms_per_face"] > 0
    assert len(data["threshold_sweep"]) == 19


def test_eval_liveness_refuses_a_bad_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, restore_logging: None
) -> None:
    code = cli.main(["eval", "liveness", "--data", str(tmp_path / "absent")])
    assert code != 0
    assert "not a folder" in capsys.readouterr().err


def test_threshold_is_the_middle_of_the_range_meeting_both_frame_targets() -> None:
    from edge_app.evaluate_liveness import derive_threshold, leave_one_subject_out

    # Live frames score 0.4-0.99, attack frames 0.0-0.12: every threshold from 0.15 to 0.40
    # keeps APCER at 0 and BPCER at 0; 0.45 already refuses 2 of 20 live frames (10%).
    live = np.linspace(0.4, 0.99, 20)
    attack = np.linspace(0.0, 0.12, 20)
    tracks = [
        _track("live", "0001_00_00_01", list(live)),
        _track("print", "0001_00_01_02", list(attack)),
        _track("live", "0002_00_00_01", list(live)),
        _track("print", "0002_00_08_03", list(attack)),
    ]
    assert derive_threshold(tracks) == (0.3, 0.15, 0.4)
    held = leave_one_subject_out(tracks, min_live_frames=4)
    assert [f["subject"] for f in held["folds"]] == ["0001", "0002"]
    assert held["pooled"]["attack_frames_live"] == 0
    assert held["pooled"]["live_frames"] == 40 and held["pooled"]["live_frames_refused"] == 0
    assert held["pooled"]["attack_windows"] == 4 and held["pooled"]["live_windows_refused"] == 0
    hopeless = [_track("live", "0001_00_00_01", [0.1] * 5), _track("print", "0001_00_01_02", [0.9])]
    assert np.isnan(derive_threshold(hopeless)[0])


@pytest.mark.parametrize("subjects", ["", ", ,"])
@pytest.mark.parametrize("benchmark", ["liveness", "door"])
def test_an_empty_subjects_list_is_refused_not_read_as_all(
    benchmark: str,
    subjects: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    restore_logging: None,
) -> None:
    for kind in ("live", "print"):
        (tmp_path / kind).mkdir()
    code = cli.main(
        ["eval", benchmark, "--data", str(tmp_path), "--subjects", subjects]
        + ["--models", str(tmp_path / "no-models")]  # refused before the models are opened
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--subjects {subjects!r}: expected comma-separated subject ids, e.g. 0001,0002" in err


def _hopeless(subject: str) -> list[TrackScores]:
    """A subject no threshold serves: 4 of 20 attack frames score 0.22 (APCER 20% up to
    0.20) and 2 of 20 live frames 0.22 (BPCER 10% from 0.25): the lowest per-frame ACER,
    5%, is first reached at 0.25 (APCER 0, BPCER 10%)."""
    return [
        _track("live", f"{subject}_00_00_01", [0.22] * 2 + [0.9] * 18),
        _track("print", f"{subject}_00_01_02", [0.22] * 4 + [0.0] * 16),
    ]


def test_no_threshold_meeting_the_targets_is_said_plainly_and_the_json_is_strict() -> None:
    from edge_app.evaluate_liveness import format_report

    tracks = _hopeless("0001") + _hopeless("0002")
    result = LivenessResult(0.2, 4, summarise(tracks, 0.2, 4), tracks, 1.0, "cpu", "m")

    report = format_report(result)
    assert "nan" not in report.lower()
    assert (
        "threshold derived on this data: none (no threshold from 0.05 to 0.95 meets both "
        "per-frame targets, APCER <= 1% and BPCER <= 5%); best trade-off 0.25, the lowest "
        "per-frame ACER (5.0%): worst APCER 0.0%, BPCER 10.0%"
    ) in report
    assert "leave one subject out: for no subject do the others give a threshold" in report
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))  # no bare NaN anywhere
    derived = data["threshold_derived"]
    assert (derived["threshold"], derived["low"], derived["high"]) == (None, None, None)
    assert derived["lowest_acer"] == pytest.approx(
        {"threshold": 0.25, "apcer_worst": 0.0, "bpcer": 0.1, "acer": 0.05}
    )
    assert [f["threshold"] for f in data["leave_one_subject_out"]["folds"]] == [None, None]
    # No threshold to score a held-out subject with: nothing is counted (not every live
    # frame refused, as comparing with NaN would).
    assert set(data["leave_one_subject_out"]["pooled"].values()) == {0}


def test_a_subject_whose_others_give_no_threshold_is_left_out_of_the_held_out_counts() -> None:
    from edge_app.evaluate_liveness import format_report

    good = [
        _track("live", "0002_00_00_01", list(np.linspace(0.4, 0.99, 20))),
        _track("print", "0002_00_01_02", list(np.linspace(0.0, 0.12, 20))),
    ]
    tracks = _hopeless("0001") + good
    held = LivenessResult(0.2, 4, summarise(tracks, 0.2, 4), tracks, 1.0, "cpu", "m").held_out()
    folds = {f["subject"]: f["threshold"] for f in held["folds"]}
    assert folds["0001"] == 0.3 and np.isnan(folds["0002"])  # 0002 trained on 0001 alone
    # Only 0001 is scored (at 0.30): its 20 live frames, 2 refused; its 20 attack frames.
    assert held["pooled"]["live_frames"] == 20 and held["pooled"]["live_frames_refused"] == 2
    assert held["pooled"]["attack_frames"] == 20 and held["pooled"]["attack_frames_live"] == 0
    result = LivenessResult(0.2, 4, summarise(tracks, 0.2, 4), tracks, 1.0, "cpu", "m")
    report = format_report(result)
    assert "nan" not in report.lower()
    assert "(threshold derived on the others, 0.30-0.30)" in report
    assert "left out: 0002 (the others give no threshold meeting both targets)" in report
