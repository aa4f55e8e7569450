"""Video analytics pipelines: sources, cross-stream batching, cascades, tracking, sinks.

    pipeline = Pipeline.from_file("examples/pipelines/traffic-synthetic.yaml")
    stats = asyncio.run(pipeline.run(duration_s=10))
    print({sid: s.frames_out for sid, s in stats.items()})

Sources, stages and sinks are plug-ins: an abstract base each (:class:`Source`,
:class:`Stage`, :class:`Sink`), a config base each (``SourceConfig``, ``StageConfig``,
``SinkConfig``) and ``register_source`` / ``register_stage`` / ``register_sink``
(docs/extending.md). Reading and validating a pipeline file needs only pydantic; running
one needs the ``video`` extra, whose names are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgetier._lazy import lazy_names
from edgetier.pipeline import sinks as sinks
from edgetier.pipeline._config import (
    EVENT_KINDS,
    ModelStageConfig,
    PipelineConfig,
    ReconnectConfig,
    SinkConfig,
    SourceConfig,
    StageConfig,
    load_pipeline,
    parse_pipeline,
    register_sink,
    register_source,
    register_stage,
)
from edgetier.pipeline._graph import graph_dot, graph_text
from edgetier.pipeline.sinks import Sink, SinkContext

if TYPE_CHECKING:
    from edgetier.pipeline._analytics import LineCounter, SpeedEstimator, ZoneMonitor
    from edgetier.pipeline._decode import RawFrame, pyav_frames
    from edgetier.pipeline._frame import Event, FrameMeta, FramePacket
    from edgetier.pipeline._models import ModelRunner, inspect_model, package_models_dir
    from edgetier.pipeline._outbox import Outbox
    from edgetier.pipeline._preprocess import (
        Letterboxer,
        LetterboxInfo,
        clip_boxes,
        resize_crops_into,
    )
    from edgetier.pipeline._runner import Pipeline, StreamStats
    from edgetier.pipeline._sources import Source
    from edgetier.pipeline._stages import Stage
    from edgetier.pipeline._yolo import decode_yolo, nms

__all__ = [
    "EVENT_KINDS",
    "Event",
    "FrameMeta",
    "FramePacket",
    "LetterboxInfo",
    "Letterboxer",
    "LineCounter",
    "ModelRunner",
    "ModelStageConfig",
    "Outbox",
    "Pipeline",
    "PipelineConfig",
    "RawFrame",
    "ReconnectConfig",
    "Sink",
    "SinkConfig",
    "SinkContext",
    "Source",
    "SourceConfig",
    "SpeedEstimator",
    "Stage",
    "StageConfig",
    "StreamStats",
    "ZoneMonitor",
    "clip_boxes",
    "decode_yolo",
    "graph_dot",
    "graph_text",
    "inspect_model",
    "load_pipeline",
    "nms",
    "package_models_dir",
    "parse_pipeline",
    "pyav_frames",
    "register_sink",
    "register_source",
    "register_stage",
    "resize_crops_into",
    "sinks",
]

_WHERE = {
    "LineCounter": "_analytics",
    "SpeedEstimator": "_analytics",
    "ZoneMonitor": "_analytics",
    "RawFrame": "_decode",
    "pyav_frames": "_decode",
    "Event": "_frame",
    "FrameMeta": "_frame",
    "FramePacket": "_frame",
    "ModelRunner": "_models",
    "inspect_model": "_models",
    "package_models_dir": "_models",
    "Outbox": "_outbox",
    "Letterboxer": "_preprocess",
    "LetterboxInfo": "_preprocess",
    "clip_boxes": "_preprocess",
    "resize_crops_into": "_preprocess",
    "Pipeline": "_runner",
    "StreamStats": "_runner",
    "Source": "_sources",
    "Stage": "_stages",
    "decode_yolo": "_yolo",
    "nms": "_yolo",
}


__getattr__, __dir__ = lazy_names(__name__, _WHERE, __all__)
