"""Video analytics pipelines: sources, cross-stream batching, cascades, tracking, sinks.

pipeline = Pipeline.from_file("examples/pipelines/traffic-synthetic.yaml")
stats = asyncio.run(pipeline.run(duration_s=10))
print({sid: s.frames_out for sid, s in stats.items()})
"""

from __future__ import annotations

from edgetier.pipeline._analytics import LineCounter, SpeedEstimator, ZoneMonitor
from edgetier.pipeline._config import PipelineConfig, load_pipeline, parse_pipeline
from edgetier.pipeline._frame import Event, FrameMeta, FramePacket
from edgetier.pipeline._graph import graph_dot, graph_text
from edgetier.pipeline._outbox import Outbox
from edgetier.pipeline._preprocess import Letterboxer, LetterboxInfo
from edgetier.pipeline._runner import Pipeline, StreamStats
from edgetier.pipeline._stages import Stage
from edgetier.pipeline._synthetic import (
    CLASS_NAMES,
    COLOUR_NAMES,
    Crossing,
    GroundTruth,
    SceneConfig,
    SyntheticFrame,
    SyntheticScene,
    line_crossings,
    write_video,
)
from edgetier.pipeline._yolo import decode_yolo, nms

__all__ = [
    "CLASS_NAMES",
    "COLOUR_NAMES",
    "Crossing",
    "Event",
    "FrameMeta",
    "FramePacket",
    "GroundTruth",
    "LetterboxInfo",
    "Letterboxer",
    "LineCounter",
    "Outbox",
    "Pipeline",
    "PipelineConfig",
    "SceneConfig",
    "SpeedEstimator",
    "Stage",
    "StreamStats",
    "SyntheticFrame",
    "SyntheticScene",
    "ZoneMonitor",
    "decode_yolo",
    "graph_dot",
    "graph_text",
    "line_crossings",
    "load_pipeline",
    "nms",
    "parse_pipeline",
    "write_video",
]
