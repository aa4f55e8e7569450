"""Analytics on tracked objects: line crossings with direction, zones with dwell, speed.

Pure numpy state machines keyed by track id, one set per stream. Directions follow the
synthetic scenes' ground truth (`line_crossings`): with the line drawn from `start` to
`end`, `in` ends on the side where (end - start) x (p - start) < 0, i.e. the left of the
directed line as seen on the image (y down). For a line drawn top to bottom, `in` is a
move from left to right.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float]


def anchor_points(xyxy: np.ndarray, anchor: str) -> np.ndarray:
    """Reference point of each box: `center` or `bottom_center` ([N, 2])."""
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = (xyxy[:, 1] + xyxy[:, 3]) / 2 if anchor == "center" else xyxy[:, 3]
    return np.stack([x, y], axis=1) if len(xyxy) else np.empty((0, 2))


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Which of ``points`` ([N, 2]) lie inside ``polygon`` ([K, 2]), by the even-odd rule."""
    if not len(points):
        return np.empty(0, bool)
    x, y = points[:, :1], points[:, 1:2]
    xi, yi = polygon[:, 0], polygon[:, 1]
    xj, yj = np.roll(xi, 1), np.roll(yi, 1)
    straddles = (yi > y) != (yj > y)  # the edge spans the point's height
    dy = np.where(yj == yi, 1.0, yj - yi)  # only used where the edge straddles (dy != 0)
    x_cross = xi + (xj - xi) * (y - yi) / dy
    inside: np.ndarray = (np.count_nonzero(straddles & (x < x_cross), axis=1) % 2) == 1
    return inside


def _cross(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    cross: np.ndarray = (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])
    return cross


@dataclass
class LineCounter:
    """Counts tracks whose reference point crosses the segment start-end.

    It remembers each track's last side; a track unseen for ``forget_after`` updates
    (frames) is forgotten, so memory follows the tracks in view, not every id a stream
    ever had (a tracker drops a lost track long before that).
    """

    start: Point
    end: Point
    count_in: int = 0
    count_out: int = 0
    forget_after: int = 300
    _last: dict[int, tuple[float, np.ndarray, int]] = field(default_factory=dict)
    _updates: int = 0

    @property
    def tracked(self) -> int:
        """Tracks whose side is remembered."""
        return len(self._last)

    def update(self, track_ids: np.ndarray, points: np.ndarray) -> list[tuple[int, str]]:
        """Feed one frame's tracks; returns (track id, 'in' | 'out') for each crossing."""
        self._updates += 1
        now = self._updates
        if now % 32 == 0:
            self._forget_older_than(now - self.forget_after)
        a, b = np.asarray(self.start, float), np.asarray(self.end, float)
        sides = np.sign(_cross(a, b, points)) if len(points) else np.empty(0)
        crossings: list[tuple[int, str]] = []
        for tid, side, point in zip(track_ids.tolist(), sides.tolist(), points, strict=True):
            if tid < 0:
                continue
            prev = self._last.get(tid)
            if side == 0:  # on the line: keep the side it came from
                if prev is not None:
                    self._last[tid] = (prev[0], point, now)
                continue
            if prev is not None and prev[0] != side and self._segment_hits(a, b, prev[1], point):
                direction = "in" if side < 0 else "out"
                if direction == "in":
                    self.count_in += 1
                else:
                    self.count_out += 1
                crossings.append((tid, direction))
            self._last[tid] = (side, point, now)
        return crossings

    @staticmethod
    def _segment_hits(a: np.ndarray, b: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> bool:
        """Does the motion p0 -> p1 pass between the line's end points?"""
        s_a = _cross(p0, p1, a)
        s_b = _cross(p0, p1, b)
        return bool(s_a * s_b <= 0)

    def _forget_older_than(self, update: int) -> None:
        for tid in [t for t, (_, _, seen) in self._last.items() if seen < update]:
            del self._last[tid]


@dataclass
class ZoneMonitor:
    """Occupancy of a polygon and the dwell time of each track that leaves it."""

    polygon: list[Point]
    grace_s: float = 1.0  # a track unseen this long while inside is counted as gone
    _inside: dict[int, list[float]] = field(default_factory=dict)  # tid -> [enter, last seen]

    def __post_init__(self) -> None:
        self._polygon = np.asarray(self.polygon, float)

    @property
    def occupancy(self) -> int:
        return len(self._inside)

    def update(
        self, track_ids: np.ndarray, points: np.ndarray, ts_s: float
    ) -> tuple[list[int], list[tuple[int, float]]]:
        """Returns (tracks that entered, [(track, dwell_s)] of tracks that left)."""
        inside = points_in_polygon(points, self._polygon)
        seen = {int(t) for t in track_ids.tolist() if t >= 0}
        entered: list[int] = []
        left: list[tuple[int, float]] = []
        for tid, is_in in zip(track_ids.tolist(), inside.tolist(), strict=True):
            if tid < 0:
                continue
            if is_in:
                if tid not in self._inside:
                    self._inside[tid] = [ts_s, ts_s]
                    entered.append(tid)
                else:
                    self._inside[tid][1] = ts_s
            elif tid in self._inside:
                enter_s, _ = self._inside.pop(tid)
                left.append((tid, ts_s - enter_s))
        for tid in [t for t, (_, last) in self._inside.items() if t not in seen]:
            enter_s, last_s = self._inside[tid]
            if ts_s - last_s > self.grace_s:
                del self._inside[tid]
                left.append((tid, last_s - enter_s))
        return entered, left


@dataclass
class SpeedEstimator:
    """Speed of each track from its displacement over `window_s`, in km/h."""

    pixels_per_metre: float
    window_s: float = 0.5
    _history: dict[int, deque[tuple[float, float, float]]] = field(default_factory=dict)

    def update(self, track_ids: np.ndarray, points: np.ndarray, ts_s: float) -> np.ndarray:
        speeds = np.full(len(track_ids), np.nan, dtype=np.float32)
        for i, (tid, (x, y)) in enumerate(zip(track_ids.tolist(), points.tolist(), strict=True)):
            if tid < 0:
                continue
            hist = self._history.setdefault(tid, deque())
            hist.append((ts_s, x, y))
            while len(hist) > 2 and ts_s - hist[1][0] >= self.window_s:
                hist.popleft()
            t0, x0, y0 = hist[0]
            dt = ts_s - t0
            if dt >= self.window_s / 2:
                metres = float(np.hypot(x - x0, y - y0)) / self.pixels_per_metre
                speeds[i] = metres / dt * 3.6
        stale = [t for t, h in self._history.items() if ts_s - h[-1][0] > 5 * self.window_s + 5]
        for tid in stale:
            del self._history[tid]
        return speeds
