"""Sinks: MQTT (durable outbox), OPC UA server, webhooks, JSONL, Prometheus; the annotated
video sink (file or RTSP) is in ``_video_out``.

A sink gets the events of each frame (`handle`), and, if `wants_frames`, the frames too.
Each sink filters events by its `kinds` (default: every kind but per-frame `detections`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from edgetier.pipeline._config import (
    JsonlSink,
    MqttSink,
    OpcUaSink,
    PrometheusSink,
    WebhookSink,
)
from edgetier.pipeline._frame import Event, FramePacket
from edgetier.pipeline._outbox import Outbox

log = logging.getLogger("edgetier.pipeline")


@dataclass
class SinkContext:
    """What a sink may know of the pipeline it serves."""

    node: str
    pipeline: str
    stream_ids: list[str]
    state_dir: Path
    base_dir: Path
    lines: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)
    stats: Callable[[], dict[str, Any]] = dict  # stream id -> StreamStats


class Sink:
    """Base class: override what you need."""

    wants_frames = False

    def __init__(self, cfg: Any, ctx: SinkContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = cfg.id or cfg.kind
        self.kinds = set(cfg.kinds) if cfg.kinds is not None else None

    def accepts(self, event: Event) -> bool:
        return event.kind != "detections" if self.kinds is None else event.kind in self.kinds

    async def start(self) -> None: ...

    async def handle(self, events: list[Event]) -> None: ...

    async def frame(self, frame: FramePacket) -> None: ...

    async def stop(self) -> None: ...


def mqtt_topic(node: str, pipeline: str, kind: str) -> str:
    return f"edgetier/{node}/{pipeline}/{kind}"


class Mqtt(Sink):
    """QoS 1 publishing from an SQLite outbox; a row is deleted only on its PUBACK."""

    _CONNECTED = -1

    def __init__(self, cfg: MqttSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.cfg: MqttSink = cfg
        path = Path(cfg.outbox) if cfg.outbox else ctx.state_dir / f"mqtt-{self.name}.sqlite"
        self.outbox = Outbox(path)
        self._acks: collections.deque[int] = collections.deque()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._cursor = 0
        self._wake = asyncio.Event()
        self._connected = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self.published = 0
        self.acked = 0
        self.max_inflight = 500

    async def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        loop = asyncio.get_running_loop()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id or f"edgetier-{self.ctx.node}-{self.ctx.pipeline}",
            clean_session=True,
        )
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self.cfg.password)
        client.max_inflight_messages_set(self.max_inflight * 2)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(min_delay=1, max_delay=8)

        def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if getattr(reason, "is_failure", False):
                log.warning("mqtt %s: connection refused: %s", self.name, reason)
                return
            self._connected = True
            self._acks.append(self._CONNECTED)
            log.info("mqtt %s: connected to %s:%d", self.name, self.cfg.host, self.cfg.port)
            wake()

        def on_disconnect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            self._connected = False
            if not self._closing:
                log.warning(
                    "mqtt %s: disconnected (%s); events wait in %s (%d)",
                    self.name,
                    reason,
                    self.outbox.path,
                    len(self.outbox),
                )

        def on_publish(_c: Any, _u: Any, mid: int, _r: Any, _p: Any) -> None:
            self._acks.append(mid)
            wake()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        client.loop_start()
        self._client = client
        pending = len(self.outbox)
        if pending:
            log.info(
                "mqtt %s: %d events from an earlier run wait in the outbox", self.name, pending
            )
        self._task = asyncio.create_task(self._pump(), name=f"mqtt-{self.name}")

    async def handle(self, events: list[Event]) -> None:
        rows = [
            (
                e.id,
                mqtt_topic(self.ctx.node, self.ctx.pipeline, e.kind),
                e.to_json(node=self.ctx.node, pipeline=self.ctx.pipeline),
            )
            for e in events
            if self.accepts(e)
        ]
        if rows:
            self.outbox.add(rows)
            self._wake.set()

    def _take_acks(self) -> None:
        done: list[int] = []
        while self._acks:
            mid = self._acks.popleft()
            if mid == self._CONNECTED:  # a new session: everything unacked is sent again
                self._inflight.clear()
                self._cursor = 0
                continue
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                done.append(seq)
        if done:
            self.outbox.delete(done)
            self.acked += len(done)

    async def _pump(self) -> None:
        import paho.mqtt.client as mqtt

        while True:
            self._take_acks()
            room = self.max_inflight - len(self._inflight)
            if self._connected and room > 0:
                for seq, topic, payload in self.outbox.after(self._cursor, room):
                    info = self._client.publish(topic, payload, qos=1)
                    if info.rc != mqtt.MQTT_ERR_SUCCESS:
                        break  # disconnected meanwhile: the row stays and is sent later
                    self._inflight[info.mid] = seq
                    self._cursor = seq
                    self.published += 1
            drained = not self._inflight and not self._acks
            if self._closing and drained and not self.outbox.after(self._cursor, 1):
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.2)

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.cfg.drain_timeout_s)
            except TimeoutError:
                self._task.cancel()
        left = len(self.outbox)
        if left:
            log.warning(
                "mqtt %s: %d events not acknowledged yet stay in %s for the next run",
                self.name,
                left,
                self.outbox.path,
            )
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        self.outbox.close()


class OpcUa(Sink):
    """An OPC UA server run by the node: per-stream variables and an EdgeTierEvent type."""

    wants_frames = True

    def __init__(self, cfg: OpcUaSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.cfg: OpcUaSink = cfg
        self._server: Any = None
        self._vars: dict[tuple[str, str], Any] = {}
        self._last_frames_write: dict[str, float] = {}
        self.event_type: Any = None

    async def _variable(self, stream: str, name: str, value: Any, vtype: Any) -> Any:
        node = self._vars.get((stream, name))
        if node is None:
            parent = self._streams[stream]
            node = await parent.add_variable(self._idx, name, value, varianttype=vtype)
            self._vars[(stream, name)] = node
        return node

    async def start(self) -> None:
        from asyncua import ua
        from asyncua.server.server import Server
        from asyncua.ua.object_ids import ObjectIds

        # asyncua logs every session, subscription and node at INFO: thousands of lines a
        # run. Quiet it unless its level was set on purpose.
        ua_log = logging.getLogger("asyncua")
        if ua_log.level == logging.NOTSET:
            ua_log.setLevel(logging.WARNING)
        self._ua = ua
        server = Server()
        await server.init()
        server.set_endpoint(self.cfg.endpoint)
        server.set_server_name(f"EdgeTier {self.ctx.node} {self.ctx.pipeline}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self._idx = await server.register_namespace(self.cfg.namespace)
        root = await server.nodes.objects.add_object(self._idx, self.ctx.pipeline)
        self.root = root
        self._streams = {}
        I64, I32, U64, S = (
            ua.VariantType.Int64,
            ua.VariantType.Int32,
            ua.VariantType.UInt64,
            ua.VariantType.String,
        )
        for sid in self.ctx.stream_ids:
            self._streams[sid] = await root.add_object(self._idx, sid)
            await self._variable(sid, "Frames", 0, U64)
            await self._variable(sid, "Objects", 0, I32)
            await self._variable(sid, "LastEvent", "", S)
            for line in self.ctx.lines:
                await self._variable(sid, f"Count_{line}_In", 0, I64)
                await self._variable(sid, f"Count_{line}_Out", 0, I64)
            for zone in self.ctx.zones:
                await self._variable(sid, f"Occupancy_{zone}", 0, I32)
        self.event_type = await server.create_custom_event_type(
            self._idx,
            "EdgeTierEvent",
            ObjectIds.BaseEventType,
            [("Kind", S), ("Stream", S), ("EdgeTierId", S), ("Payload", S)],
        )
        self._gen = await server.get_event_generator(self.event_type, root.nodeid)
        await server.start()
        self._server = server
        log.info("opcua %s: serving %s", self.name, self.cfg.endpoint)

    async def _set(self, stream: str, name: str, value: Any, vtype: Any) -> None:
        if stream not in self._streams:
            return
        node = await self._variable(stream, name, value, vtype)
        await node.write_value(value, vtype)

    async def handle(self, events: list[Event]) -> None:
        ua = self._ua
        for e in events:
            if not self.accepts(e):
                continue
            sid, data = e.stream_id, e.data
            if e.kind == "line_crossing":
                line = data["line"]
                await self._set(
                    sid, f"Count_{line}_In", int(data["count_in"]), ua.VariantType.Int64
                )
                await self._set(
                    sid, f"Count_{line}_Out", int(data["count_out"]), ua.VariantType.Int64
                )
            elif e.kind == "counts":
                for line, c in data.get("lines", {}).items():
                    await self._set(sid, f"Count_{line}_In", int(c["in"]), ua.VariantType.Int64)
                    await self._set(sid, f"Count_{line}_Out", int(c["out"]), ua.VariantType.Int64)
                for zone, z in data.get("zones", {}).items():
                    await self._set(
                        sid, f"Occupancy_{zone}", int(z["occupancy"]), ua.VariantType.Int32
                    )
            elif e.kind in ("zone_enter", "zone_exit"):
                await self._set(
                    sid, f"Occupancy_{data['zone']}", int(data["occupancy"]), ua.VariantType.Int32
                )
            payload = e.to_json(node=self.ctx.node, pipeline=self.ctx.pipeline).decode()
            await self._set(sid, "LastEvent", payload, ua.VariantType.String)
            ev = self._gen.event
            ev.Kind, ev.Stream, ev.EdgeTierId, ev.Payload = e.kind, sid, e.id, payload
            await self._gen.trigger(message=f"{e.kind} on {sid}")

    async def frame(self, frame: FramePacket) -> None:
        sid = frame.meta.stream_id
        now = time.monotonic()
        if now - self._last_frames_write.get(sid, 0.0) < 0.5:
            return
        self._last_frames_write[sid] = now
        stats = self.ctx.stats().get(sid)
        count = stats.frames_out if stats is not None else frame.meta.frame_index + 1
        await self._set(sid, "Frames", int(count), self._ua.VariantType.UInt64)
        await self._set(sid, "Objects", len(frame.detections), self._ua.VariantType.Int32)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()


class Webhook(Sink):
    """POSTs JSON arrays of events; retries with exponential back-off; bounded memory."""

    def __init__(self, cfg: WebhookSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.cfg: WebhookSink = cfg
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.dropped = 0
        self.delivered = 0

    async def start(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=self.cfg.timeout_s, headers=self.cfg.headers)
        self._task = asyncio.create_task(self._run(), name=f"webhook-{self.name}")

    async def handle(self, events: list[Event]) -> None:
        for e in events:
            if self.accepts(e):
                if len(self._pending) >= self.cfg.max_pending:
                    self._pending.popleft()
                    self.dropped += 1
                self._pending.append(e.to_dict(node=self.ctx.node, pipeline=self.ctx.pipeline))
        if self._pending:
            self._wake.set()

    async def _run(self) -> None:
        while not (self._closing and not self._pending):
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending.popleft() for _ in range(min(len(self._pending), 100))]
            if not await self._post(batch):
                self.dropped += len(batch)

    async def _post(self, batch: list[dict[str, Any]]) -> bool:
        import httpx

        backoff = self.cfg.initial_backoff_s
        body = orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY)
        for attempt in range(1, self.cfg.max_attempts + 1):
            try:
                r = await self._client.post(
                    self.cfg.url, content=body, headers={"content-type": "application/json"}
                )
                if r.status_code < 300:
                    self.delivered += len(batch)
                    return True
                retry = r.status_code >= 500 or r.status_code == 429
                reason = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                retry, reason = True, f"{type(exc).__name__}: {exc}"
            if not retry or attempt == self.cfg.max_attempts:
                log.error(
                    "webhook %s: %d events dropped after %d attempts (%s)",
                    self.name,
                    len(batch),
                    attempt,
                    reason,
                )
                return False
            log.warning("webhook %s: %s; retry %d in %.1f s", self.name, reason, attempt, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.cfg.max_backoff_s)
        return False

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._task, self.cfg.timeout_s * 2)
        except TimeoutError:
            self._task.cancel()
        await self._client.aclose()


class Jsonl(Sink):
    """One JSON event per line, appended to a file."""

    def __init__(self, cfg: JsonlSink, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.path = Path(cfg.path)  # outputs are relative to the working directory
        self._file: Any = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")

    async def handle(self, events: list[Event]) -> None:
        lines = [
            e.to_json(node=self.ctx.node, pipeline=self.ctx.pipeline) + b"\n"
            for e in events
            if self.accepts(e)
        ]
        if lines:
            self._file.writelines(lines)
            self._file.flush()

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()


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

    async def frame(self, frame: FramePacket) -> None:
        self._latency.labels(self.ctx.pipeline, frame.meta.stream_id).observe(
            max(0.0, time.time() - frame.meta.capture_ts_s)
        )

    async def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


_SINKS: dict[str, type[Sink]] = {
    "mqtt": Mqtt,
    "opcua": OpcUa,
    "webhook": Webhook,
    "jsonl": Jsonl,
    "prometheus": Prometheus,
}


def build_sink(cfg: Any, ctx: SinkContext) -> Sink:
    if cfg.kind == "video":  # its own module, which builds on Sink
        from edgetier.pipeline._video_out import Video

        return Video(cfg, ctx)
    return _SINKS[cfg.kind](cfg, ctx)
