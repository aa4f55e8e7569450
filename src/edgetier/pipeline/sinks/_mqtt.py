"""The MQTT sink: QoS 1 publishing from an on-disk SQLite outbox; nothing is lost when the
broker is away, a row leaves the outbox only on its PUBACK."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from pathlib import Path
from typing import Any

from edgetier.pipeline._frame import Event
from edgetier.pipeline._outbox import Outbox
from edgetier.pipeline.sinks._base import Sink, SinkContext
from edgetier.pipeline.sinks._configs import MqttSink

log = logging.getLogger("edgetier.pipeline")


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
