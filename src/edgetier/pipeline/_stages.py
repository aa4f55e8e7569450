"""Stages: detector, classifier, crop-and-cascade, tracker, analytics and user Python code.

A stage has `ordered` (True when it keeps per-stream state and must see a stream's frames
in order), `async start()`, `async process(frame) -> frame` and `async stop()`. Stages
that are not ordered may run on several frames of a stream at once, which is what lets
the batchers form batches larger than the number of streams. Model stages that read only
the image (detector, classifier) also have `prepare(frame)`, which the pipeline calls in
the source's reader thread: the letterbox runs there, in parallel across streams and off
the event loop, and `process` finds the model input ready.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import supervision as sv

from edgetier.errors import ConfigError, StageError
from edgetier.pipeline._analytics import LineCounter, SpeedEstimator, ZoneMonitor, anchor_points
from edgetier.pipeline._config import (
    STAGES,
    AnalyticsStage,
    CascadeStage,
    ClassifierStage,
    DetectorStage,
    ModelStageConfig,
    PythonStage,
    StageConfig,
    TrackerStage,
)
from edgetier.pipeline._frame import FramePacket, Prepared
from edgetier.pipeline._models import ModelRunner, class_names
from edgetier.pipeline._preprocess import (
    Letterboxer,
    LetterboxInfo,
    clip_boxes,
    host_buffer,
    resize_crops_into,
)
from edgetier.pipeline._yolo import decode_yolo

log = logging.getLogger("edgetier.pipeline")


class Stage(ABC):
    """Base of the built-in stages; a user class needs only `process` (see PythonCode)."""

    id: str = ""
    ordered: bool = False
    prepares: bool = False  # True when prepare() does work (see the module docstring)

    async def start(self) -> None:  # noqa: B027 - an optional hook
        """Called once before the first frame."""

    def prepare(self, frame: FramePacket) -> None:  # noqa: B027 - an optional hook
        """(Reader thread) make this stage's model input from `frame.image` ahead of time."""

    @abstractmethod
    async def process(self, frame: FramePacket) -> FramePacket:
        """Take one frame's packet, return it with this stage's results added."""

    async def stop(self) -> None:  # noqa: B027 - an optional hook
        """Called once after the last frame."""


class _SlabPool:
    """[1, 3, H, W] request buffers handed out as consecutive rows of [rows, 3, H, W] slabs.

    Frames letterboxed one after another land in adjacent rows, so when the batcher groups
    them it takes the rows as one view instead of copying them into a new batch (see
    `stack_rows`). A slab is reused once every row it handed out is released; slabs are
    pinned where the engine is on a GPU. Reader threads and the event loop share the pool.
    """

    def __init__(self, shape: tuple[int, ...], rows: int, *, pinned: bool) -> None:
        self.shape = shape
        self.rows = max(1, rows)
        self.pinned = pinned
        self._lock = threading.Lock()
        self._free: list[np.ndarray] = []
        self._out: dict[int, int] = {}  # id(slab) -> rows handed out and not yet released
        self._slab: np.ndarray | None = None
        self._next = 0

    def acquire(self) -> tuple[np.ndarray, np.ndarray]:
        """(one-row view, the slab it belongs to)."""
        with self._lock:
            if self._slab is None or self._next == self.rows:
                if self._slab is not None and not self._out[id(self._slab)]:
                    self._free.append(self._slab)
                self._slab = self._free.pop() if self._free else self._new_slab()
                self._out[id(self._slab)] = 0
                self._next = 0
            slab, row = self._slab, self._next
            self._next += 1
            self._out[id(slab)] += 1
        return slab[row : row + 1], slab

    def _new_slab(self) -> np.ndarray:
        return host_buffer((self.rows, *self.shape[1:]), pinned=self.pinned)

    def release(self, slab: np.ndarray) -> None:
        with self._lock:
            self._out[id(slab)] -= 1
            # a slab neither current nor in use goes back to the free list
            if not self._out[id(slab)] and slab is not self._slab:
                self._free.append(slab)

    def letterboxed(self, letterbox: Letterboxer, image: np.ndarray) -> Prepared:
        """`image` letterboxed into the next free row."""
        buf, slab = self.acquire()
        try:
            info = letterbox(image, buf[0])
        except BaseException:
            self.release(slab)
            raise
        return Prepared(buf, info, functools.partial(self.release, slab))


def _take_prepared(stage: Stage, frame: FramePacket) -> Prepared:
    """The input `stage.prepare` made for `frame`, made now if the reader thread did not."""
    item = frame.prepared.pop(stage.id, None)
    if item is None:
        stage.prepare(frame)
        item = frame.prepared.pop(stage.id)
    return item


class _WholeFrameModel(Stage):
    """A model on the whole letterboxed frame: prepared in the reader thread, then batched."""

    prepares = True
    runner: ModelRunner
    letterbox: Letterboxer
    pool: _SlabPool

    def _use(self, runner: ModelRunner, letterbox: Letterboxer) -> None:
        self.runner = runner
        self.letterbox = letterbox
        self.pool = _SlabPool(
            (1, 3, letterbox.height, letterbox.width),
            runner.max_batch_size,
            pinned=runner.on_gpu,
        )

    def prepare(self, frame: FramePacket) -> None:
        frame.prepared[self.id] = self.pool.letterboxed(self.letterbox, frame.image)

    async def _infer(self, frame: FramePacket) -> tuple[dict[str, np.ndarray], LetterboxInfo]:
        item = _take_prepared(self, frame)
        try:
            outputs = await self.runner.infer(item.value)
        finally:
            item.release()
        return outputs, item.info


class Detector(_WholeFrameModel):
    """YOLO-family detector: letterbox -> shared batcher -> decode -> class-aware NMS."""

    def __init__(self, cfg: DetectorStage, runner: ModelRunner) -> None:
        self.id = cfg.id
        self.cfg = cfg
        info = runner.info
        self.height, self.width = info.input_hw
        out_shape = info.output_shapes[0]
        num_classes = (out_shape[1] - 4) if len(out_shape) == 3 and out_shape[1] > 4 else None
        names = info.sidecar.get("names")
        count = num_classes or (len(names) if names else 1)
        self.names = np.array(class_names(info.sidecar, count))
        self.allowed: np.ndarray | None = None
        if cfg.classes is not None:
            unknown = [c for c in cfg.classes if c not in self.names]
            if unknown:
                raise ConfigError(
                    f"stages.{cfg.id}.classes: {unknown} not among the model's classes "
                    f"{self.names.tolist()}"
                )
            self.allowed = np.flatnonzero(np.isin(self.names, cfg.classes))
        pad = int(info.sidecar.get("letterbox_value", info.sidecar.get("pad_value", 114)))
        self._use(runner, Letterboxer(self.height, self.width, pad_value=pad))
        self.output_name = info.output_names[0]

    async def process(self, frame: FramePacket) -> FramePacket:
        outputs, box = await self._infer(frame)
        raw = outputs[self.output_name][0]
        boxes, scores, cls = decode_yolo(
            raw,
            confidence=self.cfg.confidence,
            iou_threshold=self.cfg.iou_threshold,
            max_detections=self.cfg.max_detections,
            allowed_classes=self.allowed,
        )
        xyxy = box.to_frame(boxes, frame.meta.width, frame.meta.height)
        frame.detections = sv.Detections(
            xyxy=xyxy,
            confidence=scores,
            class_id=cls,
            data={"class_name": self.names[cls] if len(cls) else np.empty(0, dtype=str)},
        )
        return frame


class Classifier(_WholeFrameModel):
    """Whole-frame classifier: `frame.meta.labels[field] = {label, score}` and an event."""

    def __init__(self, cfg: ClassifierStage, runner: ModelRunner) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self._use(runner, Letterboxer(*runner.info.input_hw))
        out = runner.info.output_shapes[0]
        self.names = np.array(class_names(runner.info.sidecar, out[-1] if out[-1] > 0 else 1))

    async def process(self, frame: FramePacket) -> FramePacket:
        outputs, _ = await self._infer(frame)
        probs = outputs[self.runner.info.output_names[0]][0]
        best = int(np.argmax(probs))
        score = float(probs[best])
        if score >= self.cfg.min_score:
            label = str(self.names[best]) if best < len(self.names) else f"class{best}"
            frame.meta.labels[self.cfg.field] = {"label": label, "score": score}
            if frame.meta.frame_index % self.cfg.emit_every == 0:
                frame.event(
                    "classification",
                    {"stage": self.id, "field": self.cfg.field, "label": label, "score": score},
                )
        return frame


class Cascade(Stage):
    """Model B on the crops of model A's detections; crops of all frames share a batcher."""

    def __init__(self, cfg: CascadeStage, runner: ModelRunner) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self.runner = runner
        self.height, self.width = runner.info.input_hw
        out = runner.info.output_shapes[0]
        self.names = np.array(class_names(runner.info.sidecar, out[-1] if out[-1] > 0 else 1))

    async def process(self, frame: FramePacket) -> FramePacket:
        det = frame.detections
        n = len(det)
        labels = np.full(n, "", dtype=object)
        scores = np.full(n, np.nan, dtype=np.float32)
        if n:
            names = det.data.get("class_name")
            wanted = np.isin(names, self.cfg.on_classes) if names is not None else np.zeros(n, bool)
            sizes = np.minimum(det.xyxy[:, 2] - det.xyxy[:, 0], det.xyxy[:, 3] - det.xyxy[:, 1])
            idx = np.flatnonzero(wanted & (sizes >= self.cfg.min_box_px))
            if idx.size:
                crops = host_buffer(
                    (idx.size, 3, self.height, self.width), pinned=self.runner.on_gpu
                )
                resize_crops_into(frame.image, det.xyxy[idx], crops, padding=self.cfg.padding)
                outputs = await self.runner.infer(crops)
                probs = outputs[self.runner.info.output_names[0]]
                best = probs.argmax(axis=1)
                labels[idx] = self.names[best]
                scores[idx] = probs[np.arange(idx.size), best]
        det.data[self.cfg.field] = labels.astype(str)
        det.data[f"{self.cfg.field}_score"] = scores
        return frame


class Tracker(Stage):
    """ByteTrack (the `trackers` library), one tracker per stream."""

    ordered = True

    def __init__(self, cfg: TrackerStage) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self._trackers: dict[str, Any] = {}

    def _tracker(self, stream_id: str) -> Any:
        tracker = self._trackers.get(stream_id)
        if tracker is None:
            from trackers import ByteTrackTracker

            c = self.cfg
            tracker = ByteTrackTracker(
                lost_track_buffer=c.lost_track_buffer,
                frame_rate=c.frame_rate,
                track_activation_threshold=c.track_activation_threshold,
                minimum_consecutive_frames=c.minimum_consecutive_frames,
                minimum_iou_threshold=c.minimum_iou_threshold,
                high_conf_det_threshold=c.high_conf_det_threshold,
            )
            self._trackers[stream_id] = tracker
        return tracker

    async def process(self, frame: FramePacket) -> FramePacket:
        det = frame.detections
        if det.confidence is None:
            det.confidence = np.ones(len(det), dtype=np.float32)
        tracked = self._tracker(frame.meta.stream_id).update(det)
        # the tracker's boxes are its motion model's: they may reach past the frame
        clip_boxes(tracked.xyxy, frame.meta.width, frame.meta.height)
        frame.detections = tracked
        return frame


class _StreamAnalytics:
    def __init__(self, cfg: AnalyticsStage) -> None:
        self.lines = {line.id: LineCounter(line.start, line.end) for line in cfg.lines}
        self.zones = {zone.id: ZoneMonitor(zone.polygon) for zone in cfg.zones}
        self.speed = (
            SpeedEstimator(cfg.pixels_per_metre, cfg.speed_window_s)
            if cfg.pixels_per_metre
            else None
        )
        self.next_summary_s: float | None = None


class Analytics(Stage):
    """Line crossings, zone occupancy and dwell, speed, and a periodic `counts` summary."""

    ordered = True

    def __init__(self, cfg: AnalyticsStage) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self._streams: dict[str, _StreamAnalytics] = {}

    def counts(self, stream_id: str) -> dict[str, Any]:
        state = self._streams.get(stream_id)
        if state is None:
            return {"lines": {}, "zones": {}}
        return {
            "lines": {k: {"in": v.count_in, "out": v.count_out} for k, v in state.lines.items()},
            "zones": {k: {"occupancy": v.occupancy} for k, v in state.zones.items()},
        }

    async def process(self, frame: FramePacket) -> FramePacket:
        sid = frame.meta.stream_id
        state = self._streams.get(sid)
        if state is None:
            state = self._streams[sid] = _StreamAnalytics(self.cfg)
        det = frame.detections
        ts = frame.meta.media_ts_s
        tids = det.tracker_id if det.tracker_id is not None else np.full(len(det), -1)
        names = det.data.get("class_name", np.full(len(det), "", dtype=object))
        if state.speed is not None:
            speeds = state.speed.update(tids, anchor_points(det.xyxy, "bottom_center"), ts)
            det.data["speed_kmh"] = speeds
        for line in self.cfg.lines:
            mask = np.ones(len(det), bool) if line.classes is None else np.isin(names, line.classes)
            points = anchor_points(det.xyxy[mask], line.anchor)
            counter = state.lines[line.id]
            for tid, direction in counter.update(tids[mask], points):
                row = int(np.flatnonzero(tids == tid)[0])
                frame.event(
                    "line_crossing",
                    {
                        "line": line.id,
                        "direction": direction,
                        "track_id": tid,
                        **_object(det, row),
                        "count_in": counter.count_in,
                        "count_out": counter.count_out,
                    },
                )
        for zone in self.cfg.zones:
            mask = np.ones(len(det), bool) if zone.classes is None else np.isin(names, zone.classes)
            monitor = state.zones[zone.id]
            entered, left = monitor.update(
                tids[mask], anchor_points(det.xyxy[mask], zone.anchor), ts
            )
            for tid in entered:
                row = int(np.flatnonzero(tids == tid)[0])
                frame.event(
                    "zone_enter",
                    {
                        "zone": zone.id,
                        "track_id": tid,
                        **_object(det, row),
                        "occupancy": monitor.occupancy,
                    },
                )
            for tid, dwell_s in left:
                frame.event(
                    "zone_exit",
                    {
                        "zone": zone.id,
                        "track_id": tid,
                        "dwell_s": round(dwell_s, 3),
                        "occupancy": monitor.occupancy,
                    },
                )
        if state.next_summary_s is None:
            state.next_summary_s = ts + self.cfg.summary_interval_s
        elif ts >= state.next_summary_s:
            state.next_summary_s = ts + self.cfg.summary_interval_s
            frame.event("counts", {"stage": self.id, **self.counts(sid), "objects": len(det)})
        return frame


def _object(det: sv.Detections, row: int) -> dict[str, Any]:
    """JSON-ready description of detection `row`: class, box, confidence and data fields."""
    out: dict[str, Any] = {"box": [round(float(v), 1) for v in det.xyxy[row]]}
    if det.confidence is not None:
        out["confidence"] = round(float(det.confidence[row]), 4)
    if det.tracker_id is not None:
        out["track_id"] = int(det.tracker_id[row])
    for key, values in det.data.items():
        value = values[row]
        if isinstance(value, np.floating):
            value = None if np.isnan(value) else round(float(value), 3)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


class PythonCode(Stage):
    """User code. `target` is `module:function` or `module:Class`.

    A function is called as ``fn(frame, **params)``; a class is instantiated as
    ``Class(**params)`` and its ``process(frame)`` called for every frame, then its
    optional ``close()`` at the end. Either may be ``async``. Return the frame, a new
    ``sv.Detections`` (which replaces the frame's) or None (the frame was changed in place).
    """

    def __init__(self, cfg: PythonStage) -> None:
        self.id = cfg.id
        self.cfg = cfg
        self.ordered = cfg.ordered
        module_name, _, attr = cfg.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"stages.{cfg.id}.target: cannot import {module_name!r}: {exc}"
            ) from None
        obj = getattr(module, attr, None)
        if obj is None:
            raise ConfigError(f"stages.{cfg.id}.target: {module_name!r} has no {attr!r}")
        self._close: Callable[[], Any] | None = None
        if inspect.isclass(obj):
            instance: Any = obj(**cfg.params)
            if not callable(getattr(instance, "process", None)):
                raise ConfigError(f"stages.{cfg.id}.target: class {attr} has no process(frame)")
            self._fn: Callable[..., Any] = instance.process
            self._kwargs: dict[str, Any] = {}
            self._close = getattr(instance, "close", None)
        elif callable(obj):
            self._fn = obj
            self._kwargs = dict(cfg.params)
        else:
            raise ConfigError(f"stages.{cfg.id}.target: {cfg.target} is not callable")

    async def process(self, frame: FramePacket) -> FramePacket:
        result = self._fn(frame, **self._kwargs)
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return frame
        if isinstance(result, FramePacket):
            return result
        if isinstance(result, sv.Detections):
            frame.detections = result
            return frame
        raise StageError(
            f"stage {self.id}: {self.cfg.target} returned {type(result).__name__}; "
            "return the frame, an sv.Detections or None"
        )

    async def stop(self) -> None:
        if self._close is not None:
            result = self._close()
            if inspect.isawaitable(result):
                await result


def build_stage(cfg: StageConfig, runners: dict[str, ModelRunner]) -> Stage:
    """The stage a config entry describes; a model stage gets its runner by stage id."""
    cls: Any = STAGES.load(cfg.kind)
    if isinstance(cfg, ModelStageConfig):
        return cast(Stage, cls(cfg, runners[cfg.id]))
    return cast(Stage, cls(cfg))
