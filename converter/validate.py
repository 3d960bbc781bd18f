"""`edge-convert validate`: how far the int8 models are from the float ones.

Both model sets run through the same engine code on images that calibration never saw
(LFW DevTest and the detection photos). Stage-level numbers feed each int8 network the
exact inputs its float twin got; end-to-end numbers run both cascades independently.
The liveness models are compared on NUAA frames (the largest face the int8 MTCNN finds,
the same patches into both): score error and the live/not-live decision at 0.5.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from edge_app import untrusted_json
from edge_app.adapters import ModelRunner
from edge_app.centering import unit
from edge_app.detection.boxes import iou_matrix
from edge_app.engine import Engine
from edge_app.errors import UserError
from edge_app.evaluate_liveness import KINDS, read_sequences
from edge_app.images import IMAGE_SUFFIXES, read_image
from edge_app.lfw import (
    TEST_PAIRS,
    PairList,
    cross_validated_accuracy,
    labelled_face,
    read_pairs,
)
from edge_app.liveness import LivenessScorer
from edge_app.manifest import LIVENESS_ROLE, ModelSpec, TensorSpec, no_models_folder, sha256_file
from edge_app.progress import Progress
from edge_app.reports import check_distinct, check_output, json_text, write_reports
from edge_app.runtime import make_interpreter

log = logging.getLogger(__name__)

MATCH_IOU = 0.7
TARGETS = {
    "facenet_cosine_mean": 0.99,
    "facenet_cosine_min": 0.95,
    "accuracy_drop_pp": 0.2,
    "detections_reproduced": 0.99,
    "landmark_error": 0.02,
    "liveness_agreement": 0.99,
}
LIVENESS_DECISION = 0.5  # live when the score is above it; the door's own threshold may differ


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _StageComparison:
    """Collects float-vs-int8 outputs of one network on identical inputs."""

    def __init__(self, threshold: float, int8_threshold: float) -> None:
        self.threshold = threshold
        self.int8_threshold = int8_threshold
        self.prob_f: list[np.ndarray] = []
        self.prob_q: list[np.ndarray] = []
        self.box_err: list[np.ndarray] = []
        self.landmark_err: list[np.ndarray] = []

    def add(self, out_f: dict, out_q: dict) -> None:
        self.prob_f.append(_sigmoid(out_f["score"]).ravel())
        self.prob_q.append(_sigmoid(out_q["score"]).ravel())
        self.box_err.append(np.abs(out_f["box"] - out_q["box"]).ravel())
        if "landmarks" in out_f:
            diff = (out_f["landmarks"] - out_q["landmarks"]).reshape(-1, 2, 5)
            self.landmark_err.append(np.hypot(diff[:, 0], diff[:, 1]).ravel())

    def summary(self) -> dict:
        if not self.prob_f:
            return {}
        pf, pq = np.concatenate(self.prob_f), np.concatenate(self.prob_q)
        above = pf > self.threshold
        result = {
            "inputs": len(self.prob_f),
            "probability_correlation": float(np.corrcoef(pf, pq)[0, 1]) if len(pf) > 1 else 1.0,
            "probability_mae": float(np.mean(np.abs(pf - pq))),
            "decision_agreement": float(np.mean(above == (pq > self.int8_threshold))),
            "float_positives_kept": float(np.mean(pq[above] > self.int8_threshold))
            if above.any()
            else None,
            "box_regression_mae": float(np.mean(np.concatenate(self.box_err))),
        }
        if self.landmark_err:
            result["landmark_error_of_crop"] = float(np.mean(np.concatenate(self.landmark_err)))
        return result


DETECTION_FOLDERS = ("annotated", "crowds", "negatives")


def data_folders(data: Path) -> dict[str, Path]:
    """The folders of --data a validation reads, named for the messages: no output may go
    inside them (`--json DATA/lfw/pairsDevTest.txt` would replace the pair list it reads)."""
    return {
        "--data (LFW)": data / "lfw",
        "--data (NUAA frames)": data / "liveness" / "nuaa",
        **{f"--data (detection/{name})": data / "detection" / name for name in DETECTION_FOLDERS},
    }


def _detection_images(data: Path) -> list[Path]:
    folders = [data / "detection" / name for name in DETECTION_FOLDERS]
    return sorted(
        p for f in folders if f.is_dir() for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
    )


def stage_comparisons(float_engine: Engine, int8_engine: Engine) -> dict[str, _StageComparison]:
    """Each side judged by its own thresholds (the int8 ones are calibrated at build)."""
    f, q = float_engine.cascade.thresholds, int8_engine.cascade.thresholds
    return {
        name: _StageComparison(getattr(f, name), getattr(q, name))
        for name in ("pnet", "rnet", "onet")
    }


def compare_cascades(
    float_engine: Engine,
    int8_engine: Engine,
    paths: list[Path],
    stages: dict[str, _StageComparison],
) -> dict:
    """End-to-end detection agreement; stage agreement on identical inputs goes to `stages`."""
    recorded: list[tuple[str, np.ndarray]] = []
    float_engine.cascade.record = lambda stage, batch: recorded.append((stage, batch))
    float_total = matched = int8_total = 0
    min_face = float_engine.cascade.min_face
    in_spec_total = in_spec_matched = 0
    landmark_errors = []
    try:
        for path in Progress(
            paths, desc="cascade float vs int8", unit="image", leave=False, disable=None
        ):
            frame = read_image(path)
            recorded.clear()
            faces_f = float_engine.detect(frame)
            faces_q = int8_engine.detect(frame)
            for stage, batch in recorded:
                name = stage.split("@")[0]
                if name == "pnet":
                    h, w = batch.shape[1:3]
                    stages[name].add(
                        float_engine.cascade.pnet_for(h, w).run(batch),
                        int8_engine.cascade.pnet_for(h, w).run(batch),
                    )
                else:
                    net_f = getattr(float_engine.cascade, name)
                    net_q = getattr(int8_engine.cascade, name)
                    for crop in batch:
                        stages[name].add(net_f.run(crop[None]), net_q.run(crop[None]))
            float_total += len(faces_f)
            if len(faces_q) == 0:
                in_spec_total += int((faces_f.sizes >= min_face).sum())
            int8_total += len(faces_q)
            if len(faces_f) and len(faces_q):
                overlap = iou_matrix(faces_f.boxes, faces_q.boxes)
                best = overlap.argmax(axis=1)
                hit = overlap[np.arange(len(faces_f)), best] >= MATCH_IOU
                matched += int(hit.sum())
                in_spec = faces_f.sizes >= min_face
                in_spec_total += int(in_spec.sum())
                in_spec_matched += int((hit & in_spec).sum())
                width = faces_f.boxes[hit, 2] - faces_f.boxes[hit, 0]
                err = np.linalg.norm(faces_f.landmarks[hit] - faces_q.landmarks[best[hit]], axis=2)
                landmark_errors.append((err / width[:, None]).ravel())
    finally:
        float_engine.cascade.record = None
    errors = np.concatenate(landmark_errors) if landmark_errors else np.zeros(0)
    return {
        "images": len(paths),
        "float_faces": float_total,
        "int8_faces": int8_total,
        "reproduced": matched / float_total if float_total else 1.0,
        "min_face": min_face,
        "float_faces_at_min_face": in_spec_total,
        "reproduced_at_min_face": in_spec_matched / in_spec_total if in_spec_total else 1.0,
        "landmark_error_of_box_mean": float(errors.mean()) if errors.size else None,
        "landmark_error_of_box_p99": float(np.percentile(errors, 99)) if errors.size else None,
    }


def compare_facenet(
    float_engine: Engine, int8_engine: Engine, lfw: Path, limit: int | None
) -> dict:
    """Same float-MTCNN crops into both FaceNets: embedding cosine and DevTest accuracy, on
    the networks' unit outputs (before any centring the engine applies)."""
    pairs = read_pairs(lfw / TEST_PAIRS)
    if limit:
        keep = np.r_[0 : limit // 2, len(pairs.first) // 2 : len(pairs.first) // 2 + limit // 2]
        pairs = type(pairs)(
            [pairs.first[i] for i in keep],
            [pairs.second[i] for i in keep],
            pairs.same[keep],
            pairs.fold[keep],
            pairs.folds,
        )
    embeddings_f, embeddings_q = {}, {}
    no_face = 0
    for name in Progress(
        pairs.images, desc="facenet float vs int8", unit="image", leave=False, disable=None
    ):
        frame = read_image(lfw / "images" / name)
        face, found = labelled_face(float_engine.detect(frame), frame.shape[1], frame.shape[0])
        no_face += not found
        # FaceNet's own outputs, made unit: the int8 models' centring mean (which the float
        # reference has not) is no part of what quantisation changed
        embeddings_f[name] = unit(float_engine.embed_raw(frame, face))[0]
        embeddings_q[name] = unit(int8_engine.embed_raw(frame, face))[0]
    names = sorted(embeddings_f)
    cosine = np.array([float(embeddings_f[n] @ embeddings_q[n]) for n in names])

    def accuracy(emb: dict) -> tuple[float, float]:
        a = np.stack([emb[n] for n in pairs.first])
        b = np.stack([emb[n] for n in pairs.second])
        mean, std, _ = cross_validated_accuracy(
            1.0 - np.sum(a * b, axis=1), pairs.same, np.arange(len(a)) % 10
        )
        return mean, std

    acc_f, std_f = accuracy(embeddings_f)
    acc_q, std_q = accuracy(embeddings_q)
    return {
        "images": len(names),
        "pairs": len(pairs.first),
        "no_face_images": no_face,
        "cosine_mean": float(cosine.mean()),
        "cosine_p1": float(np.percentile(cosine, 1)),
        "cosine_min": float(cosine.min()),
        "accuracy_float": acc_f,
        "accuracy_float_std": std_f,
        "accuracy_int8": acc_q,
        "accuracy_int8_std": std_q,
        "accuracy_drop_pp": 100 * (acc_f - acc_q),
    }


def _float_twin(spec: ModelSpec, float_models: Path, engine: Engine) -> ModelRunner:
    """The float model of the same name as an int8 liveness model, with its own tensors."""
    from converter.quantize import describe_tensors

    path = float_models / spec.file
    if not float_models.is_dir():  # not one float model: the liveness-only build is not it
        raise UserError(
            f"{float_models}: no float models to compare the int8 ones with; build them with "
            "`make models` (edge-convert build writes both)"
        )
    if not path.is_file():
        raise UserError(
            f"{path}: no float twin of {spec.file}; build it with `edge-convert build --only "
            "liveness --liveness DIR` (it writes both)"
        )
    inputs, outputs = describe_tensors(path)
    float_spec = ModelSpec(
        role=spec.role,
        file=spec.file,
        sha256=sha256_file(path),
        inputs=[TensorSpec(**t) for t in inputs],
        outputs=[TensorSpec(**t) for t in outputs],
        patch=spec.patch,
    )
    return ModelRunner(make_interpreter(path.read_bytes(), engine.backend), float_spec)


def liveness_frames(nuaa: Path) -> list[tuple[Path, str]]:
    """(photo, label) for every NUAA frame under nuaa/live and nuaa/print, sorted.

    The folders and file names are read as `edge-app eval liveness` reads them.
    """
    return sorted((path, seq.kind) for seq in read_sequences(nuaa) for path in seq.frames)


def compare_liveness(
    int8_engine: Engine, float_models: Path, nuaa: Path, calibration: dict | None = None
) -> tuple[dict, list[dict]]:
    """Float against int8 liveness on the largest face of every NUAA frame.

    Returns the summary and one record per frame (file, label, box, both scores, and each
    model's real probability). Frames in the build's calibration sample are marked, so the
    agreement is also reported on frames calibration never saw.
    """
    from converter.liveness import calibration_images, calibration_sample, largest_face

    specs = [spec for _, spec in int8_engine.manifest.by_role(LIVENESS_ROLE)]
    int8_scorer = LivenessScorer([int8_engine._runner(spec) for spec in specs])
    float_scorer = LivenessScorer([_float_twin(spec, float_models, int8_engine) for spec in specs])
    calibrated: set[Path] = set()
    if calibration and Path(calibration.get("source", "")).resolve() == nuaa.resolve():
        sample = calibration_sample(calibration_images(nuaa), int(calibration["sample"]))
        calibrated = {p.resolve() for p in sample}
    records = []
    frames = liveness_frames(nuaa)
    for path, label in Progress(frames, desc="liveness float vs int8", unit="frame", disable=None):
        frame = read_image(path)
        face = largest_face(int8_engine.detect(frame))
        record: dict = {"file": str(path.relative_to(nuaa)), "label": label}
        if face is not None:
            per_f = float_scorer.model_scores(frame, face)[0]
            per_q = int8_scorer.model_scores(frame, face)[0]
            record |= {
                "box": [round(float(v), 1) for v in face.boxes[0]],
                "float": round(float(per_f.mean()), 6),
                "int8": round(float(per_q.mean()), 6),
                "float_models": [round(float(v), 6) for v in per_f],
                "int8_models": [round(float(v), 6) for v in per_q],
                "calibration": path.resolve() in calibrated,
            }
        records.append(record)
    return summarise_liveness(records, [s.file for s in specs]), records


def summarise_liveness(records: list[dict], models: list[str]) -> dict:
    scored = [r for r in records if "float" in r]
    pf = np.array([r["float"] for r in scored])
    pq = np.array([r["int8"] for r in scored])
    held_out = np.array([not r["calibration"] for r in scored], bool)
    live_f, live_q = pf > LIVENESS_DECISION, pq > LIVENESS_DECISION
    agree = live_f == live_q
    per_model = np.abs(
        np.array([r["float_models"] for r in scored]) - np.array([r["int8_models"] for r in scored])
    )
    by_label = {}
    for label in KINDS:  # NUAA's folders: the real person, a printed photo
        mask = np.array([r["label"] == label for r in scored], bool)
        by_label[label] = {
            "frames": int(mask.sum()),
            "judged_live_float": int(live_f[mask].sum()),
            "judged_live_int8": int(live_q[mask].sum()),
        }
    return {
        "frames": len(records),
        "faces": len(scored),
        "no_face": len(records) - len(scored),
        "decision_threshold": LIVENESS_DECISION,
        "score_mae": float(np.mean(np.abs(pf - pq))),
        "score_max_error": float(np.max(np.abs(pf - pq))),
        "score_correlation": float(np.corrcoef(pf, pq)[0, 1]),
        "decision_agreement": float(agree.mean()),
        "decisions_differing": int((~agree).sum()),
        "held_out_faces": int(held_out.sum()),
        "held_out_decision_agreement": float(agree[held_out].mean()) if held_out.any() else None,
        "model_mae": {m: float(per_model[:, i].mean()) for i, m in enumerate(models)},
        "model_max_error": {m: float(per_model[:, i].max()) for i, m in enumerate(models)},
        "by_label": by_label,
    }


def float_cascade_note(int8_engine: Engine, reference: Engine | None) -> dict:
    """Where the compared float P/R/O-Net come from, and whether the shipped ones are the
    reference build's files byte for byte."""
    section = int8_engine.manifest.float_cascade
    if section is None:
        return {"shipped": False, "note": "not in the manifest: the float reference was compared"}
    same = None
    if reference is not None:
        ref = {n: s.sha256 for n, s in reference.manifest.models.items()}
        same = all(ref.get(n) == s.sha256 for n, s in section.models.items())
    identical = (
        "There are no float reference models here to compare the files with."
        if same is None
        else "The shipped files are byte for byte the float reference build's."
        if same
        else "The shipped files are **not** the float reference build's."
    )
    return {
        "shipped": True,
        "identical_to_reference": same,
        "note": f"The cascade rows below compare the {len(section.models)} float P/R/O-Net "
        'shipped in the manifest\'s float_cascade (what `cascade = "auto"` or `"float"` runs '
        f"on a CPU) with the int8 ones. {identical}",
    }


def _verdicts(results: dict) -> dict[str, bool]:
    f, c = results.get("facenet"), results["cascade"]
    facenet = (
        {
            "facenet_cosine_mean": f["cosine_mean"] >= TARGETS["facenet_cosine_mean"],
            "facenet_cosine_min": f["cosine_min"] >= TARGETS["facenet_cosine_min"],
            "accuracy_drop_pp": f["accuracy_drop_pp"] <= TARGETS["accuracy_drop_pp"],
        }
        if f
        else {}
    )
    return {
        **facenet,
        "detections_reproduced": min(c["lfw"]["reproduced"], c["detection"]["reproduced"])
        >= TARGETS["detections_reproduced"],
        "landmark_error": max(
            c["lfw"]["landmark_error_of_box_mean"] or 0,
            c["detection"]["landmark_error_of_box_mean"] or 0,
        )
        <= TARGETS["landmark_error"],
        **(
            {
                "liveness_agreement": results["liveness"]["decision_agreement"]
                >= TARGETS["liveness_agreement"]
            }
            if results.get("liveness")
            else {}
        ),
    }


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


GOALS = {
    "facenet_cosine_mean": ">= 0.99",
    "facenet_cosine_min": ">= 0.95",
    "accuracy_drop_pp": "<= 0.2 pp",
    "detections_reproduced": ">= 99% (IoU >= 0.7)",
    "landmark_error": "<= 2% of box width",
    "liveness_agreement": ">= 99% same live/not-live decision (NUAA)",
}


def render_markdown(results: dict) -> str:
    f, c = results.get("facenet"), results["cascade"]
    lfw, photos = c["lfw"], c["detection"]
    measured = {
        "facenet_cosine_mean": f"{f['cosine_mean']:.4f}" if f else "-",
        "facenet_cosine_min": f"{f['cosine_min']:.4f}" if f else "-",
        "accuracy_drop_pp": f"{f['accuracy_drop_pp']:+.2f} pp" if f else "-",
        "detections_reproduced": f"LFW {_pct(lfw['reproduced'])}, "
        f"photos {_pct(photos['reproduced'])}",
        "landmark_error": f"LFW {_pct(lfw['landmark_error_of_box_mean'])}, "
        f"photos {_pct(photos['landmark_error_of_box_mean'])}",
    }
    live = results.get("liveness")
    if live:
        measured["liveness_agreement"] = _pct(live["decision_agreement"])
    lines = [
        "# Quantisation: int8 against float",
        "",
        "Generated by `edge-convert validate` (reproduce: `make validate`). Both model sets run",
        "through the same engine code. The detection and FaceNet figures use no calibration",
        "image (those models calibrate on LFW DevTrain only); the liveness section says which of",
        "its frames calibrated the liveness models. Raw numbers: `docs/quantization.json`.",
        "",
        f"Models: `{results['models']}` built with TensorFlow {results['tensorflow']}.",
        "",
        "## Targets",
        "",
        _row("target", "goal", "measured", "met"),
        _row("---", "---", "---", "---"),
    ]
    for key, met in results["verdicts"].items():
        lines.append(_row(key, GOALS[key], measured[key], "yes" if met else "**no**"))
    shipped = results.get("float_cascade", {})
    lines += ["", "## Float cascade", "", shipped.get("note", "not in the manifest"), ""]
    if not f:
        lines += [
            "## FaceNet",
            "",
            "Not compared: no float reference models (the float FaceNet is built by "
            "`edge-convert build` into MODELS/../float, not shipped).",
            "",
        ]
    lines += _facenet_lines(f) if f else []
    lines += _cascade_lines(c, lfw, photos)
    if live:
        lines += _liveness_markdown(live)
    return "\n".join(lines).rstrip("\n") + "\n"


def _facenet_lines(f: dict) -> list[str]:
    return [
        "## FaceNet (LFW DevTest, float-MTCNN crops for both)",
        "",
        f"{f['images']} images, {f['pairs']} pairs; {f['no_face_images']} images without a "
        "float detection used the median LFW box. Both sides are the networks' unit outputs, "
        "before the centring mean the int8 models ship (the float reference has none).",
        "",
        _row("", "float", "int8"),
        _row("---", "---", "---"),
        _row(
            "10-fold accuracy",
            f"{_pct(f['accuracy_float'])} ± {_pct(f['accuracy_float_std'])}",
            f"{_pct(f['accuracy_int8'])} ± {_pct(f['accuracy_int8_std'])}",
        ),
        "",
        f"Embedding cosine float vs int8: mean {f['cosine_mean']:.4f}, "
        f"1st percentile {f['cosine_p1']:.4f}, min {f['cosine_min']:.4f}.",
        "",
    ]


def _cascade_lines(c: dict, lfw: dict, photos: dict) -> list[str]:
    lines = [
        "## MTCNN cascade",
        "",
        _row(
            "images",
            "float faces",
            "int8 faces",
            "reproduced (IoU >= 0.7)",
            "of float faces >= min face",
            "landmark error / box width (mean, p99)",
        ),
        _row(*["---"] * 6),
    ]
    for r, label in ((lfw, "LFW DevTest"), (photos, "detection photos")):
        lines.append(
            _row(
                f"{label} ({r['images']})",
                r["float_faces"],
                r["int8_faces"],
                _pct(r["reproduced"]),
                f"{_pct(r['reproduced_at_min_face'])} of {r['float_faces_at_min_face']}",
                f"{_pct(r['landmark_error_of_box_mean'])}, {_pct(r['landmark_error_of_box_p99'])}",
            )
        )
    lines += [
        "",
        "Per stage, each int8 network fed its float twin's own inputs (LFW DevTest + detection",
        "photos), each judged by its own thresholds (the int8 ones are calibrated at build):",
        "",
        _row(
            "stage",
            "inputs",
            "prob. correlation",
            "prob. MAE",
            "decisions agree",
            "float positives kept",
            "box offset MAE",
            "landmark error / crop",
        ),
        _row(*["---"] * 8),
    ]
    for stage in ("pnet", "rnet", "onet"):
        s = c["stages"][stage]
        if s:
            landmark = s.get("landmark_error_of_crop")
            lines.append(
                _row(
                    stage,
                    s["inputs"],
                    f"{s['probability_correlation']:.4f}",
                    f"{s['probability_mae']:.4f}",
                    _pct(s["decision_agreement"]),
                    _pct(s["float_positives_kept"]),
                    f"{s['box_regression_mae']:.4f}",
                    "-" if landmark is None else _pct(landmark),
                )
            )
    lines.append("")
    return lines


def _liveness_markdown(live: dict) -> list[str]:
    models = ", ".join(
        f"`{m}` {live['model_mae'][m]:.4f} / {live['model_max_error'][m]:.4f}"
        for m in live["model_mae"]
    )
    lines = [
        "## Liveness (MiniFASNets, NUAA subjects 0001-0008)",
        "",
        f"{live['frames']} frames ({live['no_face']} without a face). In each, the largest face "
        "the int8 MTCNN finds; the same patches go into the float and the int8 models. The "
        "score is the mean of the two models' real-class probabilities, and a face counts as "
        f"live when it is above {live['decision_threshold']}. Calibration used "
        f"{live['faces'] - live['held_out_faces']} of these frames; the held-out column is the "
        f"other {live['held_out_faces']}. Per-frame scores: `docs/liveness_frames.json`.",
        "",
        _row(
            "faces",
            "score MAE",
            "score max error",
            "correlation",
            "decisions agree",
            "held out agree",
            "differing",
        ),
        _row(*["---"] * 7),
        _row(
            live["faces"],
            f"{live['score_mae']:.4f}",
            f"{live['score_max_error']:.4f}",
            f"{live['score_correlation']:.4f}",
            _pct(live["decision_agreement"]),
            _pct(live["held_out_decision_agreement"]),
            live["decisions_differing"],
        ),
        "",
        f"Per model, real-probability error (mean / max): {models}.",
        "",
        _row("frames", "count", "judged live, float", "judged live, int8"),
        _row(*["---"] * 4),
    ]
    for label, counts in live["by_label"].items():
        lines.append(
            _row(
                label,
                counts["frames"],
                counts["judged_live_float"],
                counts["judged_live_int8"],
            )
        )
    return lines


def validate(
    models: Path,
    float_models: Path,
    data: Path,
    json_out: Path,
    report: Path,
    limit: int | None = None,
    only: str | None = None,
    frames_out: Path | None = None,
) -> dict:
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: must be at least 1 (or leave it out for every pair)")
    # The outputs are refused now, not with a traceback after the minutes of work.
    _check_outputs(
        {"--json": json_out, "--report": report, "--liveness-frames": frames_out},
        {"--models": models, "--float-models": float_models, **data_folders(data)},
    )
    earlier = _earlier_results(json_out) if only == "liveness" else None
    if not models.is_dir():  # a mistyped --models is named first, as every command names it
        raise UserError(no_models_folder(models))
    lfw = data / "lfw"
    test_pairs = None if earlier is not None else _test_pairs(data)
    import tensorflow as tf  # seconds to import: after the checks

    int8_engine = Engine.open(models, backend="cpu", cascade="int8")
    liveness = None
    # The per-frame scores are written with the results they belong to, at the end: a
    # failure or a stop in the minutes between replaces neither.
    frames: dict[str, tuple[Path, str]] = {}
    nuaa = data / "liveness" / "nuaa"
    if int8_engine.has_liveness and nuaa.is_dir():
        calibration = int8_engine.manifest.calibration.get("liveness")
        liveness, records = compare_liveness(int8_engine, float_models, nuaa, calibration)
        if frames_out is not None:
            text = "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"
            frames = {"--liveness-frames": (frames_out, text)}
    elif only == "liveness":
        raise UserError(
            f"--only liveness needs liveness models in {models} and NUAA frames in {nuaa}"
        )
    else:
        log.warning("liveness not validated: no liveness models in %s or no %s", models, nuaa)
    if earlier is not None:
        results = earlier
        results["liveness"] = liveness
        return _write_results(results, json_out, report, frames)
    reference = (
        Engine.open(float_models, backend="cpu", cascade="int8")
        if (float_models / "manifest.json").is_file()
        else None
    )
    # The cascade comparison runs the float P/R/O-Net the device can choose (the manifest's
    # float_cascade), else the float reference models.
    shipped = int8_engine.manifest.float_cascade is not None
    float_engine = Engine.open(models, backend="cpu", cascade="float") if shipped else reference
    if float_engine is None:
        raise UserError(
            f"no float models to compare with: {models}/manifest.json has no float_cascade "
            f"and {float_models} has no manifest.json (edge-convert float-cascade or build)"
        )
    assert test_pairs is not None  # (read before the work: this is not --only liveness)
    lfw_images = [lfw / "images" / n for n in test_pairs.images]
    if limit:
        lfw_images = lfw_images[:limit]
    stages = stage_comparisons(float_engine, int8_engine)
    results = {
        "models": str(models),
        "tensorflow": tf.__version__,
        "facenet": compare_facenet(reference, int8_engine, lfw, limit) if reference else None,
        "float_cascade": float_cascade_note(int8_engine, reference),
        "cascade": {
            "lfw": compare_cascades(float_engine, int8_engine, lfw_images, stages),
            "detection": compare_cascades(
                float_engine, int8_engine, _detection_images(data), stages
            ),
        },
    }
    results["cascade"]["stages"] = {name: stage.summary() for name, stage in stages.items()}
    results["liveness"] = liveness
    return _write_results(results, json_out, report, frames)


def _test_pairs(data: Path) -> PairList:
    """The LFW DevTest pairs of --data, read before any work: a --data without them is
    refused at once, not after the minutes of the liveness comparison."""
    try:
        return read_pairs(data / "lfw" / TEST_PAIRS)
    except UserError as error:
        raise UserError(
            f"--data {data}: no LFW DevTest to validate on ({error}); give the data folder "
            "whose lfw/ holds pairsDevTest.txt and images/, or --only liveness for the "
            "liveness models alone"
        ) from None


def _check_outputs(outputs: dict[str, Path | None], inputs: dict[str, Path]) -> None:
    """UserError for an output that cannot be written, is not a regular file (a device, a
    named pipe, a link), is another output, or lies in an input folder (the models folders,
    where it could replace a model or the manifest; the data)."""
    for option, path in outputs.items():
        check_output(path, option, parents=option != "--report")
    check_distinct(outputs, inputs)


def _earlier_results(json_out: Path) -> dict:
    """The results --only liveness adds to, read (as untrusted JSON) before the work."""
    advice = "which a full `edge-convert validate` writes: run that first"
    try:
        results = untrusted_json.loads(json_out.read_bytes())
    except (OSError, untrusted_json.BadJSON) as error:
        raise UserError(f"--only liveness adds to {json_out} ({error}), {advice}") from None
    try:  # what _write_results will do with it, without the liveness part
        without = {**results, "liveness": None}
        render_markdown({**without, "verdicts": _verdicts(without)})
    except (AttributeError, KeyError, TypeError, ValueError):
        raise UserError(
            f"--only liveness adds to {json_out}, not a validation result; {advice}"
        ) from None
    return results


def _write_results(
    results: dict,
    json_out: Path,
    report: Path,
    frames: dict[str, tuple[Path, str]] | None = None,
) -> dict:
    """Write the results as --json and --report, with `frames` (--liveness-frames' path
    and text, when written)."""
    results["verdicts"] = _verdicts(results)
    markdown = render_markdown(results)  # before writing: a bad result writes no file
    outputs = {"--json": (json_out, json_text(results)), "--report": (report, markdown)}
    outputs |= frames or {}
    for path, _ in outputs.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    # All written whole before any is renamed into place: a failure replaces none.
    write_reports(outputs)
    log.info("validation written to %s and %s", json_out, report)
    for key, met in results["verdicts"].items():
        log.info("target %s: %s", key, "met" if met else "NOT met")
    return results
