"""Line crossings, zones and speed on hand-made tracks and on synthetic ground truth."""

from __future__ import annotations

import numpy as np

from edgetier.pipeline import LineCounter, SpeedEstimator, ZoneMonitor
from edgetier.pipeline._analytics import anchor_points
from edgetier.synthetic import SceneConfig, SyntheticScene
from edgetier.synthetic import line_crossings as truth_crossings


def _feed(counter: LineCounter, track: list[tuple[float, float]], tid: int = 1) -> list[str]:
    out = []
    for x, y in track:
        out += [d for _, d in counter.update(np.array([tid]), np.array([[x, y]], float))]
    return out


def test_line_crossing_directions_and_counts() -> None:
    line = LineCounter(start=(50, 0), end=(50, 100))  # drawn top to bottom
    assert _feed(line, [(10, 50), (40, 50), (60, 50), (90, 50)]) == ["in"]  # left -> right
    assert _feed(line, [(90, 20), (50, 20), (30, 20)], tid=2) == ["out"]  # touches, then crosses
    assert (line.count_in, line.count_out) == (1, 1)


def test_motion_outside_the_segment_is_not_a_crossing() -> None:
    line = LineCounter(start=(50, 0), end=(50, 100))
    assert _feed(line, [(10, 150), (90, 150)]) == []  # passes below the segment's end
    assert _feed(line, [(90, 50), (10, 50), (90, 50)], tid=3) == ["out", "in"]


def test_untracked_detections_are_ignored() -> None:
    line = LineCounter(start=(50, 0), end=(50, 100))
    assert line.update(np.array([-1]), np.array([[10.0, 50]])) == []
    assert line.update(np.array([-1]), np.array([[90.0, 50]])) == []


def test_counts_match_synthetic_ground_truth() -> None:
    scene = SyntheticScene(SceneConfig(width=320, height=192, duration_s=6, fps=10, seed=3))
    frames = list(scene)
    (a, b) = scene.lines_px[0]
    expected = truth_crossings(frames, (a, b))
    counter = LineCounter(start=a, end=b)
    got = []
    for f in frames:
        keep = np.isin(f.truth.class_id, [0, 1])
        points = anchor_points(f.truth.boxes_xyxy[keep].astype(float), "center")
        got += counter.update(f.truth.track_id[keep], points)
    assert len(expected) > 0
    assert sorted(got) == sorted((c.track_id, c.direction) for c in expected)


def test_zone_occupancy_and_dwell() -> None:
    zone = ZoneMonitor(polygon=[(0, 0), (10, 0), (10, 10), (0, 10)], grace_s=1.0)
    entered, left = zone.update(np.array([1, 2]), np.array([[5.0, 5], [20, 20]]), 0.0)
    assert entered == [1] and left == [] and zone.occupancy == 1
    entered, left = zone.update(np.array([1, 2]), np.array([[5.0, 5], [5, 5]]), 1.0)
    assert entered == [2] and zone.occupancy == 2
    entered, left = zone.update(np.array([1, 2]), np.array([[50.0, 5], [5, 5]]), 2.5)
    assert left == [(1, 2.5)] and zone.occupancy == 1
    _, left = zone.update(np.array([], int), np.empty((0, 2)), 4.0)  # 2 unseen for 3 s
    assert left == [(2, 1.5)] and zone.occupancy == 0


def test_speed_from_pixels_per_metre() -> None:
    est = SpeedEstimator(pixels_per_metre=10.0, window_s=0.5)
    speeds = []
    for i in range(11):  # 100 px/s = 10 m/s = 36 km/h
        t = i * 0.1
        speeds.append(est.update(np.array([7]), np.array([[100.0 * t, 0.0]]), t)[0])
    assert np.isnan(speeds[0])
    np.testing.assert_allclose(speeds[-1], 36.0, rtol=1e-6)


def test_line_counter_memory_is_bounded_over_10000_track_ids() -> None:
    """A stream sees a new id every frame; only the recent ones stay remembered."""
    counter = LineCounter(start=(50, 0), end=(50, 100), forget_after=100)
    for tid in range(10_000):
        counter.update(np.array([tid]), np.array([[40.0, 50.0]]))
    assert counter.tracked <= 100 + 32  # pruned every 32 updates
    # a track still in view keeps its side and is counted when it crosses
    counter.update(np.array([9_999]), np.array([[60.0, 50.0]]))
    assert counter.count_in + counter.count_out == 1


def test_zone_polygon_test_matches_the_even_odd_rule() -> None:
    from edgetier.pipeline._analytics import points_in_polygon

    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    notch = np.array([[0, 0], [10, 0], [10, 10], [5, 5], [0, 10]], float)  # concave
    points = np.array([[5, 2], [5, 8], [-1, 5], [11, 5], [2, 7]], float)
    assert points_in_polygon(points, square).tolist() == [True, True, False, False, True]
    assert points_in_polygon(points, notch).tolist() == [True, False, False, False, True]
    assert points_in_polygon(np.empty((0, 2)), square).shape == (0,)
