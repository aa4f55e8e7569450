"""Configs of the built-in sinks (light: pydantic only, so that validating a pipeline file
needs none of the sinks' libraries)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgetier.pipeline._config import ReconnectConfig, SinkConfig

__all__ = ["JsonlSink", "MqttSink", "OpcUaSink", "PrometheusSink", "VideoSink", "WebhookSink"]


class MqttSink(SinkConfig):
    """JSON events on ``edgetier/<node>/<pipeline>/<kind>``, QoS 1, from a disk outbox."""

    kind: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(30, ge=5)
    outbox: str | None = Field(None, description="SQLite file; default var/pipelines/NAME/")
    drain_timeout_s: float = Field(5.0, ge=0)


class OpcUaSink(SinkConfig):
    """An OPC UA server with per-stream variables and an EdgeTierEvent type."""

    kind: Literal["opcua"]
    endpoint: str = "opc.tcp://127.0.0.1:4840/edgetier/"
    namespace: str = "urn:edgetier:pipeline"


class WebhookSink(SinkConfig):
    """Events POSTed as JSON arrays, retried with exponential back-off."""

    kind: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    initial_backoff_s: float = Field(0.5, gt=0)
    max_backoff_s: float = Field(10.0, gt=0)
    max_pending: int = Field(10_000, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)


class JsonlSink(SinkConfig):
    """One JSON event per line, appended to ``path``."""

    kind: Literal["jsonl"]
    path: str


class VideoSink(SinkConfig):
    """Annotated video per stream, to a file (`path`) or published to an RTSP server (`url`)."""

    kind: Literal["video"]
    path: str | None = Field(None, description="may hold {stream}, e.g. out/{stream}.mp4")
    url: str | None = Field(
        None,
        pattern=r"^rtsps?://",
        description="RTSP server to publish to (ANNOUNCE/RECORD); may hold {stream}",
    )
    codec: str = Field("auto", description="auto = libx264 where FFmpeg has it, else mpeg4")
    fps: float | None = Field(
        None, gt=0, description="None = the source's own frame rate (25 where it has none)"
    )
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


class PrometheusSink(SinkConfig):
    """Per-stream figures on a /metrics endpoint of its own."""

    kind: Literal["prometheus"]
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
