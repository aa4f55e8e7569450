"""The OPC UA sink: an asyncua client reads per-stream variables and receives events."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from edgetier.pipeline import Pipeline, parse_pipeline
from edgetier.testing import free_port, make_random_detector

pytestmark = pytest.mark.integration


async def _connect(url: str, timeout_s: float = 20) -> Client:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        client = Client(url)
        try:
            await client.connect()
            return client
        except (OSError, TimeoutError, ua.UaError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_client_reads_variables_and_receives_events(tmp_path: Path) -> None:
    make_random_detector(tmp_path / "det.onnx")
    url = f"opc.tcp://127.0.0.1:{free_port()}/edgetier/"
    cfg = parse_pipeline(
        {
            "name": "ua",
            "node": "n",
            "sources": [
                {
                    "id": "cam",
                    "kind": "synthetic",
                    "realtime": True,
                    "scene": {"width": 160, "height": 128, "fps": 20, "duration_s": 30},
                }
            ],
            "stages": [
                {"id": "d", "kind": "detector", "model": "det.onnx"},
                {"id": "t", "kind": "tracker"},
                {
                    "id": "a",
                    "kind": "analytics",
                    "summary_interval_s": 0.2,
                    "lines": [{"id": "gate", "start": [80, 0], "end": [80, 128]}],
                },
            ],
            "sinks": [{"kind": "opcua", "endpoint": url}],
        }
    )
    pipeline = Pipeline(cfg, base_dir=tmp_path, state_dir=tmp_path)
    run = asyncio.create_task(pipeline.run(duration_s=25))
    events: list[Any] = []

    class Handler:
        def event_notification(self, event: Any) -> None:
            events.append(event)

    client = await _connect(url)
    try:
        idx = await client.get_namespace_index("urn:edgetier:pipeline")
        root = await client.nodes.objects.get_child([f"{idx}:ua"])
        stream = await root.get_child([f"{idx}:cam"])
        names = {(await v.read_browse_name()).Name for v in await stream.get_variables()}
        assert {"Frames", "Objects", "LastEvent", "Count_gate_In", "Count_gate_Out"} <= names
        etype = await client.nodes.root.get_child(
            ["0:Types", "0:EventTypes", "0:BaseEventType", f"{idx}:EdgeTierEvent"]
        )
        sub = await client.create_subscription(50, Handler())
        await sub.subscribe_events(root, etype)
        frames = await stream.get_child([f"{idx}:Frames"])
        for _ in range(200):  # events of other kinds may come first: wait for a summary
            if any(e.Kind == "counts" for e in events) and await frames.read_value() > 0:
                break
            await asyncio.sleep(0.1)
        assert await frames.read_value() > 0
        counts = [e for e in events if e.Kind == "counts"]
        assert counts and counts[0].Stream == "cam"
        payload = json.loads(counts[0].Payload)
        assert payload["id"] == counts[0].EdgeTierId and "gate" in payload["data"]["lines"]
        last = json.loads(await (await stream.get_child([f"{idx}:LastEvent"])).read_value())
        assert last["stream"] == "cam"
        await sub.delete()
    finally:
        await client.disconnect()
        pipeline.stop()
        await run
