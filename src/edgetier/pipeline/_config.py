"""The pipeline file: pydantic models for sources, stages, sinks and per-stream settings.

Every model forbids unknown fields; :func:`load_pipeline` turns validation errors into one
:class:`~edgetier.errors.ConfigError` whose lines name the file, the field path and what
is allowed.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgetier.errors import ConfigError

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectConfig(_Model):
    """Exponential back-off between attempts to reopen a lost or unreachable stream."""

    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    factor: float = Field(default=2.0, ge=1.0)
    max_attempts: int = Field(default=0, ge=0, description="0 = retry for ever")


class _SourceBase(_Model):
    id: str = Field(pattern=_ID)
    fps_cap: float | None = Field(None, gt=0, description="at most this many frames per second")
    backpressure: Literal["drop_oldest", "wait"] | None = Field(
        None, description="None = drop_oldest for live sources, wait for files"
    )
    queue_size: int = Field(4, ge=1, le=1024)
    max_frames: int | None = Field(None, ge=1, description="stop this stream after N frames")

    @property
    def live(self) -> bool:
        return False

    def policy(self) -> Literal["drop_oldest", "wait"]:
        if self.backpressure is not None:
            return self.backpressure
        return "drop_oldest" if self.live else "wait"


class FileSource(_SourceBase):
    kind: Literal["file"]
    path: str
    loop: bool = False
    decoder: Literal["auto", "software", "nvdec", "jetson"] = "auto"


class StreamSource(_SourceBase):
    """RTSP or HTTP(S) stream read through FFmpeg."""

    kind: Literal["rtsp", "http"]
    url: str
    decoder: Literal["auto", "software", "nvdec", "jetson"] = "auto"
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(10.0, gt=0)
    reconnect: ReconnectConfig = Field(default_factory=lambda: ReconnectConfig())

    @property
    def live(self) -> bool:
        return True


class V4L2Source(_SourceBase):
    kind: Literal["v4l2"]
    device: str = "/dev/video0"
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0)
    reconnect: ReconnectConfig = Field(default_factory=lambda: ReconnectConfig())

    @property
    def live(self) -> bool:
        return True


class ImageFolderSource(_SourceBase):
    kind: Literal["images"]
    path: str
    pattern: str = "*.jpg"
    fps: float = Field(10.0, gt=0, description="timestamps advance by 1/fps per image")
    loop: bool = False


class SyntheticSource(_SourceBase):
    """Synthetic road scenes with exact ground truth; `count` streams with seeds seed..seed+n-1."""

    kind: Literal["synthetic"]
    count: int = Field(1, ge=1, le=256)
    seed: int = 0
    realtime: bool = Field(False, description="pace frames at the scene's fps, like a camera")
    scene: dict[str, Any] = Field(default_factory=dict, description="fields of SceneConfig")

    @property
    def live(self) -> bool:
        return self.realtime


SourceConfig = Annotated[
    FileSource | StreamSource | V4L2Source | ImageFolderSource | SyntheticSource,
    Field(discriminator="kind"),
]


class _StageBase(_Model):
    id: str = Field(pattern=_ID)


class _ModelStage(_StageBase):
    model: str = Field(
        description="path to an ONNX file, relative to the pipeline file, or "
        "package://NAME for a model shipped with EdgeTier"
    )
    max_batch_size: int = Field(8, ge=1, le=1024)
    max_queue_delay_us: int = Field(2000, ge=0)
    instance_count: int = Field(1, ge=1, le=16)
    execution_providers: list[Literal["tensorrt", "cuda", "cpu"]] | None = Field(
        None, description="None = the GPU providers this onnxruntime has, then cpu"
    )
    intra_op_threads: int = Field(0, ge=0)


class DetectorStage(_ModelStage):
    kind: Literal["detector"]
    confidence: float = Field(0.25, ge=0, le=1)
    iou_threshold: float = Field(0.5, gt=0, le=1)
    classes: list[str] | None = Field(None, description="keep only these class names")
    max_detections: int = Field(300, ge=1)


class ClassifierStage(_ModelStage):
    """Whole-frame classifier: the label goes into the frame's labels and an event."""

    kind: Literal["classifier"]
    field: str = "label"
    min_score: float = Field(0.0, ge=0, le=1)
    emit_every: int = Field(1, ge=1, description="emit a classification event every N frames")


class CascadeStage(_ModelStage):
    """Model B on the crops of model A's detections, batched across frames and streams."""

    kind: Literal["cascade"]
    on_classes: list[str] = Field(min_length=1)
    field: str = Field("label", pattern=r"^[a-z][a-z0-9_]*$")
    min_box_px: int = Field(4, ge=1)
    padding: float = Field(0.0, ge=0, le=1)


class TrackerStage(_StageBase):
    kind: Literal["tracker"]
    lost_track_buffer: int = Field(30, ge=1)
    frame_rate: float = Field(30.0, gt=0)
    track_activation_threshold: float = Field(0.25, ge=0, le=1)
    minimum_consecutive_frames: int = Field(1, ge=1)
    minimum_iou_threshold: float = Field(0.1, ge=0, le=1)
    high_conf_det_threshold: float = Field(0.5, ge=0, le=1)


Point = tuple[float, float]


class LineConfig(_Model):
    id: str = Field(pattern=_ID)
    start: Point
    end: Point
    classes: list[str] | None = None
    anchor: Literal["center", "bottom_center"] = "center"


class ZoneConfig(_Model):
    id: str = Field(pattern=_ID)
    polygon: list[Point] = Field(min_length=3)
    classes: list[str] | None = None
    anchor: Literal["center", "bottom_center"] = "bottom_center"


class AnalyticsStage(_StageBase):
    kind: Literal["analytics"]
    lines: list[LineConfig] = []
    zones: list[ZoneConfig] = []
    pixels_per_metre: float | None = Field(None, gt=0, description="enables speed estimates")
    speed_window_s: float = Field(0.5, gt=0)
    summary_interval_s: float = Field(1.0, gt=0, description="a `counts` event per stream")


class PythonStage(_StageBase):
    """User code: `module:function` or `module:Class` (see docs/pipelines.md)."""

    kind: Literal["python"]
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    params: dict[str, Any] = {}
    ordered: bool = Field(True, description="frames of a stream arrive in order")


StageConfig = Annotated[
    DetectorStage | ClassifierStage | CascadeStage | TrackerStage | AnalyticsStage | PythonStage,
    Field(discriminator="kind"),
]

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


class _SinkBase(_Model):
    id: str | None = Field(None, pattern=_ID)
    kinds: list[EventKind] | None = Field(None, description="None = every kind but detections")


class MqttSink(_SinkBase):
    kind: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(30, ge=5)
    outbox: str | None = Field(None, description="SQLite file; default var/pipelines/NAME/")
    drain_timeout_s: float = Field(5.0, ge=0)


class OpcUaSink(_SinkBase):
    kind: Literal["opcua"]
    endpoint: str = "opc.tcp://127.0.0.1:4840/edgetier/"
    namespace: str = "urn:edgetier:pipeline"


class WebhookSink(_SinkBase):
    kind: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    initial_backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(10.0, gt=0)
    max_pending: int = Field(10_000, ge=1)
    headers: dict[str, str] = {}


class JsonlSink(_SinkBase):
    kind: Literal["jsonl"]
    path: str


class VideoSink(_SinkBase):
    """Annotated video per stream, to a file (`path`) or published to an RTSP server (`url`)."""

    kind: Literal["video"]
    path: str | None = Field(None, description="may hold {stream}, e.g. out/{stream}.mp4")
    url: str | None = Field(
        None,
        pattern=r"^rtsps?://",
        description="RTSP server to publish to (ANNOUNCE/RECORD); may hold {stream}",
    )
    codec: str = Field("auto", description="auto = libx264 where FFmpeg has it, else mpeg4")
    fps: float = Field(25.0, gt=0)
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    open_timeout_s: float = Field(5.0, gt=0, description="connecting to the RTSP server")
    queue_size: int = Field(
        8, ge=1, le=1024, description="frames waiting for the encoder, per stream"
    )
    reconnect: ReconnectConfig = Field(default_factory=lambda: ReconnectConfig())

    @model_validator(mode="after")
    def _one_target(self) -> VideoSink:
        if (self.path is None) == (self.url is None):
            given = "both" if self.path is not None else "neither"
            raise ValueError(f"a video sink needs exactly one of path and url, got {given}")
        return self


class PrometheusSink(_SinkBase):
    kind: Literal["prometheus"]
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


SinkConfig = Annotated[
    MqttSink | OpcUaSink | WebhookSink | JsonlSink | VideoSink | PrometheusSink,
    Field(discriminator="kind"),
]


class PipelineConfig(_Model):
    """The whole pipeline file."""

    version: Literal[1] = 1
    name: str = Field(pattern=_ID)
    node: str | None = Field(None, pattern=_ID, description="default: the host name")
    max_in_flight: int = Field(4, ge=1, le=64, description="frames per stream in the stages")
    sources: list[SourceConfig] = Field(min_length=1)
    stages: list[StageConfig] = []
    sinks: list[SinkConfig] = []

    @model_validator(mode="after")
    def _check_references(self) -> PipelineConfig:
        _unique("sources", [s.id for s in self.sources])
        _unique("stages", [s.id for s in self.stages])
        _unique("sinks", [s.id for s in self.sinks if s.id is not None])
        kinds = [s.kind for s in self.stages]
        for i, stage in enumerate(self.stages):
            if stage.kind == "cascade" and "detector" not in kinds[:i]:
                raise ValueError(f"stages[{i}] ({stage.id}): a cascade needs a detector before it")
            if stage.kind == "tracker" and "detector" not in kinds[:i]:
                raise ValueError(f"stages[{i}] ({stage.id}): a tracker needs a detector before it")
            if (
                stage.kind == "analytics"
                and (stage.lines or stage.zones or stage.pixels_per_metre)
                and "tracker" not in kinds[:i]
            ):
                raise ValueError(
                    f"stages[{i}] ({stage.id}): lines, zones and speed need a tracker before it"
                )
        return self

    def node_name(self) -> str:
        if self.node:
            return self.node
        return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64] or "node"


def _unique(where: str, ids: list[str]) -> None:
    seen: set[str] = set()
    for value in ids:
        if value in seen:
            raise ValueError(f"{where}: id {value!r} is used twice; ids must be unique")
        seen.add(value)


_TAGS = {
    "file",
    "rtsp",
    "http",
    "v4l2",
    "images",
    "synthetic",
    "detector",
    "classifier",
    "cascade",
    "tracker",
    "analytics",
    "python",
    "mqtt",
    "opcua",
    "webhook",
    "jsonl",
    "video",
    "prometheus",
    "function-after[_check_references()]",
    "function-after[_one_target()]",
}


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in _TAGS:
            continue  # the discriminator tag pydantic inserts after a list index
        elif part in _TAGS:
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str] | None:
    """Field names allowed at the parent of `loc` (for 'extra field' errors)."""
    model: Any = PipelineConfig
    kinds: dict[str, Any] = {}
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if part in kinds:
            model = kinds[part]
            kinds = {}
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        kinds = _models_in(field.annotation)
        if len(kinds) == 1:
            model = next(iter(kinds.values()))
            kinds = {}
    return sorted(model.model_fields) if hasattr(model, "model_fields") else None


def _models_in(annotation: Any) -> dict[str, Any]:
    """The pydantic models inside an annotation, keyed by their `kind` tag(s) or class name."""
    found: dict[str, Any] = {}
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            kind = item.model_fields.get("kind")
            tags = get_args(kind.annotation) if kind is not None else (item.__name__,)
            for tag in tags:
                found[str(tag)] = item
        else:
            stack.extend(get_args(item))
    return found


def format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: the pipeline file is invalid ({error.error_count()} error(s))"]
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(loc)
            msg = f"unknown field {loc[-1]!r}"
            if allowed:
                msg += f"; allowed: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "field required"
        elif "input" in err and err["type"] not in ("union_tag_invalid", "value_error"):
            msg += f" (got {err['input']!r})"
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"  {source}: {_field_path(loc)}: {msg}")
    return "\n".join(lines)


def parse_pipeline(data: Any, *, source: str = "<pipeline>") -> PipelineConfig:
    """Validate already-parsed YAML/JSON; raises ConfigError naming `source` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the pipeline file must be a mapping, got {type(data).__name__}"
        )
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(source, exc)) from None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pipeline file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_pipeline(data, source=str(path))
