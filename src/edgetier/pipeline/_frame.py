"""What travels between stages: a frame, its metadata, its detections and its events.

`sv.Detections` (supervision) is the one currency for objects; per-object extras live in
its `data` dict (`class_name`, the cascade's field such as `colour`, `speed_kmh`, ...).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import supervision as sv


@dataclass(slots=True)
class FrameMeta:
    """Where a frame comes from and when it was captured."""

    stream_id: str
    frame_index: int
    capture_ts_s: float  # wall clock (time.time()) when the frame left the decoder
    media_ts_s: float  # position in the stream (file/scene time); capture time for cameras
    width: int
    height: int
    labels: dict[str, Any] = field(default_factory=dict)  # frame-level results (classifier)


@dataclass(slots=True)
class Event:
    """One result leaving the node. `id` is unique, so consumers can drop duplicates."""

    kind: str
    stream_id: str
    data: dict[str, Any]
    frame_index: int | None = None
    media_ts_s: float | None = None
    ts_s: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self, *, node: str, pipeline: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "node": node,
            "pipeline": pipeline,
            "stream": self.stream_id,
            "ts": self.ts_s,
            "frame": self.frame_index,
            "media_ts": self.media_ts_s,
            "data": self.data,
        }

    def to_json(self, *, node: str, pipeline: str) -> bytes:
        return orjson.dumps(
            self.to_dict(node=node, pipeline=pipeline), option=orjson.OPT_SERIALIZE_NUMPY
        )


@dataclass(slots=True)
class Prepared:
    """A model input prepared ahead (a letterboxed buffer) and how to give it back."""

    value: Any
    info: Any
    release: Callable[[], None]


@dataclass(slots=True)
class FramePacket:
    """A decoded RGB frame (HxWx3 uint8) with what the stages found in it."""

    meta: FrameMeta
    image: np.ndarray
    detections: sv.Detections = field(default_factory=sv.Detections.empty)
    events: list[Event] = field(default_factory=list)
    # model inputs made from this frame in the source's reader thread, by stage id
    prepared: dict[str, Prepared] = field(default_factory=dict)

    def discard(self) -> None:
        """Give back what was prepared for a frame that will not be processed (a drop)."""
        prepared, self.prepared = self.prepared, {}
        for item in prepared.values():
            item.release()

    def event(self, kind: str, data: dict[str, Any]) -> Event:
        """Create an event stamped with this frame, attach it and return it."""
        ev = Event(
            kind=kind,
            stream_id=self.meta.stream_id,
            data=data,
            frame_index=self.meta.frame_index,
            media_ts_s=self.meta.media_ts_s,
        )
        self.events.append(ev)
        return ev
