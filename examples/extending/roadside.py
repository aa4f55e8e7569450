"""Plug-ins for a pipeline, one of each kind: a test-card source, a region-of-interest
stage and a CSV sink. docs/extending.md walks through them.

A pipeline file loads them with ``plugins: [roadside]`` (this file sits next to it).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgetier.pipeline import (
    FramePacket,
    RawFrame,
    Sink,
    SinkConfig,
    Source,
    SourceConfig,
    Stage,
    StageConfig,
    register_sink,
    register_source,
    register_stage,
)

# -- a source: a moving bar over a grey test card -------------------------------------


class TestCardConfig(SourceConfig):
    """A synthetic test card: a bright bar sweeping left to right."""

    kind: Literal["test_card"]
    width: int = Field(default=320, ge=16, le=3840)
    height: int = Field(default=240, ge=16, le=2160)
    fps: float = Field(default=10.0, gt=0, le=240)
    frames: int = Field(default=30, ge=1)


class TestCard(Source):
    cfg: TestCardConfig

    def open(self, stream_id: str) -> Iterator[RawFrame]:
        cfg = self.cfg
        for index in range(cfg.frames):
            image = np.full((cfg.height, cfg.width, 3), 96, np.uint8)
            x = index * 8 % cfg.width
            image[:, x : x + 8] = 255
            yield RawFrame(image, index / cfg.fps)


# -- a stage: keep only the objects inside a region ------------------------------------


class RegionFilterConfig(StageConfig):
    """Drop detections whose box centre lies outside an axis-aligned region."""

    kind: Literal["region_filter"]
    region: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in pixels")

    def requires(self) -> tuple[str, ...]:
        return ("detector",)


class RegionFilter(Stage):
    def __init__(self, config: RegionFilterConfig) -> None:
        self.id = config.id
        self.x1, self.y1, self.x2, self.y2 = config.region

    async def process(self, frame: FramePacket) -> FramePacket:
        det = frame.detections
        cx = (det.xyxy[:, 0] + det.xyxy[:, 2]) / 2
        cy = (det.xyxy[:, 1] + det.xyxy[:, 3]) / 2
        inside = (cx >= self.x1) & (cx <= self.x2) & (cy >= self.y1) & (cy <= self.y2)
        frame.detections = det[inside]
        return frame


# -- a sink: one CSV row per event -----------------------------------------------------


class CsvSinkConfig(SinkConfig):
    """Events as CSV rows: time, stream, kind, objects in a detections event."""

    kind: Literal["csv"]
    path: str


class CsvSink(Sink):
    cfg: CsvSinkConfig

    async def start(self) -> None:
        path = Path(self.cfg.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="", encoding="utf-8")
        self._rows = csv.writer(self._file)
        self._rows.writerow(["ts", "stream", "kind", "objects"])

    async def handle(self, events: list[Any]) -> None:
        for event in events:
            if self.accepts(event):
                objects = len(event.data.get("objects", []))
                self._rows.writerow([f"{event.ts_s:.3f}", event.stream_id, event.kind, objects])

    async def stop(self) -> None:
        self._file.close()


register_source(TestCardConfig, TestCard)
register_stage(RegionFilterConfig, RegionFilter)
register_sink(CsvSinkConfig, CsvSink)
