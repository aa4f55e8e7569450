"""The webhook, video (file and a dead RTSP output) and Prometheus sinks, on their own and
inside pipelines: local servers on 127.0.0.1, port 0."""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import supervision as sv
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from edgetier.errors import ConfigError
from edgetier.pipeline import FrameMeta, FramePacket, Pipeline, parse_pipeline
from edgetier.pipeline._frame import Event
from edgetier.pipeline.sinks import PrometheusSink, SinkContext, VideoSink, WebhookSink
from edgetier.pipeline.sinks._prometheus import Prometheus
from edgetier.pipeline.sinks._video import Video
from edgetier.pipeline.sinks._webhook import Webhook
from edgetier.testing import free_port

SCENE = {"width": 160, "height": 128, "fps": 10, "duration_s": 60, "vehicles": 2}


def _ctx(tmp_path: Path, stats: dict[str, Any] | None = None) -> SinkContext:
    return SinkContext(
        node="edge1",
        pipeline="p",
        stream_ids=["cam"],
        state_dir=tmp_path,
        base_dir=tmp_path,
        stats=lambda: stats or {},
    )


def _events(n: int, kind: str = "counts") -> list[Event]:
    return [Event(kind, "cam", {"n": i}, frame_index=i) for i in range(n)]


class Receiver:
    """An aiohttp endpoint that records every POSTed JSON body and answers `statuses` in
    turn (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[Any] = []
        self.accepted: list[Any] = []
        self._statuses = collections.deque(statuses or [])

    async def _post(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        status = self._statuses.popleft() if self._statuses else 200
        if status < 300:
            self.accepted.extend(body)
        return web.Response(status=status)

    def accepted_ids(self) -> list[str]:
        return [e["id"] for e in self.accepted]

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._post)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._runner.cleanup()


def _webhook(url: str, tmp_path: Path, **fields: Any) -> Webhook:
    fields.setdefault("initial_backoff_s", 0.05)
    cfg = WebhookSink(kind="webhook", url=url, **fields)
    return Webhook(cfg, _ctx(tmp_path))


# -- webhook ---------------------------------------------------------------------------


async def test_webhook_posts_events_as_json_with_ids(tmp_path: Path) -> None:
    sent = _events(5) + _events(2, "detections")  # every kind unless `kinds` lists some
    async with Receiver() as server:
        sink = _webhook(server.url, tmp_path)
        await sink.start()
        await sink.handle(sent)
        await sink.stop()
    assert server.accepted_ids() == [e.id for e in sent]
    first = server.accepted[0]
    assert first["kind"] == "counts" and first["node"] == "edge1" and first["pipeline"] == "p"
    assert first["stream"] == "cam" and first["data"] == {"n": 0} and first["frame"] == 0
    assert sink.delivered == 7 and sink.dropped == 0
    async with Receiver() as server:
        counts_only = _webhook(server.url, tmp_path, kinds=["counts"])
        await counts_only.start()
        await counts_only.handle(sent)
        await counts_only.stop()
    assert server.accepted_ids() == [e.id for e in sent[:5]]


async def test_webhook_retries_server_errors_with_back_off_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Receiver(statuses=[500, 503, 200]) as server:
        sink = _webhook(server.url, tmp_path, initial_backoff_s=0.1)
        await sink.start()
        sent = _events(4)
        with caplog.at_level(logging.WARNING, logger="edgetier.pipeline"):
            await sink.handle(sent)
            await sink.stop()
    assert len(server.bodies) == 3  # the same batch, posted three times
    assert server.accepted_ids() == [e.id for e in sent]
    assert sink.delivered == 4 and sink.dropped == 0
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries == [
        "webhook webhook: HTTP 500; retry 1 in 0.1 s",
        "webhook webhook: HTTP 503; retry 2 in 0.2 s",  # the back-off doubles
    ]


async def test_webhook_max_pending_drops_the_oldest_events(tmp_path: Path) -> None:
    async with Receiver() as server:
        sink = _webhook(server.url, tmp_path, max_pending=4)
        sent = _events(10)
        await sink.handle(sent)  # before start: nothing is sent yet, 10 events wait
        assert sink.dropped == 6
        await sink.start()
        await sink.stop()
    assert server.accepted_ids() == [e.id for e in sent[-4:]]
    assert sink.delivered == 4


async def test_a_dead_webhook_does_not_stop_the_pipeline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = parse_pipeline(
        {
            "name": "dead-hook",
            "sources": [{"id": "cam", "kind": "synthetic", "scene": SCENE}],
            "stages": [{"id": "a", "kind": "analytics", "summary_interval_s": 0.2}],
            "sinks": [
                {
                    "kind": "webhook",
                    "url": f"http://127.0.0.1:{free_port()}/hook",
                    "max_attempts": 2,
                    "initial_backoff_s": 0.05,
                    "timeout_s": 1,
                },
                {"kind": "jsonl", "path": str(tmp_path / "events.jsonl")},
            ],
        }
    )
    pipeline = Pipeline(cfg, state_dir=tmp_path)
    with caplog.at_level(logging.ERROR, logger="edgetier.pipeline"):
        stats = await pipeline.run(max_frames=30)
    assert stats["cam"].frames_out == 30
    hook = pipeline.sinks[0]
    assert isinstance(hook, Webhook)
    written = len((tmp_path / "events.jsonl").read_text().splitlines())
    assert written > 1 and hook.delivered == 0 and hook.dropped == written
    assert any("dropped after 2 attempts (ConnectError" in r.getMessage() for r in caplog.records)


# -- video -----------------------------------------------------------------------------

W, H = 96, 64
BOX = (20, 24, 60, 52)  # x1, y1, x2, y2


def _frames(n: int) -> list[FramePacket]:
    """Grey gradients with one detection in every other frame."""
    out = []
    for i in range(n):
        image = np.tile(np.linspace(60, 160, W, dtype=np.uint8), (H, 1))
        image = np.repeat(image[:, :, None], 3, axis=2) + np.uint8(i)
        det = sv.Detections.empty()
        if i % 2 == 0:
            det = sv.Detections(
                xyxy=np.array([BOX], np.float32),
                confidence=np.array([0.9], np.float32),
                class_id=np.array([0]),
                data={"class_name": np.array(["vehicle"])},
            )
        out.append(
            FramePacket(meta=FrameMeta("cam", i, 0.0, i / 10, W, H), image=image, detections=det)
        )
    return out


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


async def test_video_file_has_every_frame_at_the_input_size_with_boxes_drawn(
    tmp_path: Path,
) -> None:
    cfg = VideoSink(kind="video", path=str(tmp_path / "out" / "{stream}.mp4"), fps=10)
    sink = Video(cfg, _ctx(tmp_path))
    await sink.start()
    frames = _frames(12)
    for frame in frames:
        await sink.frame(frame)
    await sink.stop()
    decoded = _decode(tmp_path / "out" / "cam.mp4")
    assert len(decoded) == len(frames) == sink.writers["cam"].written
    assert {d.shape for d in decoded} == {(H, W, 3)}
    assert sink.dropped == 0
    x1, y1, x2, y2 = BOX
    ring = np.zeros((H, W), bool)
    ring[y1 : y2 + 1, x1 : x2 + 1] = True
    ring[y1 + 3 : y2 - 2, x1 + 3 : x2 - 2] = False  # the 2-pixel box outline, plus a margin
    away = np.ones((H, W), bool)
    away[: y2 + 4, : x2 + 4] = False  # the box and its label above it
    for frame, out in zip(frames, decoded, strict=True):
        diff = np.abs(out.astype(np.int16) - frame.image.astype(np.int16)).mean(axis=2)
        assert diff[away].mean() < 8  # only coding noise away from the box
        if len(frame.detections):
            assert diff[ring].mean() > 30, f"no box drawn on frame {frame.meta.frame_index}"
        else:
            assert diff[ring].mean() < 8


async def test_a_dead_rtsp_output_drops_frames_and_never_blocks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = VideoSink(
        kind="video",
        url=f"rtsp://127.0.0.1:{free_port()}/{{stream}}",
        fps=10,
        reconnect={"initial_backoff_s": 0.01, "max_backoff_s": 0.02, "max_attempts": 3},
    )
    sink = Video(cfg, _ctx(tmp_path))
    await sink.start()
    frames = _frames(4)
    with caplog.at_level(logging.WARNING, logger="edgetier.pipeline"):
        for i in range(400):
            await sink.frame(frames[i % 4])  # returns at once: the writer has its own thread
            if "gave up" in caplog.text:
                break
            await asyncio.sleep(0.005)
        await sink.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        f"RTSP output {cfg.url.replace('{stream}', 'cam')} unavailable" in m for m in messages
    )
    assert any("gave up after 3 attempt(s)" in m for m in messages)
    assert sink.writers["cam"].written == 0
    assert sink.dropped == i + 1


def test_video_sink_needs_exactly_one_of_path_and_url() -> None:
    base = {"name": "v", "sources": [{"id": "s", "kind": "synthetic"}]}
    for sink, message in [
        ({"kind": "video"}, "exactly one of path and url, got neither"),
        ({"kind": "video", "path": "a.mp4", "url": "rtsp://h/x"}, "got both"),
        ({"kind": "video", "url": "http://h/x"}, "sinks[0].url: must match ^rtsps?://"),
    ]:
        with pytest.raises(ConfigError, match=None) as info:
            parse_pipeline({**base, "sinks": [sink]})
        assert message in str(info.value)
        assert "sinks[0]" in str(info.value)


# -- prometheus ------------------------------------------------------------------------


async def test_prometheus_serves_per_stream_frames_drops_and_latency(tmp_path: Path) -> None:
    cfg = parse_pipeline(
        {
            "name": "prom",
            "sources": [
                {"id": "a", "kind": "synthetic", "scene": SCENE, "max_frames": 10},
                {"id": "b", "kind": "synthetic", "scene": SCENE, "max_frames": 15},
                # a live stream that runs until the test has scraped
                {"id": "live", "kind": "synthetic", "scene": SCENE, "realtime": True},
            ],
            "sinks": [{"kind": "prometheus", "port": 0}],
        }
    )
    pipeline = Pipeline(cfg, state_dir=tmp_path)
    run = asyncio.create_task(pipeline.run())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not (pipeline.stats["a"].done and pipeline.stats["b"].done):
            assert asyncio.get_running_loop().time() < deadline, "streams a and b never ended"
            await asyncio.sleep(0.05)
        sink = pipeline.sinks[0]
        assert isinstance(sink, Prometheus) and sink.port
        async with httpx.AsyncClient() as client:
            reply = await client.get(f"http://127.0.0.1:{sink.port}/metrics")
    finally:
        pipeline.stop()
        await run
    assert reply.status_code == 200
    samples = {
        (s.name, s.labels.get("stream"), s.labels.get("le")): s
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
        if s.name.startswith("edgetier_pipeline")
    }
    names = {name for name, _, _ in samples}
    assert names >= {
        "edgetier_pipeline_fps",
        "edgetier_pipeline_frames_total",
        "edgetier_pipeline_dropped_frames_total",
        "edgetier_pipeline_latency_seconds_count",
        "edgetier_pipeline_latency_seconds_bucket",
        "edgetier_pipeline_latency_seconds_sum",
    }
    for sid, n in (("a", 10), ("b", 15)):
        assert samples[("edgetier_pipeline_frames_total", sid, None)].value == n
        assert samples[("edgetier_pipeline_latency_seconds_count", sid, None)].value == n
        assert samples[("edgetier_pipeline_latency_seconds_bucket", sid, "+Inf")].value == n
        assert samples[("edgetier_pipeline_dropped_frames_total", sid, None)].value == 0
        assert samples[("edgetier_pipeline_frames_total", sid, None)].labels == {
            "pipeline": "prom",
            "stream": sid,
        }
    assert ("edgetier_pipeline_frames_total", "live", None) in samples


async def test_prometheus_sink_counts_the_frames_it_is_given(tmp_path: Path) -> None:
    sink = Prometheus(PrometheusSink(kind="prometheus", port=0), _ctx(tmp_path))
    await sink.start()
    try:
        for frame in _frames(7):
            await sink.frame(frame)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{sink.port}/metrics")).text
    finally:
        await sink.stop()
    counts = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "edgetier_pipeline_latency_seconds_count"
    ]
    assert [(s.labels, s.value) for s in counts] == [({"pipeline": "p", "stream": "cam"}, 7)]


async def test_video_file_takes_the_sources_rate_and_lasts_as_long(tmp_path: Path) -> None:
    """No fps in the config: a 10 FPS source gives a 10 FPS video of the same length."""
    cfg = VideoSink(kind="video", path=str(tmp_path / "{stream}.mp4"))
    sink = Video(cfg, _ctx(tmp_path))
    await sink.start()
    for frame in _frames(20):  # media times 0.0, 0.1, ... 1.9 s
        await sink.frame(frame)
    await sink.stop()
    with av.open(str(tmp_path / "cam.mp4")) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(10.0, rel=0.01)
        frames = list(container.decode(video=0))
    assert len(frames) == 20
    assert float(frames[-1].pts * frames[-1].time_base) == pytest.approx(1.9, abs=0.01)
