"""Detection AP on hand-computed cases; tracking metrics on hand-made tracks."""

from __future__ import annotations

import numpy as np
import pytest

from edgetier.synthetic._quality import (
    DetectionEval,
    TrackingEval,
    average_precision,
    held_out_scenes,
    iou_matrix,
)
from edgetier.synthetic._scene import PEDESTRIAN, VEHICLE, GroundTruth


def box(x: float, y: float, w: float = 10, h: float = 10) -> list[float]:
    return [x, y, x + w, y + h]


def test_iou_matrix_known_values() -> None:
    a = np.array([box(0, 0), box(100, 100)])
    b = np.array([box(0, 0), box(5, 0), box(50, 50)])
    got = iou_matrix(a, b)
    assert got.shape == (2, 3)
    assert got[0, 0] == pytest.approx(1.0)
    assert got[0, 1] == pytest.approx(50 / 150)  # half overlap: 50 / (100 + 100 - 50)
    assert got[0, 2] == 0.0 and got[1].max() == 0.0


def test_ap_of_a_hand_computed_ranking() -> None:
    # three truths; detections by score: hit, miss, hit, miss (one truth never found)
    truth = np.array([box(0, 0), box(20, 0), box(40, 0)])
    dets = np.array([box(0, 0), box(70, 0), box(21, 0), box(90, 0)])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    ev = DetectionEval(num_classes=1)
    ev.update(dets, scores, np.zeros(4, int), truth, np.zeros(3, int))
    # precision/recall after each: (1, 1/3) (1/2, 1/3) (2/3, 2/3) (1/2, 2/3)
    # all-point AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert ev.per_class() == [pytest.approx(5 / 9)]
    assert average_precision(
        np.array([1 / 3, 1 / 3, 2 / 3, 2 / 3]), np.array([1, 1 / 2, 2 / 3, 1 / 2])
    ) == pytest.approx(5 / 9)


def test_duplicates_and_wrong_classes_are_false_positives() -> None:
    truth = np.array([box(0, 0)])
    dets = np.array([box(0, 0), box(1, 0), box(0, 0)])
    ev = DetectionEval(num_classes=2)
    # the duplicate (0.8) is a false positive above nothing else; class 1 has no truth
    ev.update(dets, np.array([0.9, 0.8, 0.95]), np.array([0, 0, 1]), truth, np.array([0]))
    per_class = ev.per_class()
    assert per_class[0] == pytest.approx(1.0)  # the hit ranks first: AP is still 1
    assert per_class[1] is None
    assert ev.mean() == pytest.approx(1.0)
    ev2 = DetectionEval(num_classes=1)
    ev2.update(dets[[1, 0]], np.array([0.9, 0.8]), np.zeros(2, int), truth, np.array([0]))
    # IoU of the 0.9 box is 9/11 >= 0.5: it is the hit, the 0.8 one the duplicate
    assert ev2.per_class() == [pytest.approx(1.0)]
    ev3 = DetectionEval(num_classes=1, iou_threshold=0.95)
    ev3.update(dets[[1, 0]], np.array([0.9, 0.8]), np.zeros(2, int), truth, np.array([0]))
    assert ev3.per_class() == [pytest.approx(0.5)]  # miss first, then the hit: P = 1/2


def _gt(rows: list[tuple[int, int, float]]) -> GroundTruth:
    """(track id, class, x) -> boxes on one row."""
    return GroundTruth(
        np.array([box(x, 0) for _, _, x in rows], np.float32).reshape(-1, 4),
        np.array([c for _, c, _ in rows], dtype=int),
        np.array([t for t, _, _ in rows], dtype=int),
        [""] * len(rows),
        np.full(len(rows), -1),
    )


def test_tracking_perfect_and_with_a_switch() -> None:
    perfect, switched = TrackingEval(), TrackingEval()
    for f in range(6):
        truth = _gt([(1, VEHICLE, 10.0 * f), (2, PEDESTRIAN, 200.0)])
        boxes = truth.boxes_xyxy.copy()
        perfect.update(truth, boxes, truth.class_id, np.array([7, 8]))
        # the vehicle's hypothesis id changes halfway
        switched.update(truth, boxes, truth.class_id, np.array([7 if f < 3 else 9, 8]))
    p = perfect.summary()
    assert p["vehicle"]["mota"] == pytest.approx(1.0) and p["OVERALL"]["idf1"] == pytest.approx(1)
    s = switched.summary()
    assert s["vehicle"]["num_switches"] == 1
    assert s["vehicle"]["idf1"] == pytest.approx(0.5)
    assert s["pedestrian"]["idf1"] == pytest.approx(1.0)


def test_tracking_counts_misses_and_false_positives() -> None:
    ev = TrackingEval()
    truth = _gt([(1, VEHICLE, 0.0)])
    ev.update(truth, np.array([box(300, 0)], np.float32), np.array([VEHICLE]), np.array([4]))
    row = ev.summary()["vehicle"]
    assert row["num_misses"] == 1 and row["num_false_positives"] == 1
    assert row["mota"] == pytest.approx(-1.0)


def test_held_out_scenes_are_distinct_720p() -> None:
    scenes = held_out_scenes(6, duration_s=2.0)
    assert len({s.seed for s in scenes}) == 6
    assert all((s.width, s.height, s.duration_s) == (1280, 720, 2.0) for s in scenes)


def test_scenes_with_reused_ids_need_their_own_offsets() -> None:
    # two scenes, each with object 1 tracked as 0: the same ids mean different objects
    mixed, apart = TrackingEval(), TrackingEval()
    for scene, x in enumerate((0.0, 500.0)):
        for f in range(4):
            truth = _gt([(1, VEHICLE, x + f)])
            hyp_ids = np.array([0])
            mixed.update(
                truth, truth.boxes_xyxy, truth.class_id, hyp_ids if scene == 0 else np.array([5])
            )
            apart.update(truth, truth.boxes_xyxy, truth.class_id, hyp_ids, id_offset=scene * 100)
    assert apart.summary()["vehicle"]["idf1"] == pytest.approx(1.0)
    # without offsets, truth id 1 of scene 2 is taken for scene 1's object: IDF1 drops
    assert mixed.summary()["vehicle"]["idf1"] == pytest.approx(0.5)


def test_shipped_models_have_the_documented_layout_and_find_objects() -> None:
    import onnx
    import yaml

    from edgetier.pipeline import package_models_dir
    from edgetier.synthetic._quality import ColourEval, OnnxDetector
    from edgetier.synthetic._scene import CLASS_NAMES, COLOUR_NAMES, SceneConfig, SyntheticScene

    models = package_models_dir()
    card = yaml.safe_load((models / "detector.yaml").read_text())
    assert card["names"] == list(CLASS_NAMES) and card["layout"] == "yolov8"
    h, w = card["input_size"]
    graph = onnx.load(str(models / "detector.onnx")).graph
    out_dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:]
    assert out_dims == [4 + len(CLASS_NAMES), (h // 8) * (w // 8) + (h // 16) * (w // 16)]
    assert yaml.safe_load((models / "colour.yaml").read_text())["names"] == list(COLOUR_NAMES)

    scene = SyntheticScene(SceneConfig(seed=1_000_123, duration_s=1.0))
    frame = scene.frame(15)
    boxes, scores, cls = OnnxDetector(models / "detector.onnx")(frame.image, confidence=0.3)
    ev = DetectionEval()
    ev.update(boxes, scores, cls, frame.truth.boxes_xyxy, frame.truth.class_id)
    found = [ap for ap in ev.per_class() if ap is not None]
    assert found and min(found) > 0.5  # a trained detector, not random weights
    colour = ColourEval(models / "colour.onnx")
    colour.update(frame.image, frame.truth)
    assert colour.accuracy is not None and colour.accuracy > 0.5
