"""The MQTT sink against a real Mosquitto: QoS 1 from the on-disk outbox, nothing lost
when the broker is killed and restarted in the middle of a run (acceptance item 2)."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgetier.pipeline import Outbox, Pipeline, parse_pipeline
from edgetier.testing import Mosquitto

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
        reason="mosquitto is not installed (make system-deps)",
    ),
]


class Subscriber:
    """A persistent-session QoS 1 subscriber that records every message it gets."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self.topics: list[str] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="edgetier-test-sub", clean_session=False
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(json.loads(msg.payload))
            self.topics.append(msg.topic)

    def ids(self) -> set[str]:
        with self._lock:
            return {m["id"] for m in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(port: int, tmp_path: Path, *, seconds: float) -> Any:
    return parse_pipeline(
        {
            "name": "mqtt-test",
            "node": "edge1",
            "sources": [
                {
                    "id": "cam",
                    "kind": "synthetic",
                    "count": 2,
                    "realtime": True,
                    "scene": {
                        "width": 160,
                        "height": 128,
                        "fps": 20,
                        "duration_s": seconds,
                        "vehicles": 0,
                        "pedestrians": 0,
                        "plates": False,
                    },
                }
            ],
            "stages": [{"id": "a", "kind": "analytics", "summary_interval_s": 0.1}],
            "sinks": [
                {
                    "kind": "mqtt",
                    "port": port,
                    "drain_timeout_s": 20,
                    "outbox": str(tmp_path / "outbox.sqlite"),
                },
                {"kind": "jsonl", "path": str(tmp_path / "sent.jsonl")},
            ],
        }
    )


def _sent(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]


def _wait_for(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


async def test_events_arrive_with_topic_and_unique_ids(tmp_path: Path) -> None:
    with Mosquitto() as broker:
        sub = Subscriber(broker.port, "edgetier/#")
        try:
            await Pipeline(_config(broker.port, tmp_path, seconds=1.0), state_dir=tmp_path).run()
            sent = _sent(tmp_path)
            assert len(sent) >= 10
            assert _wait_for(lambda: sub.ids() >= {e["id"] for e in sent}, 10)
            assert set(sub.topics) == {
                "edgetier/edge1/mqtt-test/counts",
                "edgetier/edge1/mqtt-test/source_status",
            }
            assert len(Outbox(tmp_path / "outbox.sqlite")) == 0  # every PUBACK arrived
        finally:
            sub.close()


async def test_broker_killed_and_restarted_mid_run_loses_nothing(tmp_path: Path) -> None:
    broker = Mosquitto(persistence=True)
    with broker:
        sub = Subscriber(broker.port, "edgetier/#")
        try:
            await asyncio.sleep(1.5)  # the broker autosaves the subscription (every 1 s)
            pipeline = Pipeline(_config(broker.port, tmp_path, seconds=4.0), state_dir=tmp_path)
            run = asyncio.create_task(pipeline.run())
            await asyncio.to_thread(_wait_for, lambda: len(sub.ids()) >= 5, 20)
            received_before = len(sub.ids())
            broker.kill()
            await asyncio.sleep(1.5)  # events pile up in the outbox meanwhile
            pending_while_down = len(Outbox(tmp_path / "outbox.sqlite"))
            broker.start()
            await run
            sent_ids = {e["id"] for e in _sent(tmp_path)}
            assert received_before >= 5 and pending_while_down > 0
            ok = await asyncio.to_thread(_wait_for, lambda: sub.ids() >= sent_ids, 30)
            missing = sent_ids - sub.ids()
            assert ok, f"{len(missing)} of {len(sent_ids)} events never arrived"
            assert len(Outbox(tmp_path / "outbox.sqlite")) == 0
        finally:
            sub.close()


async def test_outbox_survives_a_run_without_broker(tmp_path: Path) -> None:
    from edgetier.testing import free_port

    port = free_port()  # nothing listens: every event stays on disk
    cfg = _config(port, tmp_path, seconds=0.5)
    cfg = cfg.model_copy(
        update={"sinks": [cfg.sinks[0].model_copy(update={"drain_timeout_s": 0.5}), cfg.sinks[1]]}
    )
    await Pipeline(cfg, state_dir=tmp_path).run()
    sent = {e["id"] for e in _sent(tmp_path)}
    assert len(Outbox(tmp_path / "outbox.sqlite")) == len(sent) > 0
    with Mosquitto(port=port) as broker:  # the next run, with a broker, sends them first
        sub = Subscriber(broker.port, "edgetier/#")
        try:
            cfg2 = _config(port, tmp_path, seconds=0.5)
            await Pipeline(cfg2, state_dir=tmp_path).run()
            assert _wait_for(lambda: sub.ids() >= sent, 10)
        finally:
            sub.close()
