"""The Prometheus sink: per-stream FPS, frames, drops and capture-to-sink latency on its
own /metrics endpoint."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from edgetier.pipeline._frame import Event, FramePacket
from edgetier.pipeline.sinks._base import Sink, SinkContext
from edgetier.pipeline.sinks._configs import PrometheusSink

log = logging.getLogger("edgetier.pipeline")


class Prometheus(Sink):
    """Per-stream FPS, frames, drops and capture->sink latency on a /metrics endpoint."""

    wants_frames = True

    def __init__(self, cfg: PrometheusSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.cfg: PrometheusSink = cfg
        self.port: int | None = None

    async def start(self) -> None:
        from prometheus_client import CollectorRegistry, Histogram, start_http_server
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        registry = CollectorRegistry()
        ctx = self.ctx

        class _Streams:
            def collect(self) -> Iterable[Any]:
                labels = ["pipeline", "stream"]
                fps = GaugeMetricFamily(
                    "edgetier_pipeline_fps", "Frames per second through the sinks", labels=labels
                )
                frames = CounterMetricFamily(
                    "edgetier_pipeline_frames", "Frames through the sinks", labels=labels
                )
                drops = CounterMetricFamily(
                    "edgetier_pipeline_dropped_frames",
                    "Frames dropped by back-pressure (live sources)",
                    labels=labels,
                )
                for sid, st in ctx.stats().items():
                    fps.add_metric([ctx.pipeline, sid], st.fps)
                    frames.add_metric([ctx.pipeline, sid], st.frames_out)
                    drops.add_metric([ctx.pipeline, sid], st.dropped)
                return [fps, frames, drops]

        registry.register(_Streams())  # type: ignore[arg-type]
        self._latency = Histogram(
            "edgetier_pipeline_latency_seconds",
            "Capture timestamp to sink, per stream",
            ["pipeline", "stream"],
            registry=registry,
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
        )
        self._server, self._thread = start_http_server(self.cfg.port, self.cfg.host, registry)
        self.port = int(self._server.server_port)
        log.info("prometheus %s: http://%s:%d/metrics", self.name, self.cfg.host, self.port)

    async def handle(self, events: list[Event]) -> None:
        """Events are not counted here: the figures come from the frames and the streams."""

    async def frame(self, frame: FramePacket) -> None:
        self._latency.labels(self.ctx.pipeline, frame.meta.stream_id).observe(
            max(0.0, time.time() - frame.meta.capture_ts_s)
        )

    async def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
