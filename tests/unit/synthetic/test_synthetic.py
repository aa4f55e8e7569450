"""Synthetic scenes: determinism, exact truth, crossings, config checks, video round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetier.errors import ConfigError
from edgetier.synthetic._scene import (
    PEDESTRIAN,
    PLATE,
    VEHICLE,
    GroundTruth,
    SceneConfig,
    SyntheticFrame,
    SyntheticScene,
    line_crossings,
    write_video,
)

SMALL = {"width": 320, "height": 180, "fps": 10.0, "duration_s": 3.0}


def small(**kw: object) -> SyntheticScene:
    return SyntheticScene(SceneConfig(**{**SMALL, **kw}))  # type: ignore[arg-type]


def truth_equal(a: GroundTruth, b: GroundTruth) -> bool:
    return (
        np.array_equal(a.boxes_xyxy, b.boxes_xyxy)
        and np.array_equal(a.track_id, b.track_id)
        and np.array_equal(a.class_id, b.class_id)
        and a.plate_text == b.plate_text
        and np.array_equal(a.colour_id, b.colour_id)
    )


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    a, b, c = small(seed=5), small(seed=5), small(seed=6)
    assert len(a) == 30
    for i in (0, 13, 29):
        fa, fb, fc = a.frame(i), b.frame(i), c.frame(i)
        assert np.array_equal(fa.image, fb.image)
        assert truth_equal(fa.truth, fb.truth)
        assert not np.array_equal(fa.image, fc.image)
    # random access and iteration agree
    assert np.array_equal(next(iter(a)).image, a.frame(0).image)


def test_frames_have_the_configured_shape_and_times() -> None:
    scene = small(seed=1)
    frames = list(scene)
    assert [f.index for f in frames] == list(range(30))
    assert frames[3].timestamp_s == pytest.approx(0.3)
    assert all(f.image.shape == (180, 320, 3) and f.image.dtype == np.uint8 for f in frames)


def test_boxes_lie_in_the_frame_and_fit_the_drawn_pixels() -> None:
    scene = small(seed=3, width=640, height=360, vehicles=8, pedestrians=6)
    background = scene._background
    tight_checked = 0
    for i in range(0, len(scene), 3):
        image, truth = scene._render(i, noise=False)
        boxes = truth.boxes_xyxy
        assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 2] <= 640)
        assert np.all(boxes[:, 1] >= 0) and np.all(boxes[:, 3] <= 360)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        changed = np.any(image != background, axis=2)
        covered = np.zeros_like(changed)
        for x1, y1, x2, y2 in boxes.astype(int):
            covered[y1:y2, x1:x2] = True
        # what changed is the objects: nearly all of it inside truth boxes (the rest belongs
        # to objects too hidden or too far out of the frame to count as truth)
        assert changed[~covered].sum() <= 0.05 * max(changed.sum(), 1)
        for (x1, y1, x2, y2), vis, cls in zip(
            boxes.astype(int), truth.visibility, truth.class_id, strict=True
        ):
            if vis < 1.0 or cls == PLATE:
                continue
            inside = changed[y1:y2, x1:x2]
            # a tight box: drawn pixels touch all four of its sides
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            tight_checked += 1
    assert tight_checked > 10


def test_plates_belong_to_visible_vehicles_and_share_their_text() -> None:
    scene = small(seed=4, width=640, height=360, vehicles=8)
    plates_seen = 0
    for frame in scene:
        t = frame.truth
        for row in np.flatnonzero(t.class_id == PLATE):
            parent = np.flatnonzero(t.track_id == t.parent_id[row])
            assert len(parent) == 1 and t.class_id[parent[0]] == VEHICLE
            assert t.plate_text[row] == t.plate_text[parent[0]] and len(t.plate_text[row]) == 7
            px1, py1, px2, py2 = t.boxes_xyxy[row]
            vx1, vy1, vx2, vy2 = t.boxes_xyxy[parent[0]]
            assert vx1 <= px1 and vy1 <= py1 and px2 <= vx2 and py2 <= vy2
            plates_seen += 1
        assert np.all(t.colour_id[t.class_id == VEHICLE] >= 0)
        assert np.all(t.colour_id[t.class_id != VEHICLE] == -1)
    assert plates_seen > 0
    assert not any(PLATE in f.truth.class_id for f in small(seed=4, plates=False))


def test_tracks_move_steadily_and_come_and_go() -> None:
    scene = SyntheticScene(SceneConfig(width=640, height=360, fps=10.0, duration_s=12.0, seed=2))
    centres: dict[int, list[tuple[int, float]]] = {}
    for frame in scene:
        t = frame.truth
        for box, tid, cls in zip(t.boxes_xyxy, t.track_id, t.class_id, strict=True):
            if cls == VEHICLE:
                centres.setdefault(int(tid), []).append((frame.index, (box[0] + box[2]) / 2))
    assert len(centres) >= 4
    first = {tid: pts[0][0] for tid, pts in centres.items()}
    last = {tid: pts[-1][0] for tid, pts in centres.items()}
    assert any(f > 0 for f in first.values()) and any(v < len(scene) - 1 for v in last.values())
    for pts in centres.values():
        steps = np.diff([x for _, x in pts])
        steps = steps[np.abs(steps) > 1e-6]
        # one direction only (the clipped centre may stall at an edge, never turn back)
        assert np.all(steps > 0) or np.all(steps < 0)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("width", 10, "width: must be >= 160, got 10"),
        ("height", 5000, "height: must be <= 4320, got 5000"),
        ("fps", 0.0, "fps: must be >= 1.0, got 0.0"),
        ("duration_s", 0.0, "duration_s: must be > 0.0, got 0.0"),
        ("vehicles", -1, "vehicles: must be >= 0, got -1"),
        ("pedestrians", 99, "pedestrians: must be <= 64, got 99"),
        ("seed", -3, "seed: must be >= 0, got -3"),
        ("lines", (((0.5, 0.2), (1.5, 0.9)),), r"lines\[0\]\[1\]\[0\]: must be <= 1.0, got 1.5"),
        ("lines", (((0.5, 0.2),),), r"lines\[0\]\[1\]: required field is missing"),
        ("lines", (((0.5, 0.2), (0.5, 0.2)),), r"lines\[0\]: must join two distinct points"),
        ("width", 640.5, "width: must be an integer, got 640.5"),
    ],
)
def test_config_errors_name_the_field_and_limit(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SceneConfig(**{field: value})  # type: ignore[arg-type]


def test_ground_truth_checks_its_arrays() -> None:
    with pytest.raises(ValueError, match="track_id must have 1 entries, got 2"):
        GroundTruth(
            np.zeros((1, 4), np.float32), np.zeros(1, int), np.zeros(2, int), [""], np.zeros(1, int)
        )
    dets = small(seed=1).frame(5).truth.to_detections()
    assert len(dets) == len(small(seed=1).frame(5).truth)
    assert set(dets.data) == {"class_name", "plate_text", "colour_id"}


def _truth(rows: list[tuple[int, int, float, float]]) -> GroundTruth:
    """rows: (track id, class id, centre x, centre y) -> 10x10 boxes."""
    if not rows:
        return GroundTruth.empty()
    boxes = np.array([[x - 5, y - 5, x + 5, y + 5] for _, _, x, y in rows], np.float32)
    return GroundTruth(
        boxes,
        np.array([c for _, c, _, _ in rows]),
        np.array([t for t, _, _, _ in rows]),
        [""] * len(rows),
        np.full(len(rows), -1),
    )


def test_line_crossings_on_hand_made_tracks() -> None:
    line = ((50.0, 0.0), (50.0, 100.0))  # vertical, pointing down
    frames = [
        _truth(
            [
                (1, VEHICLE, 20, 40),
                (2, PEDESTRIAN, 80, 60),
                (3, VEHICLE, 20, 150),
                (4, VEHICLE, 10, 20),
                (5, PLATE, 20, 40),
            ]
        ),
        _truth(
            [
                (1, VEHICLE, 40, 40),
                (2, PEDESTRIAN, 60, 60),
                (3, VEHICLE, 40, 150),
                (5, PLATE, 40, 40),
            ]
        ),
        _truth(
            [
                (1, VEHICLE, 60, 40),
                (2, PEDESTRIAN, 40, 60),
                (3, VEHICLE, 60, 150),
                (5, PLATE, 60, 40),
            ]
        ),  # track 4 is hidden here
        _truth([(1, VEHICLE, 70, 40), (4, VEHICLE, 90, 20)]),
        _truth([(1, VEHICLE, 45, 40)]),
    ]
    got = {(c.track_id, c.frame, c.direction, c.class_id) for c in line_crossings(frames, line)}
    # rightwards across a downward line is "in" (sv.LineZone's sense)
    # 1 crosses rightwards at frame 2 and back at 4; 2 leftwards at 2; 3 passes below the
    # segment's end (no crossing); 4 crosses while unseen and counts when it reappears;
    # the plate (class 2) is not counted by default
    assert got == {
        (1, 2, "in", VEHICLE),
        (1, 4, "out", VEHICLE),
        (2, 2, "out", PEDESTRIAN),
        (4, 3, "in", VEHICLE),
    }
    plates = line_crossings(frames, line, class_ids=None)
    assert (5, 2, "in", PLATE) in {(c.track_id, c.frame, c.direction, c.class_id) for c in plates}


def test_line_crossing_directions_agree_with_supervision_linezone() -> None:
    sv = pytest.importorskip("supervision")
    scene = SyntheticScene(SceneConfig(width=640, height=360, fps=10.0, duration_s=15.0, seed=9))
    frames = list(scene)
    (line,) = scene.lines_px
    crossings = line_crossings(frames, line)
    zone = sv.LineZone(
        start=sv.Point(*line[0]),
        end=sv.Point(*line[1]),
        triggering_anchors=[sv.Position.CENTER],
    )
    for f in frames:
        dets = f.truth.select(np.isin(f.truth.class_id, (VEHICLE, PEDESTRIAN))).to_detections()
        zone.trigger(dets)
    assert len(crossings) > 0
    assert zone.in_count == sum(c.direction == "in" for c in crossings)
    assert zone.out_count == sum(c.direction == "out" for c in crossings)


def test_crossing_frames_are_scene_indices() -> None:
    scene = small(seed=11, duration_s=8.0)
    frames: list[SyntheticFrame] = list(scene)[10:]  # index no longer equals position
    crossings = line_crossings(frames, scene.lines_px[0])
    assert all(c.frame >= 10 for c in crossings)


def test_write_video_round_trip(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    scene = small(seed=2, duration_s=1.0)
    path = write_video(scene, tmp_path / "scene.mp4")
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(scene)
    assert decoded[0].shape == (180, 320, 3)
    # the picture survives encoding (and RGB stays RGB)
    assert np.abs(decoded[5].astype(int) - scene.frame(5).image.astype(int)).mean() < 12


def test_write_video_mpeg4_and_odd_sizes(tmp_path: Path) -> None:
    pytest.importorskip("av")
    scene = small(seed=2, duration_s=0.5)
    assert write_video(scene, tmp_path / "a.mp4", codec="mpeg4").stat().st_size > 0
    with pytest.raises(ConfigError, match="width and height must be even"):
        write_video(small(width=321), tmp_path / "b.mp4")
    with pytest.raises(ConfigError, match="codec must be an encoder"):
        write_video(scene, tmp_path / "c.mp4", codec="no-such-codec")
