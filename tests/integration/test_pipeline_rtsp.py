"""RTSP in and out against a real RTSP server (rtsp-server-perl, a publish/play relay).

The video sink publishes annotated frames that a PyAV reader decodes; the RTSP source
reads a published stream; a stream that drops comes back by itself (acceptance item 3),
and so does the video sink's output when the server restarts.

rtsp-server-perl carries RTP over UDP only (it accepts no interleaved TCP), so these tests
set `rtsp_transport: udp` on both sides; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from edgetier.pipeline import Pipeline, parse_pipeline
from edgetier.pipeline.sinks._video import Video
from edgetier.testing import RtspRelay, make_random_detector

RTSP_SERVER = shutil.which("rtsp-server-perl")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        RTSP_SERVER is None, reason="rtsp-server-perl is not installed (make system-deps)"
    ),
]

WIDTH, HEIGHT, FPS = 160, 128, 20


class Publisher:
    """Publishes a moving white square on grey, H.264 at FPS, from a thread, until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtsp-publisher", daemon=True)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            out = av.open(
                self.url, mode="w", format="rtsp", options={"rtsp_transport": "udp"}, timeout=5
            )
            try:
                stream: Any = out.add_stream("libx264", rate=FPS)
                stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
                stream.codec_context.gop_size = 10
                stream.options = {"tune": "zerolatency", "preset": "ultrafast"}
                start = time.monotonic()
                while not self._stop.is_set():
                    image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
                    x = (self.sent * 4) % (WIDTH - 32)
                    image[40:72, x : x + 32] = 255
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    frame.pts = self.sent
                    for packet in stream.encode(frame):
                        out.mux(packet)
                    self.sent += 1
                    self._stop.wait(max(0.0, start + self.sent / FPS - time.monotonic()))
            finally:
                out.close()  # TEARDOWN: the server unmounts the path
        except Exception as exc:  # reported by the test, not raised in the thread
            self.error = f"{type(exc).__name__}: {exc}"


def read_frames(url: str, count: int, timeout_s: float = 30.0) -> list[np.ndarray]:
    """`count` decoded frames from an RTSP URL; retries while the path is not published."""
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with av.open(url, options={"rtsp_transport": "udp"}, timeout=3) as container:
                frames = []
                for frame in container.decode(video=0):
                    frames.append(frame.to_ndarray(format="rgb24"))
                    if len(frames) >= count:
                        return frames
        except av.error.FFmpegError as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise AssertionError(f"no {count} frames from {url} in {timeout_s} s ({last_error})")


async def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def events(path: Path) -> Iterator[dict[str, Any]]:
    if path.exists():
        for line in path.read_text().splitlines():
            yield json.loads(line)


def _sink_config(tmp_path: Path, relay: RtspRelay) -> Any:
    make_random_detector(tmp_path / "det.onnx")
    return parse_pipeline(
        {
            "name": "rtsp-out",
            "sources": [
                {
                    "id": "cam",
                    "kind": "synthetic",
                    "realtime": True,
                    "scene": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "duration_s": 60},
                }
            ],
            "stages": [
                {
                    "id": "det",
                    "kind": "detector",
                    "model": str(tmp_path / "det.onnx"),
                    "confidence": 0.3,
                }
            ],
            "sinks": [
                {
                    "kind": "video",
                    "url": relay.publish_url("{stream}"),
                    "rtsp_transport": "udp",
                    "fps": FPS,
                    "reconnect": {"initial_backoff_s": 0.2, "max_backoff_s": 1.0},
                }
            ],
        }
    )


async def test_video_sink_publishes_decodable_frames_of_the_right_size(tmp_path: Path) -> None:
    with RtspRelay() as relay:
        pipeline = Pipeline(_sink_config(tmp_path, relay), state_dir=tmp_path)
        run = asyncio.create_task(pipeline.run())
        try:
            frames = await asyncio.to_thread(read_frames, relay.play_url("cam"), 10)
        finally:
            pipeline.stop()
            await run
        sink = pipeline.sinks[0]
        assert isinstance(sink, Video)
        assert {f.shape for f in frames} == {(HEIGHT, WIDTH, 3)}
        assert sink.writers["cam"].written >= 10


async def test_video_sink_survives_a_server_restart(tmp_path: Path) -> None:
    relay = RtspRelay()
    with relay:
        pipeline = Pipeline(_sink_config(tmp_path, relay), state_dir=tmp_path)
        run = asyncio.create_task(pipeline.run())
        try:
            await asyncio.to_thread(read_frames, relay.play_url("cam"), 5)
            relay.stop()  # the output dies under the sink; the pipeline goes on
            await wait_for(lambda: pipeline.sinks[0].dropped > 0, "frames dropped while down")
            frames_while_down = pipeline.stats["cam"].frames_out
            relay.start()
            frames = await asyncio.to_thread(read_frames, relay.play_url("cam"), 5)
            assert {f.shape for f in frames} == {(HEIGHT, WIDTH, 3)}
            await wait_for(
                lambda: pipeline.stats["cam"].frames_out > frames_while_down,
                "frames through the pipeline after the restart",
            )
        finally:
            pipeline.stop()
            await run
    assert not run.exception()


def _source_config(tmp_path: Path, relay: RtspRelay) -> Any:
    return parse_pipeline(
        {
            "name": "rtsp-in",
            "sources": [
                {
                    "id": "cam",
                    "kind": "rtsp",
                    "url": relay.play_url("live"),
                    "rtsp_transport": "udp",
                    "open_timeout_s": 3,
                    "reconnect": {"initial_backoff_s": 0.2, "max_backoff_s": 1.0},
                }
            ],
            "stages": [{"id": "a", "kind": "analytics", "summary_interval_s": 0.2}],
            "sinks": [{"kind": "jsonl", "path": str(tmp_path / "events.jsonl")}],
        }
    )


async def test_rtsp_source_reads_a_published_stream(tmp_path: Path) -> None:
    log_path = tmp_path / "events.jsonl"

    def has_counts() -> bool:
        return any(e["kind"] == "counts" and e["stream"] == "cam" for e in events(log_path))

    with RtspRelay() as relay, Publisher(relay.publish_url("live")) as publisher:
        pipeline = Pipeline(_source_config(tmp_path, relay), state_dir=tmp_path)
        run = asyncio.create_task(pipeline.run())
        try:
            await wait_for(lambda: pipeline.stats["cam"].frames_out >= 20, "20 frames")
            await wait_for(has_counts, "a counts event")
        finally:
            pipeline.stop()
            stats = await asyncio.wait_for(run, 30)
        assert publisher.error is None
    assert stats["cam"].frames_out >= 20 and stats["cam"].done
    statuses = [e["data"] for e in events(log_path) if e["kind"] == "source_status"]
    assert {"status": "started", "width": WIDTH, "height": HEIGHT} in statuses


async def test_rtsp_source_reconnects_after_the_stream_drops(tmp_path: Path) -> None:
    log_path = tmp_path / "events.jsonl"

    def source_errors() -> list[dict[str, Any]]:
        return [e["data"] for e in events(log_path) if e["kind"] == "source_error"]

    with RtspRelay() as relay:
        pipeline = Pipeline(_source_config(tmp_path, relay), state_dir=tmp_path)
        run = asyncio.create_task(pipeline.run())
        st = pipeline.stats["cam"]
        try:
            with Publisher(relay.publish_url("live")):
                await wait_for(lambda: st.frames_out >= 10, "frames before the drop")
                errors_before = len(source_errors())
            # the publisher is gone: the source loses the stream, then the server answers
            # 404 until it is back; the source retries with a growing back-off
            await wait_for(
                lambda: len(source_errors()) >= errors_before + 2, "failed reconnect attempts"
            )
            frames_at_drop = st.frames_out
            with Publisher(relay.publish_url("live")) as publisher:
                await wait_for(lambda: st.frames_out >= frames_at_drop + 10, "frames after it")
                assert publisher.error is None
        finally:
            pipeline.stop()
            await asyncio.wait_for(run, 30)
    after_drop = source_errors()[errors_before:]
    assert [e["attempt"] for e in after_drop[:2]] == [1, 2]
    assert after_drop[1]["retry_in_s"] > after_drop[0]["retry_in_s"] > 0
    statuses = [e["data"]["status"] for e in events(log_path) if e["kind"] == "source_status"]
    assert "started" in statuses and statuses[-1] == "reconnected"
    assert st.done
