"""Detection and tracking quality of a detector on held-out synthetic scenes.

Detection: average precision at IoU 0.5 per class (all-point interpolation of the
precision/recall curve, as PASCAL VOC 2010+ and COCO's per-threshold AP do it) and their
mean. Tracking: ByteTrack (`trackers.ByteTrackTracker`) on the detector's boxes, scored
with motmetrics (MOTA, IDF1, identity switches) against the exact ground truth.

    python -m edgetier.synthetic evaluate            # shipped detector, held-out seeds
    python -m edgetier.synthetic evaluate --model my.onnx --scenes 2 --json out.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgetier.synthetic._scene import (
    CLASS_NAMES,
    PEDESTRIAN,
    VEHICLE,
    GroundTruth,
    SceneConfig,
    SyntheticScene,
)

DEFAULT_JSON = Path("benchmarks/results/pipeline-quality.json")
HELD_OUT_SEEDS = (1_000_001, 1_000_002, 1_000_003, 1_000_004)  # never drawn by training


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box in `a` [N, 4] with every box in `b` [M, 4] -> [N, M]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision/recall curve with precision made monotone (all points)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass
class DetectionEval:
    """Accumulates frames, then gives AP@`iou_threshold` per class and the mean.

    In each frame, detections of a class are matched greedily, best score first, to the
    unmatched truth box of that class with the highest IoU (at least the threshold).
    """

    num_classes: int = len(CLASS_NAMES)
    iou_threshold: float = 0.5
    _scores: list[list[float]] = field(default_factory=list)
    _hits: list[list[bool]] = field(default_factory=list)
    _truths: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._scores = [[] for _ in range(self.num_classes)]
        self._hits = [[] for _ in range(self.num_classes)]
        self._truths = [0] * self.num_classes

    def update(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        truth_boxes: np.ndarray,
        truth_class_ids: np.ndarray,
    ) -> None:
        for c in range(self.num_classes):
            det = np.flatnonzero(class_ids == c)
            gt = np.flatnonzero(truth_class_ids == c)
            self._truths[c] += len(gt)
            if not len(det):
                continue
            det = det[np.argsort(-scores[det], kind="stable")]
            ious = iou_matrix(boxes[det], truth_boxes[gt])
            taken = np.zeros(len(gt), dtype=bool)
            for row, d in enumerate(det):
                hit = False
                if len(gt):
                    cand = np.where(taken, -1.0, ious[row])
                    best = int(np.argmax(cand))
                    if cand[best] >= self.iou_threshold:
                        taken[best] = hit = True
                self._scores[c].append(float(scores[d]))
                self._hits[c].append(hit)

    def per_class(self) -> list[float | None]:
        """AP of each class; None for a class with no truth (it has nothing to recall)."""
        out: list[float | None] = []
        for c in range(self.num_classes):
            if self._truths[c] == 0:
                out.append(None)
                continue
            order = np.argsort(-np.asarray(self._scores[c]), kind="stable")
            hits = np.asarray(self._hits[c], dtype=bool)[order]
            tp, fp = np.cumsum(hits), np.cumsum(~hits)
            recall = tp / self._truths[c]
            precision = tp / np.maximum(tp + fp, 1)
            out.append(average_precision(recall, precision))
        return out

    def mean(self) -> float:
        aps = [ap for ap in self.per_class() if ap is not None]
        return float(np.mean(aps)) if aps else 0.0


class TrackingEval:
    """motmetrics accumulators, one per tracked class, fed with IoU distances (max 0.5)."""

    def __init__(self, class_ids: Sequence[int] = (VEHICLE, PEDESTRIAN)) -> None:
        import motmetrics as mm

        self.class_ids = tuple(class_ids)
        self._acc = {c: mm.MOTAccumulator(auto_id=True) for c in self.class_ids}

    def update(
        self,
        truth: GroundTruth,
        boxes: np.ndarray,
        class_ids: np.ndarray,
        track_ids: np.ndarray,
        *,
        id_offset: int = 0,
    ) -> None:
        """One frame. Give each scene its own `id_offset`: ids restart in every scene and
        one accumulator must never see two objects (or tracks) with the same id."""
        for c in self.class_ids:
            g = truth.class_id == c
            h = class_ids == c
            dist = 1.0 - iou_matrix(truth.boxes_xyxy[g], boxes[h])
            dist[dist > 0.5] = np.nan  # motmetrics: NaN means "may not be matched"
            self._acc[c].update(
                (truth.track_id[g] + id_offset).tolist(), (track_ids[h] + id_offset).tolist(), dist
            )

    def summary(self) -> dict[str, dict[str, float]]:
        import motmetrics as mm

        mh = mm.metrics.create()
        names = [CLASS_NAMES[c] for c in self.class_ids]
        df = mh.compute_many(
            [self._acc[c] for c in self.class_ids],
            metrics=[
                "mota",
                "idf1",
                "num_switches",
                "num_false_positives",
                "num_misses",
                "num_unique_objects",
                "mostly_tracked",
            ],
            names=names,
            generate_overall=True,
        )
        return {
            str(name): {k: round(float(v), 4) for k, v in row.items()}
            for name, row in df.iterrows()
        }


class OnnxDetector:
    """The pipeline's path in one place: letterbox, onnxruntime, YOLOv8 decode + NMS."""

    def __init__(self, path: Path, *, threads: int = 2) -> None:
        import onnxruntime as ort
        import yaml

        from edgetier.pipeline import Letterboxer

        card = yaml.safe_load(Path(path).with_suffix(".yaml").read_text(encoding="utf-8"))
        h, w = card["input_size"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.letterbox = Letterboxer(h, w, pad_value=int(card.get("letterbox_value", 114)))
        self._input = np.empty((1, 3, h, w), dtype=np.float32)

    def __call__(
        self, image: np.ndarray, *, confidence: float, iou_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (xyxy, frame pixels), scores and class ids of one RGB frame."""
        from edgetier.pipeline import decode_yolo

        info = self.letterbox(image, self._input[0])
        out = self.session.run(None, {"images": self._input})[0][0]
        boxes, scores, cls = decode_yolo(out, confidence=confidence, iou_threshold=iou_threshold)
        return info.to_frame(boxes, image.shape[1], image.shape[0]), scores, cls


TRACK_CONFIDENCE = 0.3  # detections below this never reach the tracker


class ColourEval:
    """Accuracy of the colour classifier on truth vehicle crops (at least 60 % visible),
    cropped and resized the way the pipeline's cascade does it."""

    def __init__(self, path: Path, *, threads: int = 2) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.correct = self.total = 0

    def update(self, image: np.ndarray, truth: GroundTruth) -> None:
        from edgetier.pipeline import resize_crops_into

        rows = np.flatnonzero((truth.class_id == VEHICLE) & (truth.visibility >= 0.6))
        if not len(rows):
            return
        batch = np.empty((len(rows), 3, 64, 64), dtype=np.float32)
        resize_crops_into(image, truth.boxes_xyxy[rows], batch)
        probs = self.session.run(None, {"images": batch})[0]
        self.correct += int((probs.argmax(axis=1) == truth.colour_id[rows]).sum())
        self.total += len(rows)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


def make_tracker(fps: float) -> Any:
    """ByteTrack with the settings picked on a validation scene (seed 77, not held out).

    The detector's scores estimate IoU (quality focal loss), so weak duplicates score
    0.1-0.35: they are kept from the tracker (TRACK_CONFIDENCE) and a track starts at 0.6.
    """
    from trackers import ByteTrackTracker

    return ByteTrackTracker(
        frame_rate=fps,
        lost_track_buffer=30,
        track_activation_threshold=0.6,
        high_conf_det_threshold=0.6,
        minimum_consecutive_frames=2,
        minimum_iou_threshold=0.3,
    )


def evaluate(
    model: Path,
    scenes: Iterable[SceneConfig],
    *,
    map_confidence: float = 0.01,
    track_confidence: float = TRACK_CONFIDENCE,
    progress: bool = True,
    colour_model: Path | None = None,
    colour_every: int = 10,
) -> dict[str, Any]:
    """Run the detector (and ByteTrack) over every frame of `scenes`; return the figures."""
    import supervision as sv

    detector = OnnxDetector(model)
    det_eval = DetectionEval()
    trk_eval = TrackingEval()
    col_eval = ColourEval(colour_model) if colour_model is not None else None
    frames, started = 0, time.perf_counter()
    infer_s = render_s = 0.0
    configs = list(scenes)
    for n, config in enumerate(configs, start=1):
        tracker = make_tracker(config.fps)
        scene = SyntheticScene(config)
        for index in range(len(scene)):
            t0 = time.perf_counter()
            frame = scene.frame(index)
            t1 = time.perf_counter()
            boxes, scores, cls = detector(frame.image, confidence=map_confidence)
            render_s += t1 - t0
            infer_s += time.perf_counter() - t1
            t = frame.truth
            det_eval.update(boxes, scores, cls, t.boxes_xyxy, t.class_id)
            keep = (scores >= track_confidence) & np.isin(cls, (VEHICLE, PEDESTRIAN))
            dets = sv.Detections(xyxy=boxes[keep], confidence=scores[keep], class_id=cls[keep])
            tracked = tracker.update(dets)
            confirmed = tracked.tracker_id >= 0
            trk_eval.update(
                t,
                tracked.xyxy[confirmed],
                tracked.class_id[confirmed],
                tracked.tracker_id[confirmed],
                id_offset=n * 10_000_000,
            )
            if col_eval is not None and index % colour_every == 0:
                col_eval.update(frame.image, t)
            frames += 1
        if progress:
            print(
                f"scene {n}/{len(configs)} (seed {config.seed}) done, {frames} frames, "
                f"{time.perf_counter() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    per_class = det_eval.per_class()
    return {
        "detection": {
            "map50": round(det_eval.mean(), 4),
            "ap50": {
                CLASS_NAMES[c]: (None if ap is None else round(ap, 4))
                for c, ap in enumerate(per_class)
            },
        },
        "tracking": trk_eval.summary(),
        "colour": None
        if col_eval is None
        else {"accuracy": round(col_eval.accuracy or 0.0, 4), "crops": col_eval.total},
        "frames": frames,
        "detector_ms_per_frame": round(1000 * infer_s / max(frames, 1), 2),
        "scene_frames_per_s": round(frames / max(render_s, 1e-9), 1),
    }


def held_out_scenes(count: int, *, duration_s: float = 10.0) -> list[SceneConfig]:
    """720p, 30 FPS scenes from seeds the training never uses (it draws seeds < 2**31 at
    random; these are fixed and listed, so the evaluation is the same every time)."""
    seeds = [
        HELD_OUT_SEEDS[i % len(HELD_OUT_SEEDS)] + 10 * (i // len(HELD_OUT_SEEDS))
        for i in range(count)
    ]
    return [SceneConfig(duration_s=duration_s, vehicles=6, pedestrians=4, seed=s) for s in seeds]


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} cores, no GPU used (CPUExecutionProvider)"


def main(argv: list[str] | None = None) -> int:
    from edgetier.pipeline import package_models_dir

    parser = argparse.ArgumentParser(
        prog="python -m edgetier.synthetic evaluate",
        description="mAP@0.5 and MOTA / IDF1 of a detector on held-out synthetic scenes.",
    )
    parser.add_argument("--model", type=Path, default=package_models_dir() / "detector.onnx")
    parser.add_argument(
        "--colour-model",
        type=Path,
        default=None,
        help="colour classifier (default: colour.onnx next to the detector)",
    )
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    configs = held_out_scenes(args.scenes, duration_s=args.duration_s)
    colour = args.colour_model or args.model.with_name("colour.onnx")
    result = evaluate(args.model, configs, colour_model=colour if colour.is_file() else None)
    result["setup"] = {
        "model": args.model.name,
        "scenes": [
            {
                "seed": c.seed,
                "width": c.width,
                "height": c.height,
                "fps": c.fps,
                "duration_s": c.duration_s,
                "vehicles": c.vehicles,
                "pedestrians": c.pedestrians,
            }
            for c in configs
        ],
        "command": "python -m edgetier.synthetic evaluate " + " ".join(argv or sys.argv[1:]),
        "date": dt.date.today().isoformat(),
        "machine": _machine(),
    }
    det, trk = result["detection"], result["tracking"]
    print(
        f"mAP@0.5 {det['map50']:.3f}  "
        + "  ".join(f"{k} {v:.3f}" for k, v in det["ap50"].items() if v is not None)
    )
    if result["colour"]:
        print(
            f"colour accuracy {result['colour']['accuracy']:.3f} "
            f"on {result['colour']['crops']} vehicle crops"
        )
    for name, row in trk.items():
        print(
            f"{name:>10}: MOTA {row['mota']:.3f}  IDF1 {row['idf1']:.3f}  "
            f"switches {int(row['num_switches'])}"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
