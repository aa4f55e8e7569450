"""The pipeline file: the base configs of sources, stages and sinks, their registries,
the built-in source and stage configs, and the file itself.

Every model forbids unknown fields. The lists ``sources``, ``stages`` and ``sinks`` are
tagged unions (by ``kind``) built from the registries of :mod:`._registry`, so a kind
registered later is accepted at once. :func:`load_pipeline` reports every error of a file
at once, each line naming the file, the field path, the value and the limit.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, get_args

from pydantic import ConfigDict, Field, model_validator

from edgetier.config import ConfigModel, FieldError, read_yaml, validate
from edgetier.errors import ConfigError
from edgetier.pipeline._registry import Registry
from edgetier.runtime import ProviderKey
from edgetier.synthetic import SceneConfig

if TYPE_CHECKING:
    from edgetier.pipeline._sources import Source
    from edgetier.pipeline._stages import Stage
    from edgetier.pipeline.sinks import Sink

__all__ = [
    "EVENT_KINDS",
    "ModelStageConfig",
    "PipelineConfig",
    "ReconnectConfig",
    "SinkConfig",
    "SourceConfig",
    "StageConfig",
    "load_pipeline",
    "parse_pipeline",
    "register_sink",
    "register_source",
    "register_stage",
    "user_modules_from",
]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DECODERS = Literal["auto", "software", "nvdec", "jetson"]
SOURCES: Registry[Source] = Registry("source")
STAGES: Registry[Stage] = Registry("stage")
SINKS: Registry[Sink] = Registry("sink")


class _Model(ConfigModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectConfig(_Model):
    """Exponential back-off between attempts to reopen a lost or unreachable stream."""

    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    factor: float = Field(default=2.0, ge=1.0)
    max_attempts: int = Field(default=0, ge=0, description="0 = retry for ever")


# -- the three bases -------------------------------------------------------------------


class SourceConfig(_Model):
    """Base of every source entry; a subclass adds ``kind: Literal[...]`` and its fields."""

    kind: str
    id: str = Field(pattern=ID_PATTERN)
    fps_cap: float | None = Field(None, gt=0, description="at most this many frames per second")
    backpressure: Literal["drop_oldest", "wait"] | None = Field(
        None, description="None = drop_oldest for live sources, wait for files"
    )
    queue_size: int = Field(4, ge=1, le=1024)
    max_frames: int | None = Field(None, ge=1, description="stop this stream after N frames")

    @property
    def live(self) -> bool:
        """A camera or network stream (frames come whether or not the pipeline keeps up)."""
        return False

    def policy(self) -> Literal["drop_oldest", "wait"]:
        if self.backpressure is not None:
            return self.backpressure
        return "drop_oldest" if self.live else "wait"

    def problems(self, base_dir: Path) -> list[str]:
        """What makes this source unusable, found without opening it (a missing file)."""
        return []


class StageConfig(_Model):
    """Base of every stage entry; a subclass adds ``kind: Literal[...]`` and its fields."""

    kind: str
    id: str = Field(pattern=ID_PATTERN)
    produces_detections: ClassVar[bool] = False
    """True when the stage sets ``frame.detections`` (then ``detections`` events exist)."""

    def requires(self) -> tuple[str, ...]:
        """Kinds of stage that must come before this one (a tracker needs a detector)."""
        return ()


class ModelStageConfig(StageConfig):
    """A stage that runs an ONNX model through an engine and a shared batcher."""

    model: str = Field(
        description="path to an ONNX file, relative to the pipeline file, or "
        "package://NAME for a model shipped with EdgeTier"
    )
    max_batch_size: int = Field(8, ge=1, le=1024)
    max_queue_delay_us: int = Field(2000, ge=0)
    instance_count: int = Field(1, ge=1, le=16)
    execution_providers: list[ProviderKey] | None = Field(
        None, description="None = the GPU providers this onnxruntime has, then cpu"
    )
    intra_op_threads: int = Field(0, ge=0)


EventKind = Literal[
    "line_crossing",
    "zone_enter",
    "zone_exit",
    "counts",
    "classification",
    "detections",
    "source_error",
    "source_status",
    "stage_error",
    "custom",
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)


class SinkConfig(_Model):
    """Base of every sink entry; a subclass adds ``kind: Literal[...]`` and its fields."""

    kind: str
    id: str | None = Field(None, pattern=ID_PATTERN)
    kinds: list[EventKind] | None = Field(None, description="None = every kind of event")


# -- built-in sources --------------------------------------------------------------------


class FileSource(SourceConfig):
    """A video file (any container FFmpeg reads)."""

    kind: Literal["file"]
    path: str
    loop: bool = False
    decoder: DECODERS = "auto"

    def problems(self, base_dir: Path) -> list[str]:
        path = resolve_path(self.path, base_dir)
        return [] if path.is_file() else [f"path: {path} does not exist"]


class StreamSource(SourceConfig):
    """RTSP or HTTP(S) stream read through FFmpeg."""

    kind: Literal["rtsp", "http"]
    url: str
    decoder: DECODERS = "auto"
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(10.0, gt=0)
    reconnect: ReconnectConfig = Field(default_factory=lambda: ReconnectConfig())

    @property
    def live(self) -> bool:
        return True


class V4L2Source(SourceConfig):
    """A camera through Video4Linux2."""

    kind: Literal["v4l2"]
    device: str = "/dev/video0"
    decoder: DECODERS = "auto"
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0)
    reconnect: ReconnectConfig = Field(default_factory=lambda: ReconnectConfig())

    @property
    def live(self) -> bool:
        return True


class ImageFolderSource(SourceConfig):
    """The images of a folder, in name order."""

    kind: Literal["images"]
    path: str
    pattern: str = "*.jpg"
    fps: float = Field(10.0, gt=0, description="timestamps advance by 1/fps per image")
    loop: bool = False

    def problems(self, base_dir: Path) -> list[str]:
        folder = resolve_path(self.path, base_dir)
        if not folder.is_dir():
            return [f"path: {folder} is not a folder"]
        if not any(folder.glob(self.pattern)):
            return [f"pattern: no file matches {self.pattern!r} in {folder}"]
        return []


class SyntheticSource(SourceConfig):
    """Synthetic road scenes with exact ground truth; `count` streams with seeds seed..seed+n-1."""

    kind: Literal["synthetic"]
    count: int = Field(1, ge=1, le=256)
    seed: int = Field(0, ge=0)
    realtime: bool = Field(False, description="pace frames at the scene's fps, like a camera")
    scene: SceneConfig = Field(
        default_factory=lambda: SceneConfig(), description="width, height, fps, duration_s, ..."
    )

    @property
    def live(self) -> bool:
        return self.realtime


# -- built-in stages ---------------------------------------------------------------------


class DetectorStage(ModelStageConfig):
    """A YOLO-family detector on the whole letterboxed frame."""

    kind: Literal["detector"]
    produces_detections: ClassVar[bool] = True
    confidence: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.5, gt=0, le=1)
    classes: list[str] | None = Field(None, description="keep only these class names")
    max_detections: int = Field(300, ge=1)


class ClassifierStage(ModelStageConfig):
    """Whole-frame classifier: the label goes into the frame's labels and an event."""

    kind: Literal["classifier"]
    field: str = "label"
    min_score: float = Field(0.0, ge=0, le=1)
    emit_every: int = Field(1, ge=1, description="emit a classification event every N frames")


class CascadeStage(ModelStageConfig):
    """Model B on the crops of model A's detections, batched across frames and streams."""

    kind: Literal["cascade"]
    on_classes: list[str] = Field(min_length=1)
    field: str = Field("label", pattern=r"^[a-z][a-z0-9_]*$")
    min_box_px: int = Field(4, ge=1)
    padding: float = Field(0.0, ge=0, le=1)

    def requires(self) -> tuple[str, ...]:
        return ("detector",)


class TrackerStage(StageConfig):
    """ByteTrack, one tracker per stream."""

    kind: Literal["tracker"]
    lost_track_buffer: int = Field(30, ge=1)
    frame_rate: float = Field(30.0, gt=0)
    track_activation_threshold: float = Field(0.25, ge=0, le=1)
    minimum_consecutive_frames: int = Field(1, ge=1)
    minimum_iou_threshold: float = Field(0.1, ge=0, le=1)
    high_conf_det_threshold: float = Field(0.5, ge=0, le=1)

    def requires(self) -> tuple[str, ...]:
        return ("detector",)


Point = tuple[float, float]


class LineConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    start: Point
    end: Point
    classes: list[str] | None = None
    anchor: Literal["center", "bottom_center"] = "center"


class ZoneConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    polygon: list[Point] = Field(min_length=3)
    classes: list[str] | None = None
    anchor: Literal["center", "bottom_center"] = "bottom_center"


class AnalyticsStage(StageConfig):
    """Line crossings, zones with dwell, speed, and a periodic ``counts`` summary."""

    kind: Literal["analytics"]
    lines: list[LineConfig] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)
    pixels_per_metre: float | None = Field(None, gt=0, description="enables speed estimates")
    speed_window_s: float = Field(0.5, gt=0)
    summary_interval_s: float = Field(1.0, gt=0, description="a `counts` event per stream")

    def requires(self) -> tuple[str, ...]:
        return ("tracker",) if self.lines or self.zones or self.pixels_per_metre else ()


class PythonStage(StageConfig):
    """User code: `module:function` or `module:Class` (see docs/pipelines.md)."""

    kind: Literal["python"]
    produces_detections: ClassVar[bool] = True
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    params: dict[str, Any] = Field(default_factory=dict)
    ordered: bool = Field(True, description="frames of a stream arrive in order")


# -- the file ------------------------------------------------------------------------


class PipelineConfig(_Model):
    """The whole pipeline file."""

    # built on first use: every kind registered by then is part of the unions
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    version: Literal[1] = 1
    plugins: list[str] = Field(
        default_factory=list,
        description="modules imported before the rest of the file is read: they register "
        "sources, stages and sinks (found next to the file or on the Python path)",
    )
    name: str = Field(pattern=ID_PATTERN)
    node: str | None = Field(None, pattern=ID_PATTERN, description="default: the host name")
    max_in_flight: int = Field(4, ge=1, le=64, description="frames per stream in the stages")
    sources: list[Annotated[SourceConfig, SOURCES.union()]] = Field(min_length=1)
    stages: list[Annotated[StageConfig, STAGES.union()]] = Field(default_factory=list)
    sinks: list[Annotated[SinkConfig, SINKS.union()]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_references(self) -> PipelineConfig:
        _unique("sources", [s.id for s in self.sources])
        _unique("stages", [s.id for s in self.stages])
        _unique("sinks", [s.id for s in self.sinks if s.id is not None])
        kinds = [s.kind for s in self.stages]
        for i, stage in enumerate(self.stages):
            for needed in stage.requires():
                if needed not in kinds[:i]:
                    raise FieldError(
                        f"stages[{i}]",
                        f"stage {stage.id!r} ({stage.kind}) needs a {needed} stage before it",
                    )
        return self

    def node_name(self) -> str:
        if self.node:
            return self.node
        return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64] or "node"

    def problems(self, base_dir: Path) -> list[str]:
        """What the file cannot know by itself: sources whose files are missing."""
        return [
            f"sources[{i}].{problem}"
            for i, source in enumerate(self.sources)
            for problem in source.problems(base_dir)
        ]


def register_source(
    config: type[SourceConfig], implementation: type[Source] | str, *, extra: str | None = None
) -> None:
    """Make ``kind: <config's kind>`` a source of pipeline files.

    ``implementation`` is the :class:`~edgetier.pipeline.Source` subclass, or
    ``"module:Class"`` to import it on first use; ``extra`` names the optional dependency
    group to install when that import fails.
    """
    SOURCES.register(config, implementation, extra=extra)


def register_stage(
    config: type[StageConfig], implementation: type[Stage] | str, *, extra: str | None = None
) -> None:
    """Make ``kind: <config's kind>`` a stage of pipeline files (see register_source).

    A config deriving ``ModelStageConfig`` gets its model loaded, and the stage is built
    as ``implementation(config, runner)``; any other as ``implementation(config)``.
    """
    STAGES.register(config, implementation, extra=extra)


def register_sink(
    config: type[SinkConfig], implementation: type[Sink] | str, *, extra: str | None = None
) -> None:
    """Make ``kind: <config's kind>`` a sink of pipeline files (see register_source)."""
    SINKS.register(config, implementation, extra=extra)


def _rebuild() -> None:
    if PipelineConfig.__pydantic_complete__:  # built already: take the new kind in
        PipelineConfig.model_rebuild(force=True)


for _registry in (SOURCES, STAGES, SINKS):
    _registry.on_change(_rebuild)


def _unique(where: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if value in seen:
            raise FieldError(f"{where}[{i}].id", f"{value!r} is used twice; ids must be unique")
        seen.add(value)


def resolve_path(path: str, base_dir: Path) -> Path:
    """A path of the pipeline file: relative ones are relative to the file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def parse_pipeline(
    data: Any, *, source: str = "<pipeline>", base_dir: Path | None = None
) -> PipelineConfig:
    """Validate already-parsed YAML/JSON; raises ConfigError naming `source` and the field.

    The modules listed under ``plugins`` are imported first (from ``base_dir`` or the
    Python path), so the kinds they register are known when the rest is validated.
    """
    if isinstance(data, dict):
        import_plugins(data.get("plugins"), source=source, base_dir=base_dir)
    return validate(PipelineConfig, data, source=source, what="pipeline file")


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file (every error at once)."""
    path = Path(path)
    return parse_pipeline(
        read_yaml(path, what="pipeline file"), source=str(path), base_dir=path.parent
    )


def import_plugins(modules: Any, *, source: str, base_dir: Path | None) -> None:
    """Import the ``plugins`` of a pipeline file; a failure is a ConfigError naming it."""
    if not isinstance(modules, list):
        return  # validation reports the type
    for i, name in enumerate(modules):
        if not isinstance(name, str):
            continue
        try:
            import_user_module(name, base_dir)
        except ImportError as exc:
            raise ConfigError(f"{source}: plugins[{i}]: cannot import {name!r}: {exc}") from None


def import_user_module(name: str, base_dir: Path | None) -> ModuleType:
    """Import a user's module, looking in ``base_dir`` (the pipeline file's folder) first."""
    with user_modules_from(base_dir):
        return importlib.import_module(name)


@contextlib.contextmanager
def user_modules_from(base_dir: Path | None) -> Iterator[None]:
    """Within the block, user modules are found in ``base_dir`` before the Python path."""
    if base_dir is None:
        yield
        return
    folder = str(Path(base_dir).resolve())
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


_SOURCES = "edgetier.pipeline._sources"
_STAGES = "edgetier.pipeline._stages"
register_source(FileSource, f"{_SOURCES}:FileFrames", extra="video")
register_source(StreamSource, f"{_SOURCES}:StreamFrames", extra="video")
register_source(V4L2Source, f"{_SOURCES}:V4L2Frames", extra="video")
register_source(ImageFolderSource, f"{_SOURCES}:ImageFolderFrames", extra="video")
register_source(SyntheticSource, f"{_SOURCES}:SyntheticFrames", extra="video")
register_stage(DetectorStage, f"{_STAGES}:Detector", extra="video")
register_stage(ClassifierStage, f"{_STAGES}:Classifier", extra="video")
register_stage(CascadeStage, f"{_STAGES}:Cascade", extra="video")
register_stage(TrackerStage, f"{_STAGES}:Tracker", extra="video")
register_stage(AnalyticsStage, f"{_STAGES}:Analytics", extra="video")
register_stage(PythonStage, f"{_STAGES}:PythonCode", extra="video")
