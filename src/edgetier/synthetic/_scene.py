"""Synthetic road scenes with exact ground truth: vehicles, pedestrians and licence plates.

A scene is planned once from its seed (who enters where, when and how fast); every frame is
then a pure function of its index, so frames can be drawn in any order and a seed always
gives the same video. Each frame carries exact boxes, track ids, classes, plate texts and
vehicle colours; :func:`line_crossings` gives the exact line crossings of the tracks.

    scene = SyntheticScene(SceneConfig(duration_s=5.0, seed=7))
    for frame in scene:
        print(frame.index, len(frame.truth.boxes_xyxy))
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from edgetier.errors import ConfigError, MissingExtraError
from edgetier.synthetic import _art as art
from edgetier.synthetic._config import ROAD_BOTTOM_Y, ROAD_TOP_Y, SceneConfig

if TYPE_CHECKING:
    import supervision as sv

log = logging.getLogger("edgetier.synthetic")

__all__ = [
    "CLASS_NAMES",
    "COLOUR_NAMES",
    "Crossing",
    "GroundTruth",
    "SceneConfig",
    "SyntheticFrame",
    "SyntheticScene",
    "line_crossings",
    "write_video",
]

CLASS_NAMES: tuple[str, ...] = ("vehicle", "pedestrian", "plate")
VEHICLE, PEDESTRIAN, PLATE = 0, 1, 2
COLOUR_NAMES = art.COLOUR_NAMES
MIN_VISIBILITY = 0.2  # an object less visible than this (occluded or off-frame) is not truth
MIN_PLATE_VISIBILITY = 0.7  # a plate is truth only while almost all of it shows

Point = tuple[float, float]
Line = tuple[Point, Point]


def _int_array(values: object) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


@dataclass(frozen=True)
class GroundTruth:
    """Exact truth of one frame, as parallel arrays (supervision style).

    Vehicles carry their plate's text and their colour id; a plate row carries its text and
    `parent_id`, the track id of its vehicle. `visibility` is the share of the object's
    pixels that shows (not occluded, inside the frame).
    """

    boxes_xyxy: np.ndarray
    class_id: np.ndarray
    track_id: np.ndarray
    plate_text: list[str]
    colour_id: np.ndarray
    parent_id: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    visibility: np.ndarray = field(default_factory=lambda: np.empty(0, np.float32))

    def __post_init__(self) -> None:
        n = len(self.boxes_xyxy)
        if self.boxes_xyxy.shape != (n, 4):
            raise ValueError(f"boxes_xyxy must be [N, 4], got {list(self.boxes_xyxy.shape)}")
        if n and not len(self.parent_id):
            object.__setattr__(self, "parent_id", np.full(n, -1, np.int64))
        if n and not len(self.visibility):
            object.__setattr__(self, "visibility", np.ones(n, np.float32))
        for name in ("class_id", "track_id", "plate_text", "colour_id", "parent_id", "visibility"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have {n} entries, got {len(getattr(self, name))}")

    def __len__(self) -> int:
        return len(self.boxes_xyxy)

    @classmethod
    def empty(cls) -> GroundTruth:
        return cls(np.empty((0, 4), np.float32), _int_array([]), _int_array([]), [], _int_array([]))

    def select(self, keep: np.ndarray) -> GroundTruth:
        """The rows where the boolean mask (or index array) `keep` holds."""
        idx = np.arange(len(self))[keep]
        return GroundTruth(
            self.boxes_xyxy[idx],
            self.class_id[idx],
            self.track_id[idx],
            [self.plate_text[i] for i in idx],
            self.colour_id[idx],
            self.parent_id[idx],
            self.visibility[idx],
        )

    def to_detections(self) -> sv.Detections:
        """The truth as `sv.Detections` (confidence 1, tracker ids = track ids)."""
        try:
            import supervision as sv
        except ImportError as exc:  # pragma: no cover - supervision is in the video extra
            raise MissingExtraError("supervision", "video") from exc
        return sv.Detections(
            xyxy=self.boxes_xyxy.astype(np.float32),
            confidence=np.ones(len(self), np.float32),
            class_id=self.class_id.copy(),
            tracker_id=self.track_id.copy(),
            data={
                "class_name": np.array([CLASS_NAMES[c] for c in self.class_id]),
                "plate_text": np.array(self.plate_text, dtype=str),
                "colour_id": self.colour_id.copy(),
            },
        )


@dataclass(frozen=True)
class SyntheticFrame:
    """One frame: `image` is [H, W, 3] uint8 RGB."""

    index: int
    timestamp_s: float
    image: np.ndarray
    truth: GroundTruth


@dataclass(frozen=True, slots=True)
class Crossing:
    """A track's reference point (its box centre) crossed a line between two frames.

    `direction` is "in" when the point moves to the right of the line's direction (a
    negative cross product, as `sv.LineZone` counts "in"), "out" the other way. `frame` is
    the first frame on the new side.
    """

    track_id: int
    frame: int
    direction: Literal["in", "out"]
    class_id: int


@dataclass(slots=True)
class _Actor:
    track_id: int
    class_id: int
    t_enter_s: float
    t_exit_s: float
    speed_px_s: float
    path: np.ndarray  # [K, 2] waypoints of the anchor, pixels
    cum_len: np.ndarray  # [K] cumulative path length
    ground_y: float = 0.0
    colour_id: int = -1
    plate_text: str = ""
    style: dict[str, object] | None = None
    sprite: art.Sprite | None = None
    extra_seed: int = 0

    def anchor(self, t: float) -> tuple[float, float]:
        s = (t - self.t_enter_s) * self.speed_px_s
        return (
            float(np.interp(s, self.cum_len, self.path[:, 0])),
            float(np.interp(s, self.cum_len, self.path[:, 1])),
        )


def _path(points: Sequence[Point]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(points, dtype=np.float64)
    seg = np.hypot(*np.diff(p, axis=0).T)
    return p, np.concatenate([[0.0], np.cumsum(seg)])


class SyntheticScene:
    """A deterministic road scene; iterate it for frames or call :meth:`frame`."""

    _POSES = 8  # walking poses per pedestrian (sprites are cached per pose)

    def __init__(self, config: SceneConfig) -> None:
        self.config = config
        w, h = config.width, config.height
        rng = np.random.default_rng([config.seed, 1])
        self._background = art.background(rng, w, h)
        self._noise = art.noise_pool(rng, w, h)
        self._actors = self._plan(np.random.default_rng([config.seed, 2]))
        self._enter = np.array([a.t_enter_s for a in self._actors])
        self._exit = np.array([a.t_exit_s for a in self._actors])
        self._pose_cache: dict[tuple[int, int], art.Sprite] = {}

    def __len__(self) -> int:
        return self.config.frame_count

    def __iter__(self) -> Iterator[SyntheticFrame]:
        for i in range(len(self)):
            yield self.frame(i)

    @property
    def lines_px(self) -> tuple[tuple[tuple[float, float], tuple[float, float]], ...]:
        """The config's counting lines in pixels of this scene."""
        w, h = self.config.width, self.config.height
        return tuple(
            ((x1 * w, y1 * h), (x2 * w, y2 * h)) for (x1, y1), (x2, y2) in self.config.lines
        )

    # -- planning ------------------------------------------------------------------------
    def _plan(self, rng: np.random.Generator) -> list[_Actor]:
        cfg = self.config
        actors: list[_Actor] = []
        next_id = iter(range(1, 1_000_000))
        self._plan_vehicles(rng, actors, next_id)
        self._plan_pedestrians(rng, actors, next_id)
        return [a for a in actors if a.t_exit_s >= 0.0 and a.t_enter_s <= cfg.duration_s]

    def _plan_vehicles(
        self, rng: np.random.Generator, actors: list[_Actor], next_id: Iterator[int]
    ) -> None:
        cfg = self.config
        w, h = cfg.width, cfg.height
        if cfg.vehicles == 0:
            return
        mean_speed = 0.42 * h
        mean_time_s = (w + 0.3 * h) / mean_speed
        rate_per_lane = cfg.vehicles / mean_time_s / art.LANES
        gap_px = 0.04 * w
        for lane in range(art.LANES):
            rightward = lane >= art.LANES // 2
            ground_y = (ROAD_TOP_Y + (lane + 0.82) * art.LANE_H) * h
            t = -2.0 * mean_time_s * rng.uniform(0.5, 1.0)
            prev: tuple[float, float, float] | None = None  # (t_enter, speed, length)
            while t < cfg.duration_s:
                t += rng.exponential(1.0 / rate_per_lane)
                track_id = next(next_id)
                kind = art.VEHICLE_KINDS[int(rng.choice(4, p=[0.55, 0.2, 0.15, 0.1]))]
                colour_id = int(rng.integers(len(art.COLOUR_NAMES)))
                text = art.random_plate_text(rng) if cfg.plates else ""
                if cfg.plates:
                    next(next_id)  # the plate's track id is the vehicle's + 1
                sprite = art.vehicle_sprite(
                    np.random.default_rng([cfg.seed, 3, track_id]),
                    frame_h=h,
                    kind=kind,
                    colour=art.vehicle_colour(rng, colour_id),
                    plate_text=text or None,
                    facing_right=rightward,
                )
                length = sprite.rgb.shape[1]
                speed = rng.uniform(0.25, 0.6) * h
                if prev is not None:
                    p_enter, p_speed, p_len = prev
                    t = max(t, p_enter + (p_len + gap_px) / p_speed)  # room to enter
                    p_gone = p_enter + (w + p_len) / p_speed  # leader's rear leaves
                    if speed > p_speed and speed * (p_gone - t) > w - gap_px:
                        speed = p_speed  # would catch up in view: keep the leader's pace
                travel = w + length
                path = ((-length, ground_y), (w, ground_y))
                if not rightward:
                    path = ((w, ground_y), (-length, ground_y))
                pts, cum = _path(path)
                actors.append(
                    _Actor(
                        track_id=track_id,
                        class_id=VEHICLE,
                        t_enter_s=t,
                        t_exit_s=t + travel / speed,
                        speed_px_s=speed,
                        path=pts,
                        cum_len=cum,
                        ground_y=ground_y,
                        colour_id=colour_id,
                        plate_text=text,
                        sprite=sprite,
                    )
                )
                prev = (t, speed, float(length))

    def _plan_pedestrians(
        self, rng: np.random.Generator, actors: list[_Actor], next_id: Iterator[int]
    ) -> None:
        cfg = self.config
        w, h = cfg.width, cfg.height
        if cfg.pedestrians == 0:
            return
        mean_speed = 0.2 * h
        mean_time_s = (w + 0.5 * h) / mean_speed
        rate = cfg.pedestrians / mean_time_s
        top_y = (art.HORIZON_Y + 0.08, ROAD_TOP_Y - 0.005)
        bottom_y = (ROAD_BOTTOM_Y + 0.1, 0.985)
        t = -2.0 * mean_time_s
        while True:
            t += rng.exponential(1.0 / rate)
            if t > cfg.duration_s:
                break
            style = art.pedestrian_style(rng, h)
            margin = float(style["height"])  # type: ignore[arg-type]
            starts_left = rng.random() < 0.5
            x_in, x_out = (-margin, w + margin) if starts_left else (w + margin, -margin)
            starts_top = rng.random() < 0.5
            ya = rng.uniform(*top_y) * h
            yb = rng.uniform(*bottom_y) * h
            y_from, y_to = (ya, yb) if starts_top else (yb, ya)
            if rng.random() < 0.6:  # cross the road somewhere
                xc = rng.uniform(0.1, 0.9) * w
                points: list[Point] = [(x_in, y_from), (xc, y_from), (xc, y_to), (x_out, y_to)]
            else:
                points = [(x_in, y_from), (x_out, y_from)]
            pts, cum = _path(points)
            speed = rng.uniform(0.14, 0.26) * h
            actors.append(
                _Actor(
                    track_id=next(next_id),
                    class_id=PEDESTRIAN,
                    t_enter_s=t,
                    t_exit_s=t + cum[-1] / speed,
                    speed_px_s=speed,
                    path=pts,
                    cum_len=cum,
                    style=style,
                )
            )

    # -- drawing -------------------------------------------------------------------------
    def _sprite(self, actor: _Actor, t: float) -> art.Sprite:
        if actor.sprite is not None:
            return actor.sprite
        assert actor.style is not None
        stride_px = 0.5 * float(actor.style["height"])  # type: ignore[arg-type]
        walked = (t - actor.t_enter_s) * actor.speed_px_s
        pose = int(walked / stride_px * self._POSES) % self._POSES
        key = (actor.track_id, pose)
        sprite = self._pose_cache.get(key)
        if sprite is None:
            sprite = art.pedestrian_sprite(actor.style, pose / self._POSES)
            self._pose_cache[key] = sprite
        return sprite

    def frame(self, index: int) -> SyntheticFrame:
        """Draw frame `index` (0 <= index < len(self)) and its ground truth."""
        image, truth = self._render(index)
        return SyntheticFrame(index, index / self.config.fps, image, truth)

    def _render(self, index: int, *, noise: bool = True) -> tuple[np.ndarray, GroundTruth]:
        if not 0 <= index < len(self):
            raise IndexError(f"frame index must be in [0, {len(self)}), got {index}")
        cfg = self.config
        w, h = cfg.width, cfg.height
        t = index / cfg.fps
        image = self._background.copy()
        ids = np.zeros((h, w), dtype=np.uint16)
        active = np.flatnonzero((self._enter <= t) & (self._exit >= t))
        placed: list[tuple[float, _Actor, art.Sprite, int, int]] = []
        for i in active:
            actor = self._actors[int(i)]
            ax, ay = actor.anchor(t)
            sprite = self._sprite(actor, t)
            x0, y0 = round(ax) + sprite.offset_x, round(ay) + sprite.offset_y
            placed.append((ay, actor, sprite, x0, y0))
        placed.sort(key=lambda p: (p[0], p[1].track_id))  # far (higher up) first
        for k, (_, _, sprite, x0, y0) in enumerate(placed, start=1):
            sh, sw = sprite.mask.shape
            fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x0 + sw, w), min(y0 + sh, h)
            if fx0 >= fx1 or fy0 >= fy1:
                continue
            sy, sx = slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)
            m = sprite.mask_u8[sy, sx]
            cv2.copyTo(sprite.rgb[sy, sx], m, image[fy0:fy1, fx0:fx1])  # in place, masked
            cv2.copyTo(np.full(m.shape, k, np.uint16), m, ids[fy0:fy1, fx0:fx1])
        if noise:
            add, sub = self._noise[(index * 7 + cfg.seed) % len(self._noise)]
            cv2.add(image, add, dst=image)
            cv2.subtract(image, sub, dst=image)
        return image, self._truth(placed, ids)

    def _truth(
        self, placed: list[tuple[float, _Actor, art.Sprite, int, int]], ids: np.ndarray
    ) -> GroundTruth:
        h, w = ids.shape
        rows: list[tuple[list[float], int, int, str, int, int, float]] = []
        for k, (_, actor, sprite, x0, y0) in enumerate(placed, start=1):
            sh, sw = sprite.mask.shape
            box = [max(x0, 0), max(y0, 0), min(x0 + sw, w), min(y0 + sh, h)]
            if box[0] >= box[2] or box[1] >= box[3]:
                continue
            shown = int(np.count_nonzero(ids[box[1] : box[3], box[0] : box[2]] == k))
            vis = shown / sprite.pixels
            if vis >= MIN_VISIBILITY:
                rows.append(
                    (
                        box,
                        actor.class_id,
                        actor.track_id,
                        actor.plate_text,
                        actor.colour_id,
                        -1,
                        vis,
                    )
                )
            if sprite.plate_xyxy is None:
                continue
            px1, py1, px2, py2 = sprite.plate_xyxy
            pbox = [x0 + px1, y0 + py1, x0 + px2, y0 + py2]
            full = (pbox[2] - pbox[0]) * (pbox[3] - pbox[1])
            cb = [max(pbox[0], 0), max(pbox[1], 0), min(pbox[2], w), min(pbox[3], h)]
            if cb[0] >= cb[2] or cb[1] >= cb[3]:
                continue
            pshown = int(np.count_nonzero(ids[cb[1] : cb[3], cb[0] : cb[2]] == k)) / full
            if pshown >= MIN_PLATE_VISIBILITY:
                rows.append(
                    (cb, PLATE, actor.track_id + 1, actor.plate_text, -1, actor.track_id, pshown)
                )
        if not rows:
            return GroundTruth.empty()
        boxes, cls, tid, text, colour, parent, vis_ = zip(*rows, strict=True)
        return GroundTruth(
            np.asarray(boxes, dtype=np.float32),
            _int_array(cls),
            _int_array(tid),
            list(text),
            _int_array(colour),
            _int_array(parent),
            np.asarray(vis_, dtype=np.float32),
        )


def line_crossings(
    frames: Iterable[GroundTruth | SyntheticFrame],
    line: Line,
    *,
    class_ids: Collection[int] | None = (VEHICLE, PEDESTRIAN),
) -> list[Crossing]:
    """Exact crossings of a line (in pixels) by the tracks' box centres.

    A crossing happens when the segment between a track's centre in its previous frame (the
    last one it was seen in) and its centre now meets the line segment. Frames are numbered
    by their position in `frames`, or by `SyntheticFrame.index` when frames are given.
    """
    (ax, ay), (bx, by) = line
    dx, dy = bx - ax, by - ay
    last: dict[int, tuple[float, float, float]] = {}  # track -> (cx, cy, cross)
    out: list[Crossing] = []
    for position, item in enumerate(frames):
        truth, index = (
            (item.truth, item.index) if isinstance(item, SyntheticFrame) else (item, position)
        )
        for box, cid, tid in zip(truth.boxes_xyxy, truth.class_id, truth.track_id, strict=True):
            if class_ids is not None and int(cid) not in class_ids:
                continue
            cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
            cross = dx * (cy - ay) - dy * (cx - ax)
            prev = last.get(int(tid))
            last[int(tid)] = (cx, cy, cross)
            if prev is None or (prev[2] < 0) == (cross < 0):
                continue
            # where along the line does the track's step cross it?  (must be inside the segment)
            px, py, pc = prev
            f = pc / (pc - cross) if pc != cross else 0.0
            ix, iy = px + f * (cx - px), py + f * (cy - py)
            u = ((ix - ax) * dx + (iy - ay) * dy) / (dx * dx + dy * dy)
            if 0.0 <= u <= 1.0:
                out.append(Crossing(int(tid), index, "in" if cross < 0 else "out", int(cid)))
    return out


def _encoder(codec: str) -> str:
    import av

    wanted = {"h264": "libx264"}.get(codec, codec)
    try:
        av.codec.Codec(wanted, "w")
        return wanted
    except Exception:  # PyAV raises UnknownCodecError, a subclass of ValueError or similar
        if codec in ("h264", "libx264"):
            log.info("libx264 is not available in this FFmpeg build; writing mpeg4 instead")
            return "mpeg4"
        raise ConfigError(f"codec must be an encoder FFmpeg has, got {codec!r}") from None


def write_video(scene: SyntheticScene, path: Path, *, codec: str = "h264") -> Path:
    """Encode the scene to `path` with PyAV; h264 falls back to mpeg4 without libx264.

    The codec actually used is logged (`edgetier.synthetic`, INFO). Frame size must be even.
    """
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is in the video extra
        raise MissingExtraError("av", "video") from exc
    cfg = scene.config
    if cfg.width % 2 or cfg.height % 2:
        raise ConfigError(
            f"width and height must be even to encode video, got {cfg.width}x{cfg.height}"
        )
    name = _encoder(codec)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(cfg.fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(name, rate=rate)
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height = cfg.width, cfg.height
        stream.pix_fmt = "yuv420p"
        if name == "libx264":
            stream.options = {"preset": "veryfast", "crf": "20"}
        else:
            stream.bit_rate = 8_000_000
        for frame in scene:
            vf = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    log.info("wrote %d frames to %s with %s", len(scene), path, name)
    return path
