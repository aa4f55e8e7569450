"""Sinks: where a pipeline's results go. MQTT (durable outbox), OPC UA server, webhooks,
JSONL files, annotated video (file or RTSP) and Prometheus.

A sink is one class deriving :class:`Sink`, one config deriving ``SinkConfig`` and one
registration (docs/extending.md)::

    register_sink(CsvSinkConfig, CsvSink)
    sinks:
      - {kind: csv, path: out/events.csv}
"""

from __future__ import annotations

from edgetier.pipeline._config import SINKS, SinkConfig, register_sink
from edgetier.pipeline.sinks._base import Sink, SinkContext
from edgetier.pipeline.sinks._configs import (
    JsonlSink,
    MqttSink,
    OpcUaSink,
    PrometheusSink,
    VideoSink,
    WebhookSink,
)

__all__ = [
    "JsonlSink",
    "MqttSink",
    "OpcUaSink",
    "PrometheusSink",
    "Sink",
    "SinkContext",
    "VideoSink",
    "WebhookSink",
    "build_sink",
    "register_sink",
]


def build_sink(config: SinkConfig, ctx: SinkContext) -> Sink:
    """The sink a config entry describes, ready to start."""
    return SINKS.load(config.kind)(config, ctx)


_BUILT_IN: dict[type[SinkConfig], str] = {
    MqttSink: "_mqtt:Mqtt",
    OpcUaSink: "_opcua:OpcUa",
    WebhookSink: "_webhook:Webhook",
    JsonlSink: "_jsonl:Jsonl",
    VideoSink: "_video:Video",
    PrometheusSink: "_prometheus:Prometheus",
}
for _config, _target in _BUILT_IN.items():
    register_sink(_config, f"{__name__}.{_target}", extra="video")
